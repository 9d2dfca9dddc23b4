/*-------------------------------------------------------------------------
 *
 * reencrypt.c
 *	  Re-encryption of one stored value, for secret_reencrypt().
 *
 * A rotation re-wraps DEKs: after a KEK compromise that is not enough, the
 * DEKs it wrapped must be considered known.  Re-encryption opens the value
 * and seals it again under a fresh DEK and the current KEK, in one call:
 * the plaintext exists only in a scratch buffer of this function, wiped
 * before it returns and, should an ERROR come first, when its memory
 * context is reset.  It never becomes a datum, so it cannot reach a log,
 * a client or another function.
 *
 * Rows of a retired KEK version are re-encrypted like any other (that is
 * how they are brought back), as long as their KEK is configured.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "funcapi.h"
#include "utils/uuid.h"

#include "crypto/se_crypto.h"
#include "keys/aead_engine.h"
#include "keys/crypto_errors.h"
#include "keys/kek_retirement.h"
#include "keys/key_health.h"
#include "keys/keyring.h"
#include "se_messages.h"
#include "secrets/envelope_sql.h"
#include "secrets/plaintext_wipe.h"

/* Open an envelope and seal its value again under a fresh DEK and the current KEK. */
PG_FUNCTION_INFO_V1(secret_reencrypt_envelope);
Datum
secret_reencrypt_envelope(PG_FUNCTION_ARGS)
{
	bytea	   *value = PG_GETARG_BYTEA_PP(0);
	bytea	   *wrapped = PG_GETARG_BYTEA_PP(1);
	int32		old_version = PG_GETARG_INT32(2);
	text	   *name = PG_GETARG_TEXT_PP(4);
	int32		new_version;
	char		id[UUID_TEXT_LEN];
	size_t		valuelen = VARSIZE_ANY_EXHDR(value);
	size_t		ptlen;
	const uint8_t *old_kek;
	const uint8_t *new_kek;
	uint8_t    *aad;
	size_t		aadlen;
	uint8_t    *pt;
	se_status	status;
	TupleDesc	tupdesc;
	Datum		result;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "reencrypt_envelope must return a composite type");
	tupdesc = BlessTupleDesc(tupdesc);

	if (valuelen < SE_SEAL_OVERHEAD)
		se_report_crypto_failure(SE_ERR_LENGTH, old_version, "re-encrypt secret");
	ptlen = valuelen - SE_SEAL_OVERHEAD;

	se_check_version_argument(old_version);
	se_key_health_check_writable();
	se_check_current_not_retired(se_keyring_current_version());
	new_version = se_keyring_current_version();
	old_kek = se_keyring_kek(old_version);
	new_kek = se_keyring_kek(new_version);

	se_uuid_to_text(PG_GETARG_UUID_P(3), id);
	aad = se_build_aad_from_text(id, UUID_TEXT_LEN, VARDATA_ANY(name),
								 VARSIZE_ANY_EXHDR(name), &aadlen);

	pt = palloc(Max(ptlen, 1));
	se_wipe_at_reset(pt, Max(ptlen, 1));
	status = se_envelope_open(se_engine(), old_kek,
							  (const uint8_t *) VARDATA_ANY(wrapped),
							  VARSIZE_ANY_EXHDR(wrapped), aad, aadlen,
							  (const uint8_t *) VARDATA_ANY(value), valuelen, pt);
	if (status != SE_OK)
		se_report_crypto_failure(status, old_version, "re-encrypt secret");

	/* Should the seal fail, the reset wipes pt. */
	result = se_seal_envelope_row(tupdesc, new_kek, new_version, aad, aadlen,
								  pt, ptlen, "re-encrypt secret");
	se_wipe(pt, ptlen);
	pfree(aad);
	PG_RETURN_DATUM(result);
}
