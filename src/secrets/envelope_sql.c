/*-------------------------------------------------------------------------
 *
 * envelope_sql.c
 *	  SQL-callable envelope primitives: secret_encrypt, secret_decrypt,
 *	  secret_rewrap, and the helpers the managed store shares with them.
 *
 * The database must be UTF8 (checked by CREATE EXTENSION), so text is used
 * byte for byte as the UTF-8 of the MLflow format: the AAD is the bytes of
 * secret_id "|" secret_name and the plaintext the bytes of the value, with
 * no conversion that could fail halfway or echo secret bytes in an error.
 *
 * The only secret these functions hold outside the core is the plaintext:
 * an encrypt's serialized jsonb copy is wiped before return; a decrypt's
 * plaintext is the function's result, written once straight into the result
 * datum.  DEKs never leave the core.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/uuid.h"

#include "audit/audit.h"
#include "crypto/se_crypto.h"
#include "keys/aead_engine.h"
#include "keys/crypto_errors.h"
#include "keys/kek_retirement.h"
#include "keys/key_health.h"
#include "keys/keyring.h"
#include "redaction/redact.h"
#include "se_messages.h"
#include "secrets/access_rules.h"
#include "secrets/encryption_time.h"
#include "secrets/envelope_memo.h"
#include "secrets/envelope_sql.h"
#include "secrets/plaintext_wipe.h"

/* Canonical lower-case text form of a uuid, as uuid_out prints it. */
void
se_uuid_to_text(const pg_uuid_t *uuid, char *out)
{
	static const char hex[] = "0123456789abcdef";
	int			pos = 0;

	for (int i = 0; i < UUID_LEN; i++)
	{
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[pos++] = '-';
		out[pos++] = hex[uuid->data[i] >> 4];
		out[pos++] = hex[uuid->data[i] & 0x0F];
	}
}

uint8_t *
se_build_aad_from_text(const char *id, int idlen, const char *name, int namelen,
					   size_t *aadlen)
{
	uint8_t    *aad = palloc(se_aad_len(idlen, namelen));
	se_status	status = se_build_aad(id, idlen, name, namelen, aad);

	if (status != SE_OK)
		se_report_crypto_failure(status, 0, "build the AAD");
	*aadlen = se_aad_len(idlen, namelen);
	return aad;
}

text *
se_decrypt_to_text(const uint8_t *value, size_t valuelen,
				   const uint8_t *wrapped, size_t wrappedlen,
				   int32 kek_version,
				   const char *id, int idlen, const char *name, int namelen)
{
	const uint8_t *kek;
	uint8_t    *aad;
	size_t		aadlen;
	size_t		ptlen = valuelen > SE_SEAL_OVERHEAD ? valuelen - SE_SEAL_OVERHEAD : 0;
	text	   *result;
	se_status	status;

	se_key_health_warn_once();
	/* No plaintext while access rules exist but are not enforced (55S01). */
	se_access_check_enforced(GetUserId());
	se_check_version_argument(kek_version);
	se_check_not_retired(kek_version);
	kek = se_keyring_kek(kek_version);
	aad = se_build_aad_from_text(id, idlen, name, namelen, &aadlen);

	result = (text *) palloc(VARHDRSZ + ptlen);
	status = se_envelope_open(se_engine(), kek, wrapped, wrappedlen, aad, aadlen,
							  value, valuelen, (uint8_t *) VARDATA(result));
	pfree(aad);
	if (status != SE_OK)
	{
		pfree(result);			/* the core wiped it */
		se_report_crypto_failure(status, kek_version, "decrypt secret");
	}
	SET_VARSIZE(result, VARHDRSZ + ptlen);

	/* Checked quietly: the server's own message would quote the bad bytes. */
	if (!pg_verify_mbstr(PG_UTF8, VARDATA(result), (int) ptlen, true))
	{
		se_wipe(VARDATA(result), ptlen);
		pfree(result);
		ereport(ERROR,
				(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
				 errmsg("could not decrypt secret: plaintext is not valid UTF-8"),
				 errdetail("The value opened and authenticated, but its bytes are not UTF-8 text.")));
	}
	return result;
}

