/*-------------------------------------------------------------------------
 *
 * version_get.c
 *	  secret_get(name, version) and secret_get(name, label): read one
 *	  version of a stored secret.
 *
 * These reads are not cached: the credential cache serves the current
 * value, which is what applications read on every request; a version or a
 * label is read while rotating (the pending value is tested, the previous
 * one is compared).  Each read runs one fixed SPI query with the caller's
 * rights and snapshot, so the caller's table privileges and row-level
 * security apply exactly as to its own SELECT: a secret it cannot see,
 * and every version of it, does not exist for it (the policy of
 * secretenv.secret_versions reads secretenv.secrets with the caller's
 * policies).  A deleted secret has no versions either.  Every read is
 * audited with the version it returned (or failed to), and the
 * statement is redacted like one calling secret_get.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"
#include "utils/uuid.h"

#include "secrets/access_rules.h"
#include "audit/audit.h"
#include "secrets/envelope_sql.h"
#include "keys/key_health.h"
#include "redaction/redact.h"
#include "se_messages.h"
#include "versions/versions.h"

/*
 * $1 name, $2 version (or NULL), $3 label (or NULL).  The current value is
 * in secretenv.secrets, the others in secretenv.secret_versions.
 */
#define VERSION_SQL \
	"SELECT s.secret_id, s.encrypted_value, s.wrapped_dek, s.kek_version, s.current_version " \
	"FROM secretenv.secrets s " \
	"WHERE s.secret_name OPERATOR(pg_catalog.=) $1 AND s.deleted_at IS NULL " \
	"  AND (s.current_version OPERATOR(pg_catalog.=) $2 OR $3 OPERATOR(pg_catalog.=) 'current') " \
	"UNION ALL " \
	"SELECT s.secret_id, v.encrypted_value, v.wrapped_dek, v.kek_version, v.version " \
	"FROM secretenv.secrets s " \
	"     JOIN secretenv.secret_versions v ON v.secret_id OPERATOR(pg_catalog.=) s.secret_id " \
	"WHERE s.secret_name OPERATOR(pg_catalog.=) $1 AND s.deleted_at IS NULL " \
	"  AND (v.version OPERATOR(pg_catalog.=) $2 OR v.state OPERATOR(pg_catalog.=) $3) " \
	"LIMIT 1"

static SPIPlanPtr version_plan = NULL;

/*
 * Read and decrypt one version; version <= 0 means "the one with this
 * label".  Returns the plaintext in the caller's memory context.
 */
