/*-------------------------------------------------------------------------
 *
 * aead.c
 *	  AES-256-GCM seal and open over the OpenSSL provider's cipher interface.
 *
 * Every secretenv ciphertext (encrypted values, wrapped DEKs, cache
 * entries) is nonce(12) || ciphertext || tag(16) under AES-256-GCM.  An
 * se_aead owns one keyed AES-256-GCM context of the provider that OpenSSL
 * fetches for "AES-256-GCM", and re-keys it on every call: a backend
 * decrypting many secrets allocates nothing per call.  Nonces come from
 * random.c.
 *
 * Why the provider interface and not EVP_Decrypt*: secretenv keys a context
 * for every value it opens (a KEK to unwrap, then the value's own DEK), and
 * in OpenSSL 3.0 each EVP key setup asks the provider for the key and IV
 * lengths through two parameter lookups, and each tag through a third:
 * for a 50-byte secret that bookkeeping costs more than the AES-GCM work
 * (an envelope open: about 1.1 us through EVP, 0.7 us here).  The provider
 * interface (provider-cipher(7)) is the public, versioned ABI that EVP
 * itself calls.  The functions are taken from the provider that
 * EVP_CIPHER_fetch chose, under the same algorithm name, so a FIPS or other
 * configured provider is used as EVP would use it, and the provider still
 * checks every key, nonce and tag length itself.
 *
 * Security notes:
 *	- Nonces come from OpenSSL's CSPRNG.  With random 96-bit nonces a DEK
 *	  seals a single value and a KEK wraps one DEK per write, far below the
 *	  2^32 messages per key that NIST SP 800-38D allows for random nonces.
 *	- GCM authenticates only in the final call; the update calls have
 *	  already written unauthenticated plaintext to the caller's buffer by
 *	  then.  A failed final is a forgery: the output is wiped before
 *	  returning, so nothing unauthenticated escapes.  The expected tag is
 *	  handed to the provider with the key, before any data: a decryption
 *	  can never reach its final check without one.
 *	- The tag is compared by OpenSSL in constant time.
 *	- After each call (each envelope operation, for the batches of
 *	  envelope.c) the context is re-keyed with an all-zero key, so the key
 *	  schedule of a KEK or DEK does not linger in the context between
 *	  calls (re-keying also clears the GCM state of the last message);
 *	  freeing the context cleanses it.
 *	- Errors that OpenSSL queued are cleared before returning a status, so
 *	  nothing is left for an unrelated later caller to misreport.
 *
 *-------------------------------------------------------------------------
 */
#include <limits.h>
#include <string.h>

#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/provider.h>

#include "crypto/se_crypto_internal.h"

#define CIPHER_NAME "AES-256-GCM"

struct se_aead
{
	EVP_CIPHER *cipher;			/* fetched once; keeps its provider loaded */
	/* The provider's entry points for this cipher. */
	OSSL_FUNC_cipher_newctx_fn *newctx;
	OSSL_FUNC_cipher_freectx_fn *freectx;
	OSSL_FUNC_cipher_encrypt_init_fn *encrypt_init;
	OSSL_FUNC_cipher_decrypt_init_fn *decrypt_init;
	OSSL_FUNC_cipher_update_fn *update;
	OSSL_FUNC_cipher_final_fn *final;
	OSSL_FUNC_cipher_get_ctx_params_fn *get_ctx_params;
	void	   *algctx;			/* the provider's context, re-keyed on every
								 * call */
	int			batch_depth;	/* > 0: scrub once at the batch's end */
};

/* Key the context holds between calls in place of a real one. */
static const uint8_t scrub_key[SE_KEY_LEN];

/*
 * Replace the key schedule left by the last operation with that of an
 * all-zero key.  Re-keying costs one AES key expansion, far cheaper than
 * freeing and allocating the context.
 */
static int
aead_scrub(se_aead *aead)
{
	return aead->encrypt_init(aead->algctx, scrub_key, SE_KEY_LEN,
							  NULL, 0, NULL);
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
		case SE_ERR_UNAVAILABLE:
			return "no loaded OpenSSL provider implements AES-256-GCM";
	}
	return "unknown status";
}