/*
 * Open an envelope to check it, never to use its plaintext: the plaintext
 * goes to a scratch buffer that is wiped at once.  Returns the core's
 * status; *utf8_ok says whether an envelope that opened holds UTF-8 text.
 * For the envelope trigger and verify_secrets(), which report, not decrypt.
 */
se_status
se_envelope_check(const uint8_t *value, size_t valuelen,
				  const uint8_t *wrapped, size_t wrappedlen, int32 kek_version,
				  const char *id, int idlen, const char *name, int namelen,
				  bool *utf8_ok)
{
	size_t		ptlen = valuelen > SE_SEAL_OVERHEAD ? valuelen - SE_SEAL_OVERHEAD : 0;
	uint8_t    *aad;
	size_t		aadlen;
	uint8_t    *pt;
	se_status	status;

	aad = se_build_aad_from_text(id, idlen, name, namelen, &aadlen);
	pt = palloc(Max(ptlen, 1));
	status = se_envelope_open(se_engine(), se_keyring_kek(kek_version),
							  wrapped, wrappedlen, aad, aadlen, value, valuelen, pt);
	*utf8_ok = status == SE_OK && pg_verify_mbstr(PG_UTF8, (const char *) pt, (int) ptlen, true);
	se_wipe(pt, ptlen);
	pfree(pt);
	pfree(aad);
	return status;
}

/*
 * Seal a plaintext under a KEK into a new envelope (fresh DEK) and return
 * it as a row of tupdesc: (encrypted_value, wrapped_dek, kek_version).
 * what names the operation in an error ("encrypt secret").
 */
Datum
se_seal_envelope_row(TupleDesc tupdesc, const uint8_t *kek, int32 kek_version,
					 const uint8_t *aad, size_t aadlen,
					 const uint8_t *pt, size_t ptlen, const char *what)
{
	bytea	   *value = (bytea *) palloc(VARHDRSZ + ptlen + SE_SEAL_OVERHEAD);
	bytea	   *wrapped = (bytea *) palloc(VARHDRSZ + SE_WRAPPED_DEK_LEN);
	se_status	status;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	status = se_envelope_seal(se_engine(), kek, aad, aadlen, pt, ptlen,
							  (uint8_t *) VARDATA(value),
							  (uint8_t *) VARDATA(wrapped));
	if (status != SE_OK)
		se_report_crypto_failure(status, kek_version, what);
	SET_VARSIZE(value, VARHDRSZ + ptlen + SE_SEAL_OVERHEAD);
	SET_VARSIZE(wrapped, VARHDRSZ + SE_WRAPPED_DEK_LEN);
	/* A row that stores this envelope was encrypted now (value_encrypted_at). */
	se_note_fresh_envelope((const uint8_t *) VARDATA(wrapped));

	values[0] = PointerGetDatum(value);
	values[1] = PointerGetDatum(wrapped);
	values[2] = Int32GetDatum(kek_version);
	return HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls));
}

/*
 * Result tuple descriptor of secret_encrypt, blessed once per call site.
 * Each FmgrInfo gets its own copy, so fn_extra also names the call for the
 * memo of envelope_memo.c.
 */
static TupleDesc
envelope_tupdesc(FunctionCallInfo fcinfo)
{
	TupleDesc	tupdesc = (TupleDesc) fcinfo->flinfo->fn_extra;

	if (tupdesc == NULL)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);

		if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "secret_encrypt must return a composite type");
		tupdesc = BlessTupleDesc(CreateTupleDescCopy(tupdesc));
		MemoryContextSwitchTo(oldcxt);
		fcinfo->flinfo->fn_extra = tupdesc;
	}
	return tupdesc;
}

/*
 * Seal one value into a new envelope, unless a sibling copy of this very
 * call already did for this row: see envelope_memo.c for why the copies of
 * "(secret_encrypt(...)).*" must return one envelope.
 */
