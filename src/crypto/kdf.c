/*-------------------------------------------------------------------------
 *
 * kdf.c
 *	  Derivation of a key encryption key (KEK) from a passphrase.
 *
 * KEK = PBKDF2-HMAC-SHA256(passphrase, salt || be32(version), 600000, 32).
 *
 * PBKDF2 with 600 000 iterations of HMAC-SHA256 is OWASP's 2023 figure and
 * MLflow's: it makes each guess of a stolen database's passphrase cost as
 * much as the server's own derivation.  The passphrase bytes are used as
 * given, with no Unicode normalisation, exactly as MLflow does.  Folding
 * the version into the salt gives every KEK version a distinct key even
 * when an administrator reuses a passphrase, so a wrapped DEK of one
 * version never opens under another.
 *
 *-------------------------------------------------------------------------
 */
#include <limits.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include "se_crypto.h"

#define SE_VERSION_LEN 4

se_status
se_derive_kek(const uint8_t *pass, size_t passlen,
			  const uint8_t *salt, size_t saltlen,
			  uint32_t version, uint8_t kek[SE_KEY_LEN])
{
	uint8_t    *fullsalt;
	size_t		fulllen;
	int			ok;

	/* PKCS5_PBKDF2_HMAC takes int lengths. */
	if (passlen > INT_MAX || saltlen > INT_MAX - SE_VERSION_LEN)
		return SE_ERR_LENGTH;

	fulllen = saltlen + SE_VERSION_LEN;
	fullsalt = OPENSSL_malloc(fulllen);
	if (fullsalt == NULL)
	{
		ERR_clear_error();
		return SE_ERR_NOMEM;
	}
	if (saltlen > 0)
		memcpy(fullsalt, salt, saltlen);
	fullsalt[saltlen] = (uint8_t) (version >> 24);
	fullsalt[saltlen + 1] = (uint8_t) (version >> 16);
	fullsalt[saltlen + 2] = (uint8_t) (version >> 8);
	fullsalt[saltlen + 3] = (uint8_t) version;

	ok = PKCS5_PBKDF2_HMAC((const char *) pass, (int) passlen,
						   fullsalt, (int) fulllen,
						   SE_PBKDF2_ITERATIONS, EVP_sha256(),
						   SE_KEY_LEN, kek);
	OPENSSL_clear_free(fullsalt, fulllen);
	if (ok != 1)
	{
		ERR_clear_error();
		se_wipe(kek, SE_KEY_LEN);
		return SE_ERR_OPENSSL;
	}
	return SE_OK;
}
