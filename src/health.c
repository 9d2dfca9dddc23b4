/*-------------------------------------------------------------------------
 *
 * health.c
 *	  Key health: does the configured KEK open the rows it should?
 *
 * A server restarted with a different passphrase (or salt) still starts,
 * and every later read fails with a KEK mismatch.  To say so at once, the
 * first secretenv call in a backend after the key configuration is loaded or
 * changed tries one wrapped DEK of each configured version and raises a
 * WARNING naming any version whose KEK does not open it.
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

static uint64 checked_generation = 0;

static void
check_sample_rows(void)
{
	Datum		args[2];
	Oid			argtypes[2] = {INT4OID, INT4OID};
	int32		current = se_keyring_current_version();

	args[0] = Int32GetDatum(current);
	args[1] = Int32GetDatum(se_keyring_previous_version());

	if (SPI_execute_with_args("SELECT DISTINCT ON (kek_version) kek_version, wrapped_dek "
							  "FROM secretenv.secrets WHERE kek_version IN ($1, $2) "
							  "ORDER BY kek_version",
							  2, argtypes, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read secretenv.secrets");

	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int32		version = DatumGetInt32(SPI_getbinval(tuple, desc, 1, &isnull));
		bytea	   *wrapped = DatumGetByteaPP(SPI_getbinval(tuple, desc, 2, &isnull));

		if (!se_kek_opens(wrapped, version))
			ereport(WARNING,
					(errcode(ERRCODE_SECRETENV_KEK_MISMATCH),
					 errmsg("the configured KEK of version %d does not open existing secrets",
							version),
					 errdetail("A stored wrapped DEK of version %d does not open under the KEK now configured for it.",
							   version),
					 errhint("The server was probably started with another passphrase or salt than the one that wrote these rows. "
							 "Restore that configuration and reload; secretenv.verify_secrets() lists every affected row.")));
	}
}

void
se_health_check_once(void)
{
	Oid			relid;
	Oid			save_userid;
	int			save_sec_context;

	if (checked_generation == se_keyring_generation() || IsParallelWorker())
		return;
	/* Mark first: the check itself must not recurse, nor repeat on error. */
	checked_generation = se_keyring_generation();

	relid = se_secrets_relid();
	if (!OidIsValid(relid))
		return;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(se_secrets_owner(relid),
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	PG_TRY();
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		check_sample_rows();
		SPI_finish();
	}
	PG_FINALLY();
	{
		SetUserIdAndSecContext(save_userid, save_sec_context);
	}
	PG_END_TRY();
}