static Datum
encrypt_envelope(FunctionCallInfo fcinfo, const char *pt, size_t ptlen,
				 const char *id, int idlen, const char *name, int namelen)
{
	int32		version = se_keyring_current_version();
	const uint8_t *kek;
	TupleDesc	tupdesc = envelope_tupdesc(fcinfo);
	SeEncryptArgs args = {pt, ptlen, id, idlen, name, namelen};
	uint8_t    *aad;
	size_t		aadlen;
	Datum		result;

	if (ptlen > SE_MAX_SECRET_VALUE_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("secret value is too large"),
				 errdetail("A secret value may be at most %zu bytes; this one has %zu.",
						   SE_MAX_SECRET_VALUE_LEN, ptlen)));

	if (se_memo_fetch(fcinfo, &args, &result))
		return result;

	se_key_health_check_writable();
	se_check_current_not_retired(se_keyring_current_version());
	kek = se_keyring_kek(version);
	aad = se_build_aad_from_text(id, idlen, name, namelen, &aadlen);
	result = se_seal_envelope_row(tupdesc, kek, version, aad, aadlen,
								  (const uint8_t *) pt, ptlen, "encrypt secret");
	pfree(aad);
	se_memo_store(fcinfo, &args, result);
	return result;
}

/*
 * Encrypt a jsonb secret as its JSON text.  The serialized copy is
 * plaintext; it is wiped now and, should an ERROR come first, at reset.
 */
static Datum
encrypt_jsonb(FunctionCallInfo fcinfo, const char *id, int idlen,
			  const char *name, int namelen)
{
	Jsonb	   *jb = PG_GETARG_JSONB_P(0);
	StringInfoData pt;
	Datum		result;

	if ((Pointer) jb != DatumGetPointer(PG_GETARG_DATUM(0)))
		se_wipe_at_reset(jb, VARSIZE(jb));

	/*
	 * Size the buffer for the worst case (every character written as a
	 * six-byte \u escape) so that serialization never reallocates and frees
	 * a partial, unwiped copy.
	 */
	initStringInfo(&pt);
	enlargeStringInfo(&pt, (int) Min((Size) VARSIZE(jb) * 6 + 64, MaxAllocSize / 2));
	(void) JsonbToCString(&pt, &jb->root, VARSIZE(jb));
	se_wipe_at_reset(pt.data, pt.maxlen);

	result = encrypt_envelope(fcinfo, pt.data, pt.len, id, idlen, name, namelen);
	se_wipe(pt.data, pt.maxlen);
	return result;
}

/* Encrypt a text secret bound to a uuid id. */
PG_FUNCTION_INFO_V1(secret_encrypt_text_uuid);
Datum
secret_encrypt_text_uuid(PG_FUNCTION_ARGS)
{
	text	   *value = se_text_arg_scrubbed(fcinfo, 0);
	char		id[UUID_TEXT_LEN];
	text	   *name = PG_GETARG_TEXT_PP(2);

	/* The plaintext has reached secretenv: mark the statement for redaction. */
	se_redact_note_plaintext();

	se_uuid_to_text(PG_GETARG_UUID_P(1), id);
	return encrypt_envelope(fcinfo, VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value),
							id, UUID_TEXT_LEN,
							VARDATA_ANY(name), VARSIZE_ANY_EXHDR(name));
}

/* Encrypt a text secret bound to a text id. */
PG_FUNCTION_INFO_V1(secret_encrypt_text_text);
Datum
secret_encrypt_text_text(PG_FUNCTION_ARGS)
{
	text	   *value = se_text_arg_scrubbed(fcinfo, 0);
	text	   *id = PG_GETARG_TEXT_PP(1);
	text	   *name = PG_GETARG_TEXT_PP(2);

	/* The plaintext has reached secretenv: mark the statement for redaction. */
	se_redact_note_plaintext();

	return encrypt_envelope(fcinfo, VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value),
							VARDATA_ANY(id), VARSIZE_ANY_EXHDR(id),
							VARDATA_ANY(name), VARSIZE_ANY_EXHDR(name));
}