static text *
read_version(text *name, int32 version, const char *label, SeAuditRecord *audit)
{
	Datum		args[3];
	char		nulls[3] = {' ', ' ', ' '};
	MemoryContext caller_cxt = CurrentMemoryContext;
	bool		pushed_snapshot = false;
	text	   *result = NULL;

	args[0] = PointerGetDatum(name);
	if (version > 0)
	{
		args[1] = Int32GetDatum(version);
		args[2] = (Datum) 0;
		nulls[2] = 'n';
	}
	else
	{
		args[1] = (Datum) 0;
		nulls[1] = 'n';
		args[2] = CStringGetTextDatum(label);
	}

	if (!ActiveSnapshotSet())
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		pushed_snapshot = true;
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (version_plan == NULL)
	{
		Oid			argtypes[3] = {TEXTOID, INT4OID, TEXTOID};
		SPIPlanPtr	plan = SPI_prepare(VERSION_SQL, 3, argtypes);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		version_plan = plan;
	}
	if (SPI_execute_plan(version_plan, args, nulls, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read secretenv.secret_versions");
	if (SPI_processed > 0)
	{
		HeapTuple	tuple = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		pg_uuid_t  *id = DatumGetUUIDP(SPI_getbinval(tuple, desc, 1, &isnull));
		bytea	   *value = DatumGetByteaPP(SPI_getbinval(tuple, desc, 2, &isnull));
		bytea	   *wrapped = DatumGetByteaPP(SPI_getbinval(tuple, desc, 3, &isnull));
		int32		kek_version = DatumGetInt32(SPI_getbinval(tuple, desc, 4, &isnull));
		char		idtext[UUID_TEXT_LEN];
		MemoryContext spi_cxt;

		audit->has_id = true;
		memcpy(audit->id, id->data, SE_AUDIT_UUID_LEN);
		audit->version = DatumGetInt32(SPI_getbinval(tuple, desc, 5, &isnull));
		se_uuid_to_text(id, idtext);
		spi_cxt = MemoryContextSwitchTo(caller_cxt);
		result = se_decrypt_to_text((const uint8_t *) VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value),
									(const uint8_t *) VARDATA_ANY(wrapped), VARSIZE_ANY_EXHDR(wrapped),
									kek_version, idtext, UUID_TEXT_LEN,
									VARDATA_ANY(name), VARSIZE_ANY_EXHDR(name));
		MemoryContextSwitchTo(spi_cxt);
	}
	SPI_finish();
	if (pushed_snapshot)
		PopActiveSnapshot();
	return result;
}

/* Audited read of one version: the record is prepared first, emitted last. */
static text *
audited_read(text *name, int32 version, const char *label)
{
	SeAuditRecord audit;
	bool		audited;
	text	   *volatile result = NULL;

	audited = se_audit_prepare(&audit, SE_AUDIT_READ, SE_VIA_SECRET_GET, NULL,
							   VARDATA_ANY(name), VARSIZE_ANY_EXHDR(name));
	if (version > 0)
		audit.version = version;
	PG_TRY();
	{
		se_key_health_warn_once();
		/* What the statement does with the value must not print it. */
		se_redact_note_yield();
		/* Fail closed when the access rules are not enforced (55S01). */
		se_access_check_enforced(GetUserId());
		result = read_version(name, version, label, &audit);
		if (result == NULL)
		{
			if (version > 0)
				ereport(ERROR,
						(errcode(ERRCODE_NO_DATA_FOUND),
						 errmsg("version %d of secret \"%s\" does not exist",
								version, text_to_cstring(name)),
						 errhint("secretenv.secret_versions lists the versions kept.")));
			ereport(ERROR,
					(errcode(ERRCODE_NO_DATA_FOUND),
					 errmsg("secret \"%s\" has no %s version", text_to_cstring(name), label)));
		}
	}
	PG_CATCH();
	{
		if (audited)
			se_audit_emit(&audit, se_audit_outcome_of_error(geterrcode()), false);
		PG_RE_THROW();
	}
	PG_END_TRY();
	/* Strict mode: returns once the record is durable, or raises 55S02. */
	if (audited)
		se_audit_emit(&audit, SE_AUDIT_OK, true);
	return result;
}

/* Return the decrypted value of one version of a stored secret. */
PG_FUNCTION_INFO_V1(secret_get_version);
Datum
secret_get_version(PG_FUNCTION_ARGS)
{
	text	   *name = PG_GETARG_TEXT_PP(0);
	int32		version = PG_GETARG_INT32(1);

	if (version < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("secret version must be at least 1"),
				 errdetail("The given version is %d.", version)));
	PG_RETURN_TEXT_P(audited_read(name, version, NULL));
}

/* Return the decrypted value of the version of a stored secret with a label. */
PG_FUNCTION_INFO_V1(secret_get_label);
Datum
secret_get_label(PG_FUNCTION_ARGS)
{
	text	   *name = PG_GETARG_TEXT_PP(0);
	char	   *label = text_to_cstring(PG_GETARG_TEXT_PP(1));

	if (strcmp(label, "current") != 0 && strcmp(label, "pending") != 0 &&
		strcmp(label, "previous") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unrecognized secret version label \"%s\"", label),
				 errhint("The labels are current, pending and previous.")));
	PG_RETURN_TEXT_P(audited_read(name, 0, label));
}
