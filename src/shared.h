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

typedef struct SecretenvShared
{
	/* writers.c: transactions that changed secretenv.secrets */
	pg_atomic_uint64 writers_started;
	pg_atomic_uint64 writers_finished;
} SecretenvShared;

extern void se_shared_init(void);
extern SecretenvShared *se_shared(void);

#endif							/* SECRETENV_SHARED_H */