/* Whether a provider's colon-separated list of names includes name. */
static int
names_include(const char *names, const char *name)
{
	size_t		namelen = strlen(name);

	for (const char *p = names; *p != '\0';)
	{
		const char *end = strchr(p, ':');
		size_t		len = end != NULL ? (size_t) (end - p) : strlen(p);

		if (len == namelen && OPENSSL_strncasecmp(p, name, len) == 0)
			return 1;
		if (end == NULL)
			break;
		p = end + 1;
	}
	return 0;
}

/*
 * Take the entry points of the implementation that EVP_CIPHER_fetch chose:
 * its provider lists the cipher under the same name.  Returns 0 unless
 * every function secretenv calls is there.
 */
static int
bind_implementation(se_aead *aead)
{
	const OSSL_PROVIDER *provider = EVP_CIPHER_get0_provider(aead->cipher);
	const OSSL_ALGORITHM *algorithms;
	const OSSL_DISPATCH *fn = NULL;
	int			no_store;

	algorithms = OSSL_PROVIDER_query_operation(provider, OSSL_OP_CIPHER, &no_store);
	for (const OSSL_ALGORITHM *alg = algorithms;
		 alg != NULL && alg->algorithm_names != NULL; alg++)
		if (names_include(alg->algorithm_names, CIPHER_NAME))
		{
			fn = alg->implementation;
			break;
		}
	for (; fn != NULL && fn->function_id != 0; fn++)
	{
		switch (fn->function_id)
		{
			case OSSL_FUNC_CIPHER_NEWCTX:
				aead->newctx = OSSL_FUNC_cipher_newctx(fn);
				break;
			case OSSL_FUNC_CIPHER_FREECTX:
				aead->freectx = OSSL_FUNC_cipher_freectx(fn);
				break;
			case OSSL_FUNC_CIPHER_ENCRYPT_INIT:
				aead->encrypt_init = OSSL_FUNC_cipher_encrypt_init(fn);
				break;
			case OSSL_FUNC_CIPHER_DECRYPT_INIT:
				aead->decrypt_init = OSSL_FUNC_cipher_decrypt_init(fn);
				break;
			case OSSL_FUNC_CIPHER_UPDATE:
				aead->update = OSSL_FUNC_cipher_update(fn);
				break;
			case OSSL_FUNC_CIPHER_FINAL:
				aead->final = OSSL_FUNC_cipher_final(fn);
				break;
			case OSSL_FUNC_CIPHER_GET_CTX_PARAMS:
				aead->get_ctx_params = OSSL_FUNC_cipher_get_ctx_params(fn);
				break;
		}
	}
	if (algorithms != NULL)
		OSSL_PROVIDER_unquery_operation(provider, OSSL_OP_CIPHER, algorithms);
	if (aead->newctx == NULL || aead->freectx == NULL ||
		aead->encrypt_init == NULL || aead->decrypt_init == NULL ||
		aead->update == NULL || aead->final == NULL ||
		aead->get_ctx_params == NULL)
		return 0;
	aead->algctx = aead->newctx(OSSL_PROVIDER_get0_provider_ctx(provider));
	return aead->algctx != NULL;
}

se_status
se_aead_new(se_aead **out)
{
	se_aead    *aead;
	se_status	status = SE_OK;

	*out = NULL;
	aead = OPENSSL_zalloc(sizeof(se_aead));
	if (aead == NULL)
	{
		ERR_clear_error();
		return SE_ERR_NOMEM;
	}
	/*
	 * No implementation under this name and the configured properties (or
	 * one without the functions taken below) is not a memory shortage:
	 * say so, so the administrator looks at the OpenSSL configuration.
	 */
	aead->cipher = EVP_CIPHER_fetch(NULL, CIPHER_NAME, NULL);
	if (aead->cipher == NULL || !bind_implementation(aead))
		status = SE_ERR_UNAVAILABLE;
	else if (!aead_scrub(aead))
		status = SE_ERR_OPENSSL;
	if (status != SE_OK)
	{
		ERR_clear_error();
		se_aead_free(aead);
		return status;
	}
	*out = aead;
	return SE_OK;
}

