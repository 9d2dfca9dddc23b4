/*-------------------------------------------------------------------------
 *
 * store.c
 *	  secret_get(): read a secret from secretenv.secrets through the cache.
 *
 * Snapshot protocol.  secret_get returns what the caller's snapshot sees: a
 * miss reads the row with the caller's snapshot.  That value is cached only
 * if it is also the row version a fresh snapshot sees (same xmin and ctid),
 * i.e. the latest version; a value read under an older snapshot (REPEATABLE
 * READ, SERIALIZABLE, or a long READ COMMITTED statement) is returned but
 * never cached, so it cannot outlive its transaction.  A later commit that
 * changes the row sends a relcache invalidation, which every backend
 * processes before its next secret_get (AcceptInvalidationMessages below),
 * so a hit is never older than the caller's snapshot.  The short gap between
 * a commit becoming visible and its invalidation being sent is covered by
 * the writer counters of writers.c: while any writer is in flight the cache
 * is neither used nor filled.  Under SERIALIZABLE every read goes to the
 * table, which takes the predicate lock that serializability needs.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_class.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/itemptr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/uuid.h"

#include "key_health.h"
#include "secretenv.h"

static Oid	secrets_relid = InvalidOid;
static SPIPlanPtr read_plan = NULL;
static SPIPlanPtr version_plan = NULL;

Oid
se_secrets_relid_cached(void)
{
	return secrets_relid;
}

void
se_forget_secrets_relid(void)
{
	secrets_relid = InvalidOid;
}

/* OID of secretenv.secrets, or InvalidOid if it does not exist (yet). */
Oid
se_secrets_relid(void)
{
	if (!OidIsValid(secrets_relid))
	{
		Oid			nsp = get_namespace_oid("secretenv", true);

		if (OidIsValid(nsp))
			secrets_relid = get_relname_relid("secrets", nsp);
	}
	return secrets_relid;
}

static SPIPlanPtr
prepare_kept(const char *sql)
{
	Oid			argtypes[1] = {TEXTOID};
	SPIPlanPtr	plan = SPI_prepare(sql, 1, argtypes);

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	return plan;
}

/*
 * Read and decrypt a secret with the caller's snapshot; the result is
 * allocated in result_cxt.  *cacheable says whether it is the latest
 * committed (or this transaction's own) version of the row.
 */
static text *
read_secret(text *name, MemoryContext result_cxt, bool *cacheable)
{
	Datum		args[1] = {PointerGetDatum(name)};
	HeapTuple	tuple;
	TupleDesc	desc;
	bool		isnull;
	char		id[UUID_TEXT_LEN];
	bytea	   *value;
	bytea	   *wrapped;
	int32		version;
	TransactionId xmin;
	ItemPointerData ctid;
	text	   *result;
	MemoryContext spi_cxt;

	if (read_plan == NULL)
		read_plan = prepare_kept("SELECT secret_id, encrypted_value, wrapped_dek, kek_version, "
								 "xmin, ctid FROM secretenv.secrets WHERE secret_name = $1");
	if (version_plan == NULL)
		version_plan = prepare_kept("SELECT xmin, ctid FROM secretenv.secrets "
									"WHERE secret_name = $1");

	if (SPI_execute_plan(read_plan, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read secretenv.secrets");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("secret \"%s\" does not exist", text_to_cstring(name))));

	tuple = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	se_uuid_to_text(DatumGetUUIDP(SPI_getbinval(tuple, desc, 1, &isnull)), id);
	value = DatumGetByteaPP(SPI_getbinval(tuple, desc, 2, &isnull));
	wrapped = DatumGetByteaPP(SPI_getbinval(tuple, desc, 3, &isnull));
	version = DatumGetInt32(SPI_getbinval(tuple, desc, 4, &isnull));
	xmin = DatumGetTransactionId(SPI_getbinval(tuple, desc, 5, &isnull));
	ItemPointerCopy((ItemPointer) DatumGetPointer(SPI_getbinval(tuple, desc, 6, &isnull)), &ctid);

	spi_cxt = MemoryContextSwitchTo(result_cxt);
	result = se_decrypt_to_text((const uint8_t *) VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value),
								(const uint8_t *) VARDATA_ANY(wrapped), VARSIZE_ANY_EXHDR(wrapped),
								version, id, UUID_TEXT_LEN,
								VARDATA_ANY(name), VARSIZE_ANY_EXHDR(name));
	MemoryContextSwitchTo(spi_cxt);

	*cacheable = false;
	if (se_cache_enabled() &&
		SPI_execute_snapshot(version_plan, args, NULL, GetLatestSnapshot(),
							 InvalidSnapshot, true, false, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		tuple = SPI_tuptable->vals[0];
		desc = SPI_tuptable->tupdesc;
		*cacheable =
			DatumGetTransactionId(SPI_getbinval(tuple, desc, 1, &isnull)) == xmin &&
			ItemPointerEquals((ItemPointer) DatumGetPointer(SPI_getbinval(tuple, desc, 2, &isnull)),
							  &ctid);
	}
	return result;
}

/* Return the decrypted value of a stored secret, from the cache when fresh. */
PG_FUNCTION_INFO_V1(secret_get);
Datum
secret_get(PG_FUNCTION_ARGS)
{
	text	   *name = PG_GETARG_TEXT_PP(0);
	MemoryContext caller_cxt = CurrentMemoryContext;
	AclResult	aclresult;
	Oid			relid;
	text	   *result;
	bool		cacheable;

	/* See every change committed before this call; it may clear the cache. */
	AcceptInvalidationMessages();
	se_key_health_warn_once();

	relid = se_secrets_relid();
	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"secretenv.secrets\" does not exist")));

	/* A hit must not bypass the table's privileges (e.g. after SET ROLE). */
	aclresult = pg_class_aclcheck(relid, GetUserId(), ACL_SELECT);
	if (aclresult != ACLCHECK_OK)
		aclcheck_error(aclresult, OBJECT_TABLE, "secrets");

	/*
	 * The cache is bypassed while a writer may not have sent its
	 * invalidations yet (writers.c), and under SERIALIZABLE, where the read
	 * must take its predicate lock on the table.
	 */
	if (!se_writers_in_flight() && !IsolationIsSerializable())
	{
		result = se_cache_lookup(VARDATA_ANY(name), VARSIZE_ANY_EXHDR(name));
		if (result != NULL)
			PG_RETURN_TEXT_P(result);
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	result = read_secret(name, caller_cxt, &cacheable);
	SPI_finish();

	if (cacheable && !se_writers_in_flight())
		se_cache_insert(VARDATA_ANY(name), VARSIZE_ANY_EXHDR(name),
						VARDATA(result), VARSIZE(result) - VARHDRSZ);
	PG_RETURN_TEXT_P(result);
}
