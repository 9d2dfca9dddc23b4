/*-------------------------------------------------------------------------
 *
 * envelope.c
 *	  Envelope encryption of secret values: AAD, DEK wrapping, seal, open
 *	  and rotation.
 *
 * Each value is sealed under its own random data encryption key (DEK); the
 * DEK is stored wrapped (sealed) under the key encryption key (KEK).  A
 * KEK rotation therefore re-wraps 60 bytes per row and never touches the
 * encrypted values.
 *
 * The value's AAD is secret_id "|" secret_name: the ciphertext is bound to
 * its row, so moving it to another row or renaming the row makes it fail
 * to open.  A '|' inside secret_id would let two different (id, name)
 * pairs produce the same AAD ("a|b" + "c" and "a" + "b|c"), so ids with a
 * '|' are refused; names may contain one, since the first '|' then always
 * ends the id.
 *
 * DEKs live only in local arrays here and are wiped on every return path.
 * Outputs are wiped on failure, so a caller never sees a half-built
 * envelope or unauthenticated plaintext.
 *
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <string.h>

#include "crypto/se_crypto_internal.h"

#define SE_AAD_SEPARATOR '|'

size_t
se_aad_len(size_t idlen, size_t namelen)
{
	/* Saturate rather than wrap: no allocation of SIZE_MAX bytes succeeds. */
	if (idlen > SIZE_MAX - 1 || namelen > SIZE_MAX - 1 - idlen)
		return SIZE_MAX;
	return idlen + 1 + namelen;
}

se_status
se_build_aad(const char *id, size_t idlen,
			 const char *name, size_t namelen,
			 uint8_t *out)
{
	if (idlen > 0 && memchr(id, SE_AAD_SEPARATOR, idlen) != NULL)
		return SE_ERR_AAD;
	if (idlen > 0)
		memcpy(out, id, idlen);
	out[idlen] = SE_AAD_SEPARATOR;
	if (namelen > 0)
		memcpy(out + idlen + 1, name, namelen);
	return SE_OK;
}

se_status
se_wrap_dek(se_aead *aead, const uint8_t kek[SE_KEY_LEN],
			const uint8_t dek[SE_KEY_LEN],
			uint8_t out[SE_WRAPPED_DEK_LEN])
{
	return se_aead_seal(aead, kek, NULL, 0, dek, SE_KEY_LEN, out);
}

se_status
se_unwrap_dek(se_aead *aead, const uint8_t kek[SE_KEY_LEN],
			  const uint8_t *wrapped, size_t wrappedlen,
			  uint8_t dek[SE_KEY_LEN])
{
	se_status	status;

	if (wrappedlen != SE_WRAPPED_DEK_LEN)
	{
		se_wipe(dek, SE_KEY_LEN);
		return SE_ERR_LENGTH;
	}
	status = se_aead_open(aead, kek, NULL, 0, wrapped, wrappedlen, dek);
	if (status == SE_ERR_OPEN)
		return SE_ERR_UNWRAP;
	return status;
}

/*
 * End an envelope operation begun with se_aead_batch_begin: wipe its DEK
 * and scrub the engine.  A scrub that fails fails the operation.
 */
static se_status
end_envelope_operation(se_aead *aead, uint8_t dek[SE_KEY_LEN], se_status status)
{
	se_wipe(dek, SE_KEY_LEN);
	if (se_aead_batch_end(aead) != SE_OK && status == SE_OK)
		return SE_ERR_OPENSSL;
	return status;
}

se_status
se_envelope_seal(se_aead *aead, const uint8_t kek[SE_KEY_LEN],
				 const uint8_t *aad, size_t aadlen,
				 const uint8_t *pt, size_t ptlen,
				 uint8_t *value_out,
				 uint8_t wrapped_out[SE_WRAPPED_DEK_LEN])
{
	uint8_t		dek[SE_KEY_LEN];
	se_status	status;

	/* Checked first so that the wipe below has a meaningful length. */
	if (ptlen > SE_MAX_PLAINTEXT_LEN)
		return SE_ERR_LENGTH;

	/* A fresh DEK for every value: a DEK never seals two plaintexts. */
	se_aead_batch_begin(aead);
	status = se_random_bytes(dek, sizeof(dek));
	if (status == SE_OK)
		status = se_aead_seal(aead, dek, aad, aadlen, pt, ptlen, value_out);
	if (status == SE_OK)
		status = se_wrap_dek(aead, kek, dek, wrapped_out);
	status = end_envelope_operation(aead, dek, status);

	if (status != SE_OK)
	{
		se_wipe(value_out, ptlen + SE_SEAL_OVERHEAD);
		se_wipe(wrapped_out, SE_WRAPPED_DEK_LEN);
	}
	return status;
}

se_status
se_envelope_open(se_aead *aead, const uint8_t kek[SE_KEY_LEN],
				 const uint8_t *wrapped, size_t wrappedlen,
				 const uint8_t *aad, size_t aadlen,
				 const uint8_t *value, size_t valuelen,
				 uint8_t *pt_out)
{
	uint8_t		dek[SE_KEY_LEN];
	se_status	status;

	/*
	 * Lengths first, so that a malformed row is reported as such rather
	 * than as a wrong key or a tampered value.
	 */
	if (valuelen < SE_SEAL_OVERHEAD ||
		valuelen - SE_SEAL_OVERHEAD > SE_MAX_PLAINTEXT_LEN)
		return SE_ERR_LENGTH;
	if (wrappedlen != SE_WRAPPED_DEK_LEN)
	{
		se_wipe(pt_out, valuelen - SE_SEAL_OVERHEAD);
		return SE_ERR_LENGTH;
	}

	se_aead_batch_begin(aead);
	status = se_unwrap_dek(aead, kek, wrapped, wrappedlen, dek);
	if (status == SE_OK)
		status = se_aead_open(aead, dek, aad, aadlen, value, valuelen, pt_out);
	status = end_envelope_operation(aead, dek, status);

	if (status != SE_OK)
		se_wipe(pt_out, valuelen - SE_SEAL_OVERHEAD);
	return status;
}

se_status
se_rewrap_dek(se_aead *aead,
			  const uint8_t old_kek[SE_KEY_LEN],
			  const uint8_t new_kek[SE_KEY_LEN],
			  const uint8_t *wrapped, size_t wrappedlen,
			  uint8_t out[SE_WRAPPED_DEK_LEN])
{
	uint8_t		dek[SE_KEY_LEN];
	se_status	status;

	se_aead_batch_begin(aead);
	status = se_unwrap_dek(aead, old_kek, wrapped, wrappedlen, dek);
	/* se_wrap_dek draws a fresh nonce: never reuse the old one. */
	if (status == SE_OK)
		status = se_wrap_dek(aead, new_kek, dek, out);
	status = end_envelope_operation(aead, dek, status);

	if (status != SE_OK)
		se_wipe(out, SE_WRAPPED_DEK_LEN);
	return status;
}
