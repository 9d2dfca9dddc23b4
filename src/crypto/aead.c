/*-------------------------------------------------------------------------
 *
 * aead.c
 *	  AES-256-GCM seal and open over OpenSSL's EVP interface, and the CSPRNG.
 *
 * Every secretenv ciphertext (encrypted values, wrapped DEKs, cache
 * entries) is nonce(12) || ciphertext || tag(16) under AES-256-GCM.  An
 * se_aead owns one EVP_CIPHER_CTX and the AES-256-GCM implementation,
 * fetched once, and re-keys that context on every call: a backend decrypting
 * many secrets allocates nothing per call.  Nonces come from random.c.
 *
 * Security notes:
 *	- Nonces come from OpenSSL's CSPRNG.  With random 96-bit nonces a DEK
 *	  seals a single value and a KEK wraps one DEK per write, far below the
 *	  2^32 messages per key that NIST SP 800-38D allows for random nonces.
 *	- GCM authenticates only in EVP_DecryptFinal_ex; EVP_DecryptUpdate has
 *	  already written unauthenticated plaintext to the caller's buffer by
 *	  then.  A failed final is a forgery: the output is wiped before
 *	  returning, so nothing unauthenticated escapes.
 *	- The tag is compared by OpenSSL in constant time.
 *	- After each call (each envelope operation, for the batches of
 *	  envelope.c) the context is re-keyed with an all-zero key, so the key
 *	  schedule of a KEK or DEK does not linger in the context between
 *	  calls; EVP_CIPHER_CTX_free cleanses the context at the end.
 *	- Errors that OpenSSL queued are cleared before returning a status, so
 *	  nothing is left for an unrelated later caller to misreport.
 *
 *-------------------------------------------------------------------------
 */
#include <limits.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>

#include "se_crypto_internal.h"

struct se_aead
{
	EVP_CIPHER *cipher;			/* AES-256-GCM, fetched once */
	EVP_CIPHER_CTX *ctx;		/* re-keyed on every call */
	int			batch_depth;	/* > 0: scrub once at the batch's end */
};

/* Key the context holds between calls in place of a real one. */
static const uint8_t scrub_key[SE_KEY_LEN];

/*
 * Replace the key schedule left by the last operation with that of an
 * all-zero key.  Re-keying costs one AES key expansion, far cheaper than
 * resetting and re-fetching the context.
 */
static int
aead_scrub(se_aead *aead)
{
	return EVP_EncryptInit_ex(aead->ctx, NULL, NULL, scrub_key, NULL) == 1;
}

/*
 * Within a batch (an envelope operation: unwrap then open, seal then wrap)
 * each step's key schedule is overwritten by the next step's, so only the
 * batch's end scrubs; each re-key costs as much as the AES-GCM work on a
 * short secret.
 */
static int
aead_scrub_unless_batched(se_aead *aead)
{
	return aead->batch_depth > 0 || aead_scrub(aead);
}

void
se_aead_batch_begin(se_aead *aead)
{
	aead->batch_depth++;
}

se_status
se_aead_batch_end(se_aead *aead)
{
	aead->batch_depth--;
	if (aead->batch_depth == 0 && !aead_scrub(aead))
	{
		ERR_clear_error();
		return SE_ERR_OPENSSL;
	}
	return SE_OK;
}

const char *
se_status_string(se_status status)
{
	switch (status)
	{
		case SE_OK:
			return "success";
		case SE_ERR_OPENSSL:
			return "a cryptographic library call failed";
		case SE_ERR_NOMEM:
			return "out of memory in the cryptographic library";
		case SE_ERR_RANDOM:
			return "the random number generator failed";
		case SE_ERR_LENGTH:
			return "input has an invalid length";
		case SE_ERR_UNWRAP:
			return "wrapped data encryption key does not open under this key encryption key";
		case SE_ERR_OPEN:
			return "value does not open under this data encryption key and associated data";
		case SE_ERR_AAD:
			return "secret identifier contains \"|\"";
	}
	return "unknown status";
}

se_aead *
se_aead_new(void)
{
	se_aead    *aead;

	aead = OPENSSL_zalloc(sizeof(se_aead));
	if (aead == NULL)
	{
		ERR_clear_error();
		return NULL;
	}
	aead->cipher = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
	aead->ctx = EVP_CIPHER_CTX_new();

	/*
	 * Bind the cipher to the context once; later calls pass only a key and
	 * a nonce.  12 bytes is GCM's default nonce length, set explicitly so
	 * the format never depends on a default.
	 */
	if (aead->cipher == NULL || aead->ctx == NULL ||
		EVP_EncryptInit_ex(aead->ctx, aead->cipher, NULL, NULL, NULL) != 1 ||
		EVP_CIPHER_CTX_ctrl(aead->ctx, EVP_CTRL_GCM_SET_IVLEN,
							SE_NONCE_LEN, NULL) <= 0)
	{
		ERR_clear_error();
		se_aead_free(aead);
		return NULL;
	}
	return aead;
}

