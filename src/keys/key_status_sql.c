/*-------------------------------------------------------------------------
 *
 * key_status_sql.c
 *	  SQL-callable questions about the configured KEKs: the current
 *	  version, whether a version is configured, whether its KEK opens a
 *	  wrapped DEK.  status() is built on them; none returns key material.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"

#include "crypto/se_crypto.h"
#include "keys/aead_engine.h"
#include "keys/crypto_errors.h"
#include "keys/keyring.h"
#include "pg_compat.h"
#include "se_messages.h"

/* Return the version of the current KEK. */
PG_FUNCTION_INFO_V1(secret_current_kek_version);
Datum
secret_current_kek_version(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(se_keyring_current_version());
}

/* Report whether a KEK is configured for a version. */
PG_FUNCTION_INFO_V1(secret_kek_is_configured);
Datum
secret_kek_is_configured(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(se_keyring_has_version(PG_GETARG_INT32(0)));
}

/* Whether the KEK of a version opens a wrapped DEK; the DEK is wiped unseen. */
static bool
kek_opens(bytea *wrapped, int32 version)
{
	uint8_t		dek[SE_KEY_LEN];
	se_status	status;

	status = se_unwrap_dek(se_engine(), se_keyring_kek(version),
						   (const uint8_t *) VARDATA_ANY(wrapped),
						   VARSIZE_ANY_EXHDR(wrapped), dek);
	se_wipe(dek, sizeof(dek));
	if (status == SE_ERR_OPENSSL || status == SE_ERR_NOMEM)
		se_report_crypto_failure(status, version, "unwrap DEK");
	return status == SE_OK;
}

/*
 * Report whether the configured KEK of a version opens a wrapped DEK; NULL
 * when no KEK is configured for it.
 */
PG_FUNCTION_INFO_V1(secret_kek_opens);
Datum
secret_kek_opens(PG_FUNCTION_ARGS)
{
	int32		version = PG_GETARG_INT32(1);

	if (!se_keyring_has_version(version))
		PG_RETURN_NULL();
	PG_RETURN_BOOL(kek_opens(PG_GETARG_BYTEA_PP(0), version));
}
