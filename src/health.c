/*-------------------------------------------------------------------------
 *
 * health.c
 *	  Key health: does the configured KEK open the rows it should?
 *
 * A server restarted with a different passphrase (or salt) still starts,
 * and every later read fails with a KEK mismatch.  To say so at once, the
 * first secretenv call in a backend after the key configuration is loaded or
 * changed checks one stored wrapped DEK of each configured version and
 * raises a WARNING naming any version whose KEK does not open it.
 *
 * The check reads the table, so with preload its result is shared: it is
 * kept in shared memory under a fingerprint of the KEKs in force, and a
 * backend that finds a result for its own fingerprint only repeats the
 * warnings.  A new connection's first call thus costs no query.  It runs
 * again when the keys change or the server restarts, not when rows change:
 * secretenv writes only under the current KEK, and probing a version that
 * has no rows (the previous one, after a rotation) scans the whole table.
 * Rows restored into a running server are checked by verify_secrets().
 *
 * The sample is read as the owner of secretenv.secrets, whatever the
 * caller's privileges, through a fixed query; only a yes/no leaves it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/parallel.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"

#include "secretenv.h"
#include "shared.h"

typedef struct HealthResult
{
	int			count;
	int32		unhealthy[SE_HEALTH_MAX_VERSIONS];
} HealthResult;

static uint64 checked_generation = 0;

/* Try one wrapped DEK of each configured version; runs as the table owner. */
static void
check_sample_rows(HealthResult *result)
{
	int32		versions[SE_HEALTH_MAX_VERSIONS] = {
		se_keyring_current_version(), se_keyring_previous_version()
	};
	Oid			argtypes[1] = {INT4OID};

	result->count = 0;
	for (int i = 0; i < SE_HEALTH_MAX_VERSIONS; i++)
	{
		Datum		args[1] = {Int32GetDatum(versions[i])};
		bool		isnull;
		Datum		wrapped;

		if (versions[i] <= 0 || (i > 0 && versions[i] == versions[0]))
			continue;
		if (SPI_execute_with_args("SELECT wrapped_dek FROM secretenv.secrets "
								  "WHERE kek_version = $1 LIMIT 1",
								  1, argtypes, args, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read secretenv.secrets");
		if (SPI_processed == 0)
			continue;
		wrapped = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (!se_kek_opens(DatumGetByteaPP(wrapped), versions[i]))
			result->unhealthy[result->count++] = versions[i];
	}
}

static void
run_check(Oid relid, HealthResult *result)
{
	Oid			save_userid;
	int			save_sec_context;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(se_secrets_owner(relid),
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	PG_TRY();
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		check_sample_rows(result);
		SPI_finish();
	}
	PG_FINALLY();
	{
		SetUserIdAndSecContext(save_userid, save_sec_context);
	}
	PG_END_TRY();
}

void
se_health_check_once(void)
{
	SecretenvShared *sh = se_shared();
	uint8_t		fingerprint[SE_FINGERPRINT_LEN];
	HealthResult result;
	bool		shared_hit = false;
	Oid			relid;

	if (checked_generation == se_keyring_generation() || IsParallelWorker())
		return;
	/* Mark first: the check itself must not recurse, nor repeat on error. */
	checked_generation = se_keyring_generation();

	relid = se_secrets_relid();
	if (!OidIsValid(relid))
		return;
	/* A KEK that cannot be obtained reports itself on first use. */
	if (!se_keyring_fingerprint(fingerprint))
		return;

	if (sh != NULL)
	{
		SpinLockAcquire(&sh->health_mutex);
		if (sh->health_valid &&
			memcmp(sh->health_fingerprint, fingerprint, SE_FINGERPRINT_LEN) == 0)
		{
			result.count = sh->health_unhealthy_count;
			memcpy(result.unhealthy, sh->health_unhealthy, sizeof(result.unhealthy));
			shared_hit = true;
		}
		SpinLockRelease(&sh->health_mutex);
	}

	if (!shared_hit)
	{
		run_check(relid, &result);
		if (sh != NULL)
		{
			SpinLockAcquire(&sh->health_mutex);
			memcpy(sh->health_fingerprint, fingerprint, SE_FINGERPRINT_LEN);
			sh->health_unhealthy_count = result.count;
			memcpy(sh->health_unhealthy, result.unhealthy, sizeof(result.unhealthy));
			sh->health_valid = true;
			SpinLockRelease(&sh->health_mutex);
		}
	}

	for (int i = 0; i < result.count; i++)
		ereport(WARNING,
				(errcode(ERRCODE_SECRETENV_KEK_MISMATCH),
				 errmsg("the configured KEK of version %d does not open existing secrets",
						result.unhealthy[i]),
				 errdetail("A stored wrapped DEK of version %d does not open under the KEK now configured for it.",
						   result.unhealthy[i]),
				 errhint("The server was probably started with another passphrase or salt than the one that wrote these rows. "
						 "Restore that configuration and reload; secretenv.verify_secrets() lists every affected row.")));
}
