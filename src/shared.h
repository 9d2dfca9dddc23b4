/*-------------------------------------------------------------------------
 *
 * shared.h
 *	  secretenv's shared-memory state (present only when preloaded).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRETENV_SHARED_H
#define SECRETENV_SHARED_H

#include "port/atomics.h"
#include "storage/spin.h"

#include "se_crypto.h"

#define SE_HEALTH_MAX_VERSIONS 2	/* the current and the previous KEK */

typedef struct SecretenvShared
{
	/* writers.c: transactions that changed secretenv.secrets */
	pg_atomic_uint64 writers_started;
	pg_atomic_uint64 writers_finished;

	/* health.c: the last key health check, for the key configuration it ran under */
	slock_t		health_mutex;
	bool		health_valid;
	uint8_t		health_fingerprint[SE_FINGERPRINT_LEN];
	int			health_unhealthy_count;
	int32		health_unhealthy[SE_HEALTH_MAX_VERSIONS];
} SecretenvShared;

extern void se_shared_init(void);
extern SecretenvShared *se_shared(void);

#endif							/* SECRETENV_SHARED_H */
