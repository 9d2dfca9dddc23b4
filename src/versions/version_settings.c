/*-------------------------------------------------------------------------
 *
 * version_settings.c
 *	  The settings of secret versions and deletion with recovery, and the
 *	  SQL functions through which the install script's functions read them.
 *
 * secretenv.max_versions: how many non-current versions a secret keeps
 * (pending ones aside); 0 keeps none, as 1.1 did.
 * secretenv.delete_recovery_window: how long secret_delete keeps a secret
 * restorable; 0 destroys at once, as 1.1 did.
 *
 * Both are SIGHUP settings: an administrator decides them for the whole
 * server, and a writer cannot shorten a recovery window for everyone (it
 * can pass recovery_window => '0' for a secret it may delete anyway).
 * The SQL reads them through functions of this library, so they are
 * defined whenever the store is used, preloaded or not.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "datatype/timestamp.h"
#include "fmgr.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "se_messages.h"
#include "versions/versions.h"

static int	max_versions = 10;
static int	delete_recovery_window_s = 604800;	/* 7 days */

void
se_versions_init(void)
{
	DefineCustomIntVariable("secretenv.max_versions",
							"How many non-current versions of a secret are kept.",
							"Older versions are destroyed first; a pending version does not count. 0 keeps none.",
							&max_versions,
							10, 0, 10000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("secretenv.delete_recovery_window",
							"How long a deleted secret can be restored before it is destroyed.",
							"secret_delete hides a secret for this long; CALL secretenv.purge_deleted() destroys it afterwards. 0 destroys at once.",
							&delete_recovery_window_s,
							604800, 0, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);
}

/* Return secretenv.max_versions. */
PG_FUNCTION_INFO_V1(secret_max_versions);
Datum
secret_max_versions(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(max_versions);
}

/* Return secretenv.delete_recovery_window as an interval (days, then time). */
PG_FUNCTION_INFO_V1(secret_delete_recovery_window);
Datum
secret_delete_recovery_window(PG_FUNCTION_ARGS)
{
	Interval   *result = palloc0(sizeof(Interval));

	result->day = delete_recovery_window_s / SECS_PER_DAY;
	result->time = (int64) (delete_recovery_window_s % SECS_PER_DAY) * USECS_PER_SEC;
	PG_RETURN_INTERVAL_P(result);
}
