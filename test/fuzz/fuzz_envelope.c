/*-------------------------------------------------------------------------
 *
 * fuzz_envelope.c
 *	  libFuzzer harness for secretenv's cryptographic core.
 *
 * Everything the core parses can come from a table row an attacker was
 * able to write (encrypted_value, wrapped_dek) or from SQL arguments (ids,
 * names, values to mask).  This harness feeds such bytes to every entry
 * point that takes them and aborts on any crash, out-of-bounds access,
 * undefined behaviour, unexpected status, or output left unwiped after a
 * rejection.
 *
 * Input layout:
 *	  byte 0		bit 0: which KEK; bit 1: mode (0 = untrusted bytes,
 *					1 = seal-then-tamper oracle)
 *	  byte 1		length of the wrapped DEK part (capped at what remains)
 *	  byte 2		length of the AAD part (capped at what remains)
 *	  then			wrapped DEK part, AAD part, value part (the rest)
 *
 * In mode 1 the value part supplies a DEK (32), a value nonce (12) and a
 * wrap nonce (12), then the plaintext; the harness seals it, checks that it
 * opens, then flips one bit (chosen by the first two bytes of the wrapped
 * part) and checks that it no longer does.
 *
 * The two KEKs are MLflow's for "correct horse battery staple" and for its
 * development passphrase, both version 1, so gen_corpus.pl can seed the
 * corpus with real envelopes from the vectors.
 *
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "se_crypto_internal.h"
#include "test_bytes.h"

#define HEADER_LEN 3
#define ORACLE_PREFIX (SE_KEY_LEN + 2 * SE_NONCE_LEN)

int			LLVMFuzzerInitialize(int *argc, char ***argv);
int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t keks[2][SE_KEY_LEN] = {
	{0xc2, 0xb0, 0x84, 0x6c, 0x9b, 0x96, 0xfb, 0xda,
		0x4e, 0xc8, 0x7d, 0x74, 0x94, 0x3f, 0x0c, 0xa3,
		0xc1, 0xc5, 0xfa, 0xb5, 0xbc, 0x98, 0x2e, 0xca,
	0x27, 0x61, 0x1b, 0xca, 0x15, 0x73, 0xf8, 0x48},
	{0x9f, 0x4f, 0x63, 0xbe, 0xc8, 0x1e, 0xfb, 0xc6,
		0xc8, 0xdc, 0x62, 0x5f, 0xa3, 0xad, 0x57, 0xf4,
		0x4b, 0x25, 0x58, 0x59, 0xd9, 0x7a, 0x48, 0xfe,
	0x48, 0x75, 0xcf, 0xaf, 0x55, 0x00, 0xaa, 0xd2},
};

static se_aead *aead;

static void *
xmalloc(size_t len)
{
	void	   *p = malloc(len > 0 ? len : 1);

	if (p == NULL)
		abort();
	return p;
}

static void
require(int cond)
{
	if (!cond)
		abort();
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void) argc;
	(void) argv;
	require(se_aead_new(&aead) == SE_OK);
	return 0;
}

/* Untrusted bytes into every parser of the core. */
static void
fuzz_untrusted(const uint8_t *kek, const uint8_t *other_kek,
			   const uint8_t *wrapped, size_t wlen,
			   const uint8_t *aad, size_t alen,
			   const uint8_t *value, size_t vlen)
{
	size_t		ptlen = vlen >= SE_SEAL_OVERHEAD ? vlen - SE_SEAL_OVERHEAD : 0;
	uint8_t    *pt = xmalloc(ptlen);
	uint8_t		dek[SE_KEY_LEN];
	uint8_t		dek2[SE_KEY_LEN];
	uint8_t		rewrapped[SE_WRAPPED_DEK_LEN];
	uint8_t    *mask;
	uint8_t    *built;
	size_t		masklen;
	size_t		idlen;
	se_status	st;

	st = se_unwrap_dek(aead, kek, wrapped, wlen, dek);
	require(st == SE_OK || st == SE_ERR_LENGTH || st == SE_ERR_UNWRAP);
	require(st == SE_OK || test_all_zero(dek, sizeof(dek)));
	require(st != SE_ERR_LENGTH || wlen != SE_WRAPPED_DEK_LEN);

	st = se_envelope_open(aead, kek, wrapped, wlen, aad, alen,
						  value, vlen, pt);
	require(st == SE_OK || st == SE_ERR_LENGTH || st == SE_ERR_UNWRAP ||
			st == SE_ERR_OPEN);
	require(st == SE_OK || st == SE_ERR_LENGTH || test_all_zero(pt, ptlen));

	st = se_aead_open(aead, kek, aad, alen, value, vlen, pt);
	require(st == SE_OK || st == SE_ERR_LENGTH || st == SE_ERR_OPEN);
	require(st == SE_OK || test_all_zero(pt, ptlen));

	st = se_rewrap_dek(aead, kek, other_kek, wrapped, wlen, rewrapped);
	require(st == SE_OK || st == SE_ERR_LENGTH || st == SE_ERR_UNWRAP);
	if (st == SE_OK)
	{
		/* A rotation moves the same DEK to the other KEK. */
		require(se_unwrap_dek(aead, other_kek, rewrapped, sizeof(rewrapped),
							  dek2) == SE_OK);
		require(memcmp(dek, dek2, SE_KEY_LEN) == 0);
	}
	else
		require(test_all_zero(rewrapped, sizeof(rewrapped)));

	/* Masks of arbitrary bytes, in an exact-size buffer. */
	mask = xmalloc(se_mask_bound(vlen));
	masklen = se_mask_utf8((const char *) value, vlen, (char *) mask);
	require(masklen <= se_mask_bound(vlen));

	/* The AAD part split into an id and a name. */
	idlen = alen / 2;
	built = xmalloc(se_aad_len(idlen, alen - idlen));
	st = se_build_aad((const char *) aad, idlen,
					  (const char *) aad + idlen, alen - idlen, built);
	require((st == SE_ERR_AAD) ==
			(idlen > 0 && memchr(aad, '|', idlen) != NULL));
	require(st == SE_ERR_AAD ||
			(st == SE_OK && (alen == 0 || memcmp(built, aad, idlen) == 0)));

	se_wipe(dek, sizeof(dek));
	se_wipe(dek2, sizeof(dek2));
	free(pt);
	free(mask);
	free(built);
}