void
se_aead_free(se_aead *aead)
{
	if (aead == NULL)
		return;
	/* EVP_CIPHER_CTX_free cleanses the provider's key schedule. */
	EVP_CIPHER_CTX_free(aead->ctx);
	EVP_CIPHER_free(aead->cipher);
	OPENSSL_free(aead);
}

se_status
se_gcm_seal_with_nonce(se_aead *aead, const uint8_t key[SE_KEY_LEN],
					   const uint8_t nonce[SE_NONCE_LEN],
					   const uint8_t *aad, size_t aadlen,
					   const uint8_t *pt, size_t ptlen, uint8_t *out)
{
	EVP_CIPHER_CTX *ctx = aead->ctx;
	uint8_t    *ct = out + SE_NONCE_LEN;
	int			len;

	if (ptlen > SE_MAX_PLAINTEXT_LEN || aadlen > INT_MAX)
		return SE_ERR_LENGTH;

	memcpy(out, nonce, SE_NONCE_LEN);
	if (EVP_EncryptInit_ex(ctx, NULL, NULL, key, nonce) != 1)
		goto fail;
	if (aadlen > 0 &&
		EVP_EncryptUpdate(ctx, NULL, &len, aad, (int) aadlen) != 1)
		goto fail;
	if (ptlen > 0 &&
		(EVP_EncryptUpdate(ctx, ct, &len, pt, (int) ptlen) != 1 ||
		 len != (int) ptlen))
		goto fail;
	/* GCM is a stream mode: the final call emits no ciphertext. */
	if (EVP_EncryptFinal_ex(ctx, ct + ptlen, &len) != 1 || len != 0)
		goto fail;
	if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, SE_TAG_LEN,
							ct + ptlen) <= 0)
		goto fail;
	if (!aead_scrub_unless_batched(aead))
		goto fail;
	return SE_OK;

fail:
	ERR_clear_error();
	se_wipe(out, ptlen + SE_SEAL_OVERHEAD);
	/* Best effort: the call has failed anyway, and free cleanses the ctx. */
	(void) aead_scrub(aead);
	ERR_clear_error();
	return SE_ERR_OPENSSL;
}

se_status
se_aead_seal(se_aead *aead, const uint8_t key[SE_KEY_LEN],
			 const uint8_t *aad, size_t aadlen,
			 const uint8_t *pt, size_t ptlen, uint8_t *out)
{
	uint8_t		nonce[SE_NONCE_LEN];
	se_status	status;

	if (ptlen > SE_MAX_PLAINTEXT_LEN || aadlen > INT_MAX)
		return SE_ERR_LENGTH;

	status = se_random_bytes(nonce, sizeof(nonce));
	if (status != SE_OK)
	{
		se_wipe(out, ptlen + SE_SEAL_OVERHEAD);
		return status;
	}
	return se_gcm_seal_with_nonce(aead, key, nonce, aad, aadlen,
								  pt, ptlen, out);
}

se_status
se_aead_open(se_aead *aead, const uint8_t key[SE_KEY_LEN],
			 const uint8_t *aad, size_t aadlen,
			 const uint8_t *in, size_t inlen, uint8_t *out)
{
	EVP_CIPHER_CTX *ctx = aead->ctx;
	size_t		ctlen;
	uint8_t		tag[SE_TAG_LEN];
	uint8_t		final[SE_TAG_LEN];
	int			len;
	se_status	status = SE_ERR_OPENSSL;

	/* Nothing has been written to out yet, so there is nothing to wipe. */
	if (inlen < SE_SEAL_OVERHEAD)
		return SE_ERR_LENGTH;
	ctlen = inlen - SE_SEAL_OVERHEAD;
	if (ctlen > SE_MAX_PLAINTEXT_LEN || aadlen > INT_MAX)
		return SE_ERR_LENGTH;

	memcpy(tag, in + inlen - SE_TAG_LEN, SE_TAG_LEN);
	if (EVP_DecryptInit_ex(ctx, NULL, NULL, key, in) != 1)
		goto fail;
	if (aadlen > 0 &&
		EVP_DecryptUpdate(ctx, NULL, &len, aad, (int) aadlen) != 1)
		goto fail;
	if (ctlen > 0 &&
		(EVP_DecryptUpdate(ctx, out, &len, in + SE_NONCE_LEN,
						   (int) ctlen) != 1 ||
		 len != (int) ctlen))
		goto fail;
	if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, SE_TAG_LEN, tag) <= 0)
		goto fail;

	/*
	 * The tag is checked here and only here.  Failure means the key, the
	 * nonce, the AAD, the ciphertext or the tag is not what was sealed.
	 */
	if (EVP_DecryptFinal_ex(ctx, final, &len) != 1)
	{
		status = SE_ERR_OPEN;
		goto fail;
	}
	if (len != 0 || !aead_scrub_unless_batched(aead))
		goto fail;
	return SE_OK;

fail:
	ERR_clear_error();
	/* out may hold plaintext that failed authentication. */
	if (ctlen > 0)
		se_wipe(out, ctlen);
	/* Best effort: the call has failed anyway, and free cleanses the ctx. */
	(void) aead_scrub(aead);
	ERR_clear_error();
	return status;
}