void
se_aead_free(se_aead *aead)
{
	if (aead == NULL)
		return;
	/* The provider cleanses its context (key schedule included) on free. */
	if (aead->algctx != NULL)
		aead->freectx(aead->algctx);
	EVP_CIPHER_free(aead->cipher);
	OPENSSL_free(aead);
}

/*
 * Key the context for one message.  Every call names the nonce length, so
 * the format never depends on a default; a decryption also hands over the
 * tag it must end with.
 */
static int
aead_init(se_aead *aead, int encrypt, const uint8_t key[SE_KEY_LEN],
		  const uint8_t nonce[SE_NONCE_LEN], const uint8_t *tag)
{
	OSSL_PARAM	params[2] = {OSSL_PARAM_END, OSSL_PARAM_END};

	if (encrypt)
		return aead->encrypt_init(aead->algctx, key, SE_KEY_LEN,
								  nonce, SE_NONCE_LEN, NULL);
	params[0] = OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG,
												  (void *) tag, SE_TAG_LEN);
	return aead->decrypt_init(aead->algctx, key, SE_KEY_LEN,
							  nonce, SE_NONCE_LEN, params);
}

/*
 * Feed len bytes: associated data when out is NULL, else text to en- or
 * decrypt into out.  GCM is a stream mode: exactly len bytes come out.
 */
static int
aead_update(se_aead *aead, uint8_t *out, const uint8_t *in, size_t len)
{
	size_t		outlen = 0;

	if (len == 0)
		return 1;
	return aead->update(aead->algctx, out, &outlen, len, in, len) &&
		(out == NULL || outlen == len);
}

/* End the message: computes the tag, or checks it for a decryption. */
static int
aead_final(se_aead *aead)
{
	uint8_t		none[1];
	size_t		outlen = 0;

	return aead->final(aead->algctx, none, &outlen, 0) && outlen == 0;
}

se_status
se_gcm_seal_with_nonce(se_aead *aead, const uint8_t key[SE_KEY_LEN],
					   const uint8_t nonce[SE_NONCE_LEN],
					   const uint8_t *aad, size_t aadlen,
					   const uint8_t *pt, size_t ptlen, uint8_t *out)
{
	uint8_t    *ct = out + SE_NONCE_LEN;
	OSSL_PARAM	params[2] = {OSSL_PARAM_END, OSSL_PARAM_END};

	if (ptlen > SE_MAX_PLAINTEXT_LEN || aadlen > INT_MAX)
		return SE_ERR_LENGTH;

	memcpy(out, nonce, SE_NONCE_LEN);
	params[0] = OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG,
												  ct + ptlen, SE_TAG_LEN);
	if (!aead_init(aead, 1, key, nonce, NULL) ||
		!aead_update(aead, NULL, aad, aadlen) ||
		!aead_update(aead, ct, pt, ptlen) ||
		!aead_final(aead) ||
		!aead->get_ctx_params(aead->algctx, params) ||
		params[0].return_size != SE_TAG_LEN ||
		!aead_scrub_unless_batched(aead))
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
	size_t		ctlen;
	se_status	status = SE_ERR_OPENSSL;

	/* Nothing has been written to out yet, so there is nothing to wipe. */
	if (inlen < SE_SEAL_OVERHEAD)
		return SE_ERR_LENGTH;
	ctlen = inlen - SE_SEAL_OVERHEAD;
	if (ctlen > SE_MAX_PLAINTEXT_LEN || aadlen > INT_MAX)
		return SE_ERR_LENGTH;

	/* The provider keeps its own copy of the expected tag from here on. */
	if (!aead_init(aead, 0, key, in, in + inlen - SE_TAG_LEN) ||
		!aead_update(aead, NULL, aad, aadlen) ||
		!aead_update(aead, out, in + SE_NONCE_LEN, ctlen))
		goto fail;

	/*
	 * The tag is checked here and only here.  Failure means the key, the
	 * nonce, the AAD, the ciphertext or the tag is not what was sealed.
	 */
	if (!aead_final(aead))
	{
		status = SE_ERR_OPEN;
		goto fail;
	}
	if (!aead_scrub_unless_batched(aead))
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
