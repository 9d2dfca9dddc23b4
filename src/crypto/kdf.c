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
 * se_identity_tag is a keyed tag (HMAC-SHA256) that tells inputs apart
 * without revealing them: equal inputs under one key give equal tags, and
 * without the key a tag says nothing about its input, not even a guess's
 * worth (an unkeyed hash of a passphrase could be attacked offline).
 *
 *-------------------------------------------------------------------------
 */
#include <limits.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "crypto/se_crypto.h"
#include "crypto/se_crypto_internal.h"

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

/*
 * HMAC-SHA256 under a 32-byte key over head || data, truncated to its
 * first outlen bytes (at most 32).  The full MAC is wiped; on failure out
 * is left as it was.
 */
se_status
se_hmac_sha256_truncated(const uint8_t key[SE_KEY_LEN],
						 const uint8_t *head, size_t headlen,
						 const uint8_t *data, size_t len,
						 uint8_t *out, size_t outlen)
{
	EVP_MAC    *mac;
	EVP_MAC_CTX *ctx = NULL;
	OSSL_PARAM	params[2];
	uint8_t		full[32];
	size_t		fulllen = 0;
	int			ok;

	if (outlen > sizeof(full))
		return SE_ERR_LENGTH;
	ERR_clear_error();
	mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	if (mac != NULL)
		ctx = EVP_MAC_CTX_new(mac);
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
												 (char *) "SHA256", 0);
	params[1] = OSSL_PARAM_construct_end();
	ok = ctx != NULL &&
		EVP_MAC_init(ctx, key, SE_KEY_LEN, params) == 1 &&
		(headlen == 0 || EVP_MAC_update(ctx, head, headlen) == 1) &&
		(len == 0 || EVP_MAC_update(ctx, data, len) == 1) &&
		EVP_MAC_final(ctx, full, &fulllen, sizeof(full)) == 1 &&
		fulllen == sizeof(full);
	/* EVP_MAC_CTX_free cleanses the keyed state. */
	EVP_MAC_CTX_free(ctx);
	EVP_MAC_free(mac);
	if (!ok)
	{
		ERR_clear_error();
		se_wipe(full, sizeof(full));
		return SE_ERR_OPENSSL;
	}
	memcpy(out, full, outlen);
	se_wipe(full, sizeof(full));
	return SE_OK;
}

se_status
se_identity_tag(const uint8_t key[SE_KEY_LEN], uint8_t domain,
				const uint8_t *data, size_t len,
				uint8_t out[SE_IDENTITY_TAG_LEN])
{
	/* The domain byte keeps tags of different kinds of input apart. */
	return se_hmac_sha256_truncated(key, &domain, 1, data, len,
									out, SE_IDENTITY_TAG_LEN);
}
