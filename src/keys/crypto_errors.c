/*-------------------------------------------------------------------------
 *
 * crypto_errors.c
 *	  Map the cryptographic core's status codes to PostgreSQL errors.
 *
 * The core returns codes and cleans up after itself; only this layer raises
 * an ERROR, and only after its caller has wiped whatever it held.  Messages
 * say which check failed and never include key bytes, plaintext or a
 * passphrase.  The SQLSTATEs are listed in se_messages.h and the README.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "crypto/se_crypto.h"
#include "keys/crypto_errors.h"
#include "keys/keyring.h"
#include "se_messages.h"

/* The DETAIL for an envelope whose parts have impossible lengths. */
int
se_errdetail_malformed_envelope(void)
{
	return errdetail("A wrapped DEK is exactly %d bytes and an encrypted value at least %d bytes.",
					 SE_WRAPPED_DEK_LEN, SE_SEAL_OVERHEAD);
}

/* The DETAIL for a wrapped DEK that does not open under a KEK. */
int
se_errdetail_kek_mismatch(int32 kek_version)
{
	return errdetail("The wrapped DEK does not open under the KEK of version %d.",
					 kek_version);
}

/* The HINT for a KEK that does not open a wrapped DEK. */
static int
kek_mismatch_hint(int32 kek_version)
{
	if (se_keyring_using_default(kek_version))
		return errhint("secretenv is running on its built-in development passphrase "
					   "(secretenv.allow_development_passphrase is on). "
					   "If these secrets were written under a configured passphrase, the server "
					   "was probably started without it: configure it (secretenv.kek_passphrase_command, "
					   "or secretenv.kek_passphrase) and secretenv.kek_version as they were, then reload.");
	return errhint("Check that the passphrase (secretenv.kek_passphrase, or what "
				   "secretenv.kek_passphrase_command prints), secretenv.kek_version and "
				   "secretenv.kek_salt match the configuration that wrote this secret, then reload.");
}

void
se_report_crypto_failure(se_status status, int32 kek_version, const char *what)
{
	switch (status)
	{
		case SE_ERR_LENGTH:
			ereport(ERROR,
					(errcode(ERRCODE_SECRETENV_MALFORMED_ENVELOPE),
					 errmsg("could not %s: malformed envelope", what),
					 se_errdetail_malformed_envelope()));
			break;
		case SE_ERR_UNWRAP:
			ereport(ERROR,
					(errcode(ERRCODE_SECRETENV_KEK_MISMATCH),
					 errmsg("could not %s: wrong KEK or corrupted wrapped DEK", what),
					 se_errdetail_kek_mismatch(kek_version),
					 kek_mismatch_hint(kek_version)));
			break;
		case SE_ERR_OPEN:
			ereport(ERROR,
					(errcode(ERRCODE_SECRETENV_VALUE_MISMATCH),
					 errmsg("could not %s: AAD mismatch or tampered value", what),
					 errdetail("The encrypted value does not open under its DEK with this secret_id and secret_name."),
					 errhint("A value only decrypts with the secret_id and secret_name it was encrypted with.")));
			break;
		case SE_ERR_AAD:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("secret_id must not contain \"|\""),
					 errdetail("The AAD is secret_id|secret_name; a \"|\" in the id would make it ambiguous.")));
			break;
		case SE_ERR_NOMEM:
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("could not %s: out of memory in the cryptographic library", what)));
			break;
		case SE_ERR_RANDOM:
		case SE_ERR_UNAVAILABLE:	/* reported by aead_engine.c, not here */
		case SE_ERR_OPENSSL:
			ereport(ERROR,
					(errcode(ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION),
					 errmsg("could not %s: cryptographic library failure", what),
					 errdetail_internal("%s", se_status_string(status))));
			break;
		case SE_OK:
			break;
	}
	elog(ERROR, "unexpected secretenv status %d", (int) status);
}

void
se_check_version_argument(int32 version)
{
	if (version < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("KEK version must be at least 1"),
				 errdetail("The given version is %d.", version)));
}