/* Encrypt a jsonb secret bound to a uuid id. */
PG_FUNCTION_INFO_V1(secret_encrypt_jsonb_uuid);
Datum
secret_encrypt_jsonb_uuid(PG_FUNCTION_ARGS)
{
	char		id[UUID_TEXT_LEN];
	text	   *name = PG_GETARG_TEXT_PP(2);

	/* The plaintext has reached secretenv: mark the statement for redaction. */
	se_redact_note_plaintext();

	se_uuid_to_text(PG_GETARG_UUID_P(1), id);
	return encrypt_jsonb(fcinfo, id, UUID_TEXT_LEN,
						 VARDATA_ANY(name), VARSIZE_ANY_EXHDR(name));
}

/* Encrypt a jsonb secret bound to a text id. */
PG_FUNCTION_INFO_V1(secret_encrypt_jsonb_text);
Datum
secret_encrypt_jsonb_text(PG_FUNCTION_ARGS)
{
	text	   *id = PG_GETARG_TEXT_PP(1);
	text	   *name = PG_GETARG_TEXT_PP(2);

	/* The plaintext has reached secretenv: mark the statement for redaction. */
	se_redact_note_plaintext();

	return encrypt_jsonb(fcinfo, VARDATA_ANY(id), VARSIZE_ANY_EXHDR(id),
						 VARDATA_ANY(name), VARSIZE_ANY_EXHDR(name));
}

/*
 * A decrypt of a stored secret's envelope (its id is a row's of
 * secretenv.secrets) is a read of that secret: it is recorded in the access
 * audit like secret_get's, and in strict mode its plaintext leaves only
 * once the record is durable.
 */
static Datum
decrypt_args(bytea *value, bytea *wrapped, int32 version,
			 const char *id, int idlen, text *name)
{
	SeAuditRecord rec;
	text	   *result = NULL;

	/* What the statement does with the value must not print it. */
	se_redact_note_yield();
	if (!se_audit_decrypt_prepare(&rec, id, idlen, VARDATA_ANY(name), VARSIZE_ANY_EXHDR(name)))
		return PointerGetDatum(se_decrypt_to_text((const uint8_t *) VARDATA_ANY(value),
												  VARSIZE_ANY_EXHDR(value),
												  (const uint8_t *) VARDATA_ANY(wrapped),
												  VARSIZE_ANY_EXHDR(wrapped),
												  version, id, idlen,
												  VARDATA_ANY(name),
												  VARSIZE_ANY_EXHDR(name)));
	PG_TRY();
	{
		result = se_decrypt_to_text((const uint8_t *) VARDATA_ANY(value),
									VARSIZE_ANY_EXHDR(value),
									(const uint8_t *) VARDATA_ANY(wrapped),
									VARSIZE_ANY_EXHDR(wrapped),
									version, id, idlen,
									VARDATA_ANY(name), VARSIZE_ANY_EXHDR(name));
	}
	PG_CATCH();
	{
		se_audit_emit(&rec, SE_AUDIT_FAILED, false);
		PG_RE_THROW();
	}
	PG_END_TRY();
	se_audit_emit(&rec, SE_AUDIT_OK, true);
	return PointerGetDatum(result);
}

/* Decrypt a secret bound to a uuid id. */
PG_FUNCTION_INFO_V1(secret_decrypt_uuid);
Datum
secret_decrypt_uuid(PG_FUNCTION_ARGS)
{
	char		id[UUID_TEXT_LEN];

	se_uuid_to_text(PG_GETARG_UUID_P(3), id);
	return decrypt_args(PG_GETARG_BYTEA_PP(0), PG_GETARG_BYTEA_PP(1),
						PG_GETARG_INT32(2), id, UUID_TEXT_LEN,
						PG_GETARG_TEXT_PP(4));
}