/* Seal what the input describes, check it opens, tamper, check it fails. */
static void
fuzz_oracle(const uint8_t *kek, const uint8_t *other_kek,
			const uint8_t *sel, size_t sellen,
			const uint8_t *aad_in, size_t alen,
			const uint8_t *value, size_t vlen)
{
	const uint8_t *dek = value;
	const uint8_t *vnonce = value + SE_KEY_LEN;
	const uint8_t *wnonce = value + SE_KEY_LEN + SE_NONCE_LEN;
	const uint8_t *pt = value + ORACLE_PREFIX;
	size_t		ptlen = vlen - ORACLE_PREFIX;
	size_t		sealedlen = ptlen + SE_SEAL_OVERHEAD;
	uint8_t    *sealed = xmalloc(sealedlen);
	uint8_t    *aad = xmalloc(alen);
	uint8_t    *back = xmalloc(ptlen);
	uint8_t		wrapped[SE_WRAPPED_DEK_LEN];
	uint8_t		rewrapped[SE_WRAPPED_DEK_LEN];
	size_t		span;
	size_t		pos;
	int			bit;
	se_status	st;

	if (alen > 0)
		memcpy(aad, aad_in, alen);
	require(se_gcm_seal_with_nonce(aead, dek, vnonce, aad, alen, pt, ptlen,
								   sealed) == SE_OK);
	require(se_gcm_seal_with_nonce(aead, kek, wnonce, NULL, 0, dek,
								   SE_KEY_LEN, wrapped) == SE_OK);
	require(se_envelope_open(aead, kek, wrapped, sizeof(wrapped), aad, alen,
							 sealed, sealedlen, back) == SE_OK);
	require(ptlen == 0 || memcmp(back, pt, ptlen) == 0);

	require(se_rewrap_dek(aead, kek, other_kek, wrapped, sizeof(wrapped),
						  rewrapped) == SE_OK);
	require(se_envelope_open(aead, other_kek, rewrapped, sizeof(rewrapped),
							 aad, alen, sealed, sealedlen, back) == SE_OK);
	require(ptlen == 0 || memcmp(back, pt, ptlen) == 0);

	/* One bit flipped anywhere in value, wrapped DEK or AAD. */
	span = sealedlen + sizeof(wrapped) + alen;
	pos = (size_t) (sellen > 0 ? sel[0] : 0) << 8 | (sellen > 1 ? sel[1] : 0);
	bit = (int) (pos & 7);
	pos = (pos >> 3) % span;
	if (pos < sealedlen)
		sealed[pos] ^= (uint8_t) (1 << bit);
	else if (pos < sealedlen + sizeof(wrapped))
		wrapped[pos - sealedlen] ^= (uint8_t) (1 << bit);
	else
		aad[pos - sealedlen - sizeof(wrapped)] ^= (uint8_t) (1 << bit);
	st = se_envelope_open(aead, kek, wrapped, sizeof(wrapped), aad, alen,
						  sealed, sealedlen, back);
	if (pos >= sealedlen && pos < sealedlen + sizeof(wrapped))
		require(st == SE_ERR_UNWRAP);
	else
		require(st == SE_ERR_OPEN);
	require(test_all_zero(back, ptlen));

	free(sealed);
	free(aad);
	free(back);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *kek;
	const uint8_t *other_kek;
	const uint8_t *p;
	size_t		rest;
	size_t		wlen;
	size_t		alen;
	uint8_t    *wrapped;
	uint8_t    *aad;
	uint8_t    *value;

	if (size < HEADER_LEN)
		return 0;
	kek = keks[data[0] & 1];
	other_kek = keks[(data[0] & 1) ^ 1];
	p = data + HEADER_LEN;
	rest = size - HEADER_LEN;
	wlen = data[1] < rest ? data[1] : rest;
	rest -= wlen;
	alen = data[2] < rest ? data[2] : rest;
	rest -= alen;

	/* Exact-size copies, so AddressSanitizer catches any overread. */
	wrapped = xmalloc(wlen);
	aad = xmalloc(alen);
	value = xmalloc(rest);
	if (wlen > 0)
		memcpy(wrapped, p, wlen);
	if (alen > 0)
		memcpy(aad, p + wlen, alen);
	if (rest > 0)
		memcpy(value, p + wlen + alen, rest);

	if ((data[0] & 2) == 0)
		fuzz_untrusted(kek, other_kek, wrapped, wlen, aad, alen, value, rest);
	else if (rest >= ORACLE_PREFIX)
		fuzz_oracle(kek, other_kek, wrapped, wlen, aad, alen, value, rest);

	free(wrapped);
	free(aad);
	free(value);
	return 0;
}
