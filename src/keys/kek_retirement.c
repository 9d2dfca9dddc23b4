/*-------------------------------------------------------------------------
 *
 * kek_retirement.c
 *	  secretenv.min_kek_version: KEK versions that may no longer be read.
 *
 * After a rotation the previous KEK stays configured for a while, and rows
 * that the rotation missed (an application table nobody rotated, a second
 * database) keep decrypting silently, until the day the old passphrase is
 * removed and they all fail at once.  Retiring the old version first makes
 * such stragglers fail loudly while the fix is still one rotation away:
 * every read of a row whose KEK version is below secretenv.min_kek_version
 * fails with 22S05.  Rotation and re-encryption still open such rows (that
 * is how they are fixed), verify_secrets() lists them and status() counts
 * them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "utils/guc.h"

#include "cache/cache.h"
#include "keys/kek_retirement.h"
#include "se_messages.h"

static int	min_kek_version_guc = 0;

/*
 * A value cached by secret_get before the version was retired must not be
 * served afterwards: retiring more versions clears this backend's cache.
 */
static void
assign_min_kek_version(int newval, void *extra)
{
	if (newval > min_kek_version_guc)
		se_cache_clear_all();
}

void
se_retirement_init(void)
{
	DefineCustomIntVariable("secretenv.min_kek_version",
							"Oldest KEK version whose rows may still be read.",
							"Reads of rows wrapped under an older KEK version fail; rotation still re-wraps them. 0 retires none.",
							&min_kek_version_guc,
							0, 0, INT_MAX,
							PGC_SIGHUP,
							0,
							NULL, assign_min_kek_version, NULL);
}

int32
se_min_kek_version(void)
{
	return min_kek_version_guc;
}

bool
se_kek_version_retired(int32 version)
{
	return version < min_kek_version_guc;
}

/* Refuse a read of a row of a retired KEK version. */
void
se_check_not_retired(int32 version)
{
	if (se_kek_version_retired(version))
		ereport(ERROR,
				(errcode(ERRCODE_SECRETENV_KEK_RETIRED),
				 errmsg("KEK version %d is retired", version),
				 errdetail("secretenv.min_kek_version is %d; rows wrapped under an older KEK are no longer read.",
						   min_kek_version_guc),
				 errhint("Re-wrap the row under the current KEK with secretenv.secret_rotate() or secretenv.rotate_table(), "
						 "or lower secretenv.min_kek_version and reload.")));
}

/* Refuse to wrap anything under a current KEK that is itself retired. */
void
se_check_current_not_retired(int32 current)
{
	if (se_kek_version_retired(current))
		ereport(ERROR,
				(errcode(ERRCODE_SECRETENV_KEK_RETIRED),
				 errmsg("the current KEK version %d is retired", current),
				 errdetail("secretenv.min_kek_version is %d; a row wrapped under version %d could not be read.",
						   min_kek_version_guc, current),
				 errhint("Set secretenv.kek_version to a version of at least %d, or lower secretenv.min_kek_version, and reload.",
						 min_kek_version_guc)));
}