/* Decrypt a secret bound to a text id. */
PG_FUNCTION_INFO_V1(secret_decrypt_text);
Datum
secret_decrypt_text(PG_FUNCTION_ARGS)
{
	text	   *id = PG_GETARG_TEXT_PP(3);

	return decrypt_args(PG_GETARG_BYTEA_PP(0), PG_GETARG_BYTEA_PP(1),
						PG_GETARG_INT32(2), VARDATA_ANY(id),
						VARSIZE_ANY_EXHDR(id), PG_GETARG_TEXT_PP(4));
}

/*
 * Unpack an envelope argument.  A NULL field makes the result NULL, as a
 * NULL argument does for the field-wise form.
 */
static bool
unpack_envelope(HeapTupleHeader env, bytea **value, bytea **wrapped, int32 *version)
{
	bool		isnull[3];
	Datum		d[3];

	for (int i = 0; i < 3; i++)
	{
		d[i] = GetAttributeByNum(env, i + 1, &isnull[i]);
		if (isnull[i])
			return false;
	}
	*value = DatumGetByteaPP(d[0]);
	*wrapped = DatumGetByteaPP(d[1]);
	*version = DatumGetInt32(d[2]);
	return true;
}

/* Decrypt an envelope bound to a uuid id. */
PG_FUNCTION_INFO_V1(secret_decrypt_envelope_uuid);
Datum
secret_decrypt_envelope_uuid(PG_FUNCTION_ARGS)
{
	bytea	   *value;
	bytea	   *wrapped;
	int32		version;
	char		id[UUID_TEXT_LEN];

	if (!unpack_envelope(PG_GETARG_HEAPTUPLEHEADER(0), &value, &wrapped, &version))
		PG_RETURN_NULL();
	se_uuid_to_text(PG_GETARG_UUID_P(1), id);
	return decrypt_args(value, wrapped, version, id, UUID_TEXT_LEN,
						PG_GETARG_TEXT_PP(2));
}

/* Decrypt an envelope bound to a text id. */
PG_FUNCTION_INFO_V1(secret_decrypt_envelope_text);
Datum
secret_decrypt_envelope_text(PG_FUNCTION_ARGS)
{
	bytea	   *value;
	bytea	   *wrapped;
	int32		version;
	text	   *id = PG_GETARG_TEXT_PP(1);

	if (!unpack_envelope(PG_GETARG_HEAPTUPLEHEADER(0), &value, &wrapped, &version))
		PG_RETURN_NULL();
	return decrypt_args(value, wrapped, version, VARDATA_ANY(id),
						VARSIZE_ANY_EXHDR(id), PG_GETARG_TEXT_PP(2));
}

/* Re-wrap one DEK under the current KEK. */
PG_FUNCTION_INFO_V1(secret_rewrap);
Datum
secret_rewrap(PG_FUNCTION_ARGS)
{
	bytea	   *wrapped = PG_GETARG_BYTEA_PP(0);
	int32		old_version = PG_GETARG_INT32(1);
	int32		new_version = se_keyring_current_version();
	const uint8_t *old_kek;
	const uint8_t *new_kek;
	bytea	   *result;
	se_status	status;

	se_key_health_check_writable();
	se_check_current_not_retired(se_keyring_current_version());
	se_check_version_argument(old_version);
	old_kek = se_keyring_kek(old_version);
	new_kek = se_keyring_kek(new_version);

	result = (bytea *) palloc(VARHDRSZ + SE_WRAPPED_DEK_LEN);
	status = se_rewrap_dek(se_engine(), old_kek, new_kek,
						   (const uint8_t *) VARDATA_ANY(wrapped),
						   VARSIZE_ANY_EXHDR(wrapped),
						   (uint8_t *) VARDATA(result));
	if (status != SE_OK)
		se_report_crypto_failure(status, old_version, "re-wrap DEK");
	SET_VARSIZE(result, VARHDRSZ + SE_WRAPPED_DEK_LEN);
	PG_RETURN_BYTEA_P(result);
}
