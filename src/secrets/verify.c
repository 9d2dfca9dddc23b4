/*-------------------------------------------------------------------------
 *
 * verify.c
 *	  secretenv.verify_secrets(): open every stored secret, report failures.
 *
 * For after a restore, a configuration change or a suspected tampering.
 * Each row's wrapped DEK and value are opened exactly as secret_get would,
 * AAD included; the plaintext goes to a scratch buffer that is wiped at
 * once.  Rows are fetched through a cursor, so the table may be large.
 * Declared by 1.2 with a fifth column, version, it also opens every kept
 * version (secretenv.secret_versions, each with its own envelope and the
 * AAD of its secret); as declared by 1.0 and 1.1, the current values only.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/tuplestore.h"
#include "utils/uuid.h"

#include "crypto/se_crypto.h"
#include "keys/crypto_errors.h"
#include "keys/kek_retirement.h"
#include "keys/key_health.h"
#include "keys/keyring.h"
#include "se_messages.h"
#include "secrets/envelope_sql.h"

#define VERIFY_BATCH 1000

/* The failed check for one row, or NULL if it opens. */
static const char *
check_row(const char *id, text *name, int32 version, bytea *value, bytea *wrapped)
{
	se_status	status;
	bool		utf8_ok;

	/* Listed even when its KEK would open it: a read would fail (22S05). */
	if (se_kek_version_retired(version))
		return "retired";
	if (!se_keyring_has_version(version))
	{
		/* The current or previous version without a usable source: ERROR. */
		se_keyring_check_source(version);
		return "no KEK configured for this version";
	}

	status = se_envelope_check((const uint8_t *) VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value),
							   (const uint8_t *) VARDATA_ANY(wrapped), VARSIZE_ANY_EXHDR(wrapped),
							   version, id, UUID_TEXT_LEN,
							   VARDATA_ANY(name), VARSIZE_ANY_EXHDR(name), &utf8_ok);

	switch (status)
	{
		case SE_OK:
			return utf8_ok ? NULL : "plaintext is not valid UTF-8";
		case SE_ERR_LENGTH:
			return "malformed envelope";
		case SE_ERR_UNWRAP:
			return "wrong KEK or corrupted wrapped DEK";
		case SE_ERR_OPEN:
			return "AAD mismatch or tampered value";
		default:
			se_report_crypto_failure(status, version, "verify secret");
	}
	return NULL;				/* not reached */
}

/* Return one row per stored secret that does not open, with the failed check. */
PG_FUNCTION_INFO_V1(secret_verify_all);
Datum
secret_verify_all(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Portal		cursor;
	SPIPlanPtr	plan;
	bool		with_versions;

	InitMaterializedSRF(fcinfo, 0);
	se_key_health_warn_once();
	with_versions = rsinfo->setDesc->natts >= 5;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	plan = SPI_prepare(with_versions ?
					   "SELECT secret_id, secret_name, kek_version, encrypted_value, wrapped_dek, "
					   "current_version AS version "
					   "FROM secretenv.secrets "
					   "UNION ALL "
					   "SELECT secret_id, secret_name, kek_version, encrypted_value, wrapped_dek, version "
					   "FROM secretenv.secret_versions "
					   "ORDER BY 2, 6" :
					   "SELECT secret_id, secret_name, kek_version, encrypted_value, wrapped_dek "
					   "FROM secretenv.secrets ORDER BY secret_name", 0, NULL);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	cursor = SPI_cursor_open(NULL, plan, NULL, NULL, true);

	for (;;)
	{
		SPI_cursor_fetch(cursor, true, VERIFY_BATCH);
		if (SPI_processed == 0)
			break;
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tuple = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			Datum		id_datum = SPI_getbinval(tuple, desc, 1, &isnull);
			Datum		name_datum = SPI_getbinval(tuple, desc, 2, &isnull);
			int32		version = DatumGetInt32(SPI_getbinval(tuple, desc, 3, &isnull));
			char		id[UUID_TEXT_LEN];
			const char *failed;

			se_uuid_to_text(DatumGetUUIDP(id_datum), id);
			failed = check_row(id, DatumGetTextPP(name_datum), version,
							   DatumGetByteaPP(SPI_getbinval(tuple, desc, 4, &isnull)),
							   DatumGetByteaPP(SPI_getbinval(tuple, desc, 5, &isnull)));
			if (failed != NULL)
			{
				Datum		values[5];
				bool		nulls[5] = {false, false, false, false, false};

				values[0] = id_datum;
				values[1] = name_datum;
				values[2] = Int32GetDatum(version);
				values[3] = CStringGetTextDatum(failed);
				if (with_versions)
					values[4] = SPI_getbinval(tuple, desc, 6, &nulls[4]);
				tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
			}
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(cursor);
	SPI_finish();
	return (Datum) 0;
}
