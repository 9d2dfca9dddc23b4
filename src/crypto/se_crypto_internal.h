/*-------------------------------------------------------------------------
 *
 * se_crypto_internal.h
 *	  Private interface of secretenv's cryptographic core.
 *
 * se_gcm_seal_with_nonce is the deterministic AES-256-GCM primitive under
 * se_aead_seal: se_aead_seal draws a nonce from the CSPRNG and hands it
 * here.  Taking a caller's nonce is exactly what must never be possible
 * from SQL (a repeated nonce under one key reveals the XOR of two
 * plaintexts and lets an attacker forge tags), so this declaration lives
 * apart from se_crypto.h.  Only the core's own .c files and the standalone
 * unit tests and fuzz harness (known-answer tests) include this header; the
 * PostgreSQL layer never does, so no SQL path can choose a nonce.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SE_CRYPTO_INTERNAL_H
#define SE_CRYPTO_INTERNAL_H

#include "crypto/se_crypto.h"

/*
 * Seal pt under key with the given nonce: out receives
 * nonce || ciphertext || tag, exactly ptlen + SE_SEAL_OVERHEAD bytes, and
 * is wiped on failure.  out must not overlap the other buffers.
 */
extern se_status se_gcm_seal_with_nonce(se_aead *aead,
										const uint8_t key[SE_KEY_LEN],
										const uint8_t nonce[SE_NONCE_LEN],
										const uint8_t *aad, size_t aadlen,
										const uint8_t *pt, size_t ptlen,
										uint8_t *out);

/*
 * Group the AES-GCM steps of one envelope operation: the engine's context
 * is scrubbed once, when the outermost batch ends, instead of after every
 * step.  se_aead_batch_end returns the scrub's status.
 */
extern void se_aead_batch_begin(se_aead *aead);
extern se_status se_aead_batch_end(se_aead *aead);

/*
 * HMAC-SHA256 under key over head || data, truncated to outlen bytes (at
 * most 32): the one MAC under KEK fingerprints and identity tags.
 */
extern se_status se_hmac_sha256_truncated(const uint8_t key[SE_KEY_LEN],
										  const uint8_t *head, size_t headlen,
										  const uint8_t *data, size_t len,
										  uint8_t *out, size_t outlen);

#endif							/* SE_CRYPTO_INTERNAL_H */
