/*-------------------------------------------------------------------------
 *
 * se_crypto.h
 *	  Public interface of secretenv's cryptographic core.
 *
 * The core is plain C over OpenSSL's libcrypto and deliberately includes no
 * PostgreSQL header: it is unit-tested and fuzzed on its own (see test/).
 * It never raises errors by longjmp; every function returns an se_status
 * and leaves nothing allocated and no key material behind on any path.  The
 * PostgreSQL layer maps the codes to ereport() after its own cleanup.
 *
 * Byte formats (identical to MLflow's secrets store):
 *	  KEK            = PBKDF2-HMAC-SHA256(passphrase, salt || be32(version),
 *	                   600000 iterations, 32 bytes)
 *	  encrypted_value = nonce(12) || AES-256-GCM(DEK, plaintext) || tag(16),
 *	                   AAD = secret_id "|" secret_name
 *	  wrapped_dek     = nonce(12) || AES-256-GCM(KEK, DEK)(32) || tag(16),
 *	                   no AAD
 *
 * Every nonce comes from the CSPRNG inside the core; no public entry point
 * accepts a nonce.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SE_CRYPTO_H
#define SE_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#define SE_KEY_LEN			32	/* KEK, DEK and cache bucket keys */
#define SE_NONCE_LEN		12
#define SE_TAG_LEN			16
#define SE_SEAL_OVERHEAD	(SE_NONCE_LEN + SE_TAG_LEN)	/* 28 */
#define SE_WRAPPED_DEK_LEN	(SE_NONCE_LEN + SE_KEY_LEN + SE_TAG_LEN)	/* 60 */
#define SE_PBKDF2_ITERATIONS 600000

/* Largest plaintext the core seals; keeps every length computation in range. */
#define SE_MAX_PLAINTEXT_LEN ((size_t) 0x3FFFFFFF - SE_SEAL_OVERHEAD)

typedef enum se_status
{
	SE_OK = 0,
	SE_ERR_OPENSSL,				/* a libcrypto call failed (not a verdict on data) */
	SE_ERR_NOMEM,				/* an OpenSSL allocation failed */
	SE_ERR_RANDOM,				/* the CSPRNG could not deliver bytes */
	SE_ERR_LENGTH,				/* input has a length no valid envelope has */
	SE_ERR_UNWRAP,				/* wrapped DEK does not open under this KEK */
	SE_ERR_OPEN,				/* value does not open under this DEK and AAD */
	SE_ERR_AAD,					/* secret_id contains '|', AAD would be ambiguous */
	SE_ERR_UNAVAILABLE			/* no provider implements AES-256-GCM */
} se_status;

/* Short English description of a status, without any data in it. */
extern const char *se_status_string(se_status status);

/* Wipe memory in a way the compiler may not optimise away. */
extern void se_wipe(void *ptr, size_t len);

/*
 * Reusable AES-256-GCM engine.  Owning one per process avoids allocating a
 * cipher context on every call.  Not thread-safe; PostgreSQL backends are
 * single-threaded.
 */
typedef struct se_aead se_aead;

/*
 * Create an engine into *out: SE_ERR_UNAVAILABLE when no loaded provider
 * implements AES-256-GCM (EVP_CIPHER_fetch finds none, e.g. an OpenSSL
 * configuration whose default properties no provider matches),
 * SE_ERR_NOMEM when OpenSSL cannot allocate it.  *out is NULL on failure.
 */
extern se_status se_aead_new(se_aead **out);
extern void se_aead_free(se_aead *aead);

/*
 * Seal: out receives nonce || ciphertext || tag, exactly
 * ptlen + SE_SEAL_OVERHEAD bytes.  The nonce is drawn from the CSPRNG.
 */
extern se_status se_aead_seal(se_aead *aead, const uint8_t key[SE_KEY_LEN],
							  const uint8_t *aad, size_t aadlen,
							  const uint8_t *pt, size_t ptlen, uint8_t *out);

/*
 * Open: in is nonce || ciphertext || tag; out receives inlen - 28 bytes.
 * Returns SE_ERR_LENGTH when inlen < 28 and SE_ERR_OPEN when the tag does
 * not verify; in both cases out has been wiped.
 */
extern se_status se_aead_open(se_aead *aead, const uint8_t key[SE_KEY_LEN],
							  const uint8_t *aad, size_t aadlen,
							  const uint8_t *in, size_t inlen, uint8_t *out);

/* Fill buf with len bytes from OpenSSL's CSPRNG. */
extern se_status se_random_bytes(uint8_t *buf, size_t len);

/* KEK = PBKDF2-HMAC-SHA256(pass, salt || be32(version), 600000, 32). */
extern se_status se_derive_kek(const uint8_t *pass, size_t passlen,
							   const uint8_t *salt, size_t saltlen,
							   uint32_t version, uint8_t kek[SE_KEY_LEN]);

/*
 * Fingerprint of a KEK: the first 8 bytes of HMAC-SHA256(KEK, "secretenv
 * kek fingerprint"), shown as 16 hex digits.  Two servers, or two
 * processes, compare key configurations with it; the HMAC reveals nothing
 * about the KEK.
 */
#define SE_KEK_FINGERPRINT_LEN 8
extern se_status se_kek_fingerprint(const uint8_t kek[SE_KEY_LEN],
									uint8_t out[SE_KEK_FINGERPRINT_LEN]);

/*
 * A 16-byte keyed tag (HMAC-SHA256 under key, truncated) of domain || data:
 * identifies a secret input, such as a passphrase, to whoever holds the key
 * and to nobody else.
 */
#define SE_IDENTITY_TAG_LEN 16
extern se_status se_identity_tag(const uint8_t key[SE_KEY_LEN], uint8_t domain,
								 const uint8_t *data, size_t len,
								 uint8_t out[SE_IDENTITY_TAG_LEN]);

/*
 * The access audit chain (audit_mac.c).  se_audit_key derives a KEK
 * version's audit key, HMAC-SHA256(KEK, "secretenv audit key"); the caller
 * wipes it.  se_audit_mac computes HMAC-SHA256(audit key, prev_mac ||
 * record): prevlen is 0 for the first record of a chain, else
 * SE_AUDIT_MAC_LEN (SE_ERR_LENGTH otherwise).
 *
 * A run MACs many records under one KEK's audit key, keyed once:
 * se_audit_mac_run_begin derives the key (and wipes its copy),
 * se_audit_mac_run_next computes what se_audit_mac would, and
 * se_audit_mac_run_end frees the run, cleansing the keyed state.  The run
 * lives in OpenSSL's (malloc) memory: the caller must reach _end on every
 * path, so nothing that can throw may run between _begin and _end.
 */
#define SE_AUDIT_MAC_LEN 32
extern se_status se_audit_key(const uint8_t kek[SE_KEY_LEN], uint8_t out[SE_KEY_LEN]);
extern se_status se_audit_mac(const uint8_t audit_key[SE_KEY_LEN],
							  const uint8_t *prev_mac, size_t prevlen,
							  const uint8_t *record, size_t recordlen,
							  uint8_t out[SE_AUDIT_MAC_LEN]);
typedef struct se_audit_mac_run se_audit_mac_run;
extern se_status se_audit_mac_run_begin(const uint8_t kek[SE_KEY_LEN],
										se_audit_mac_run **out);
extern se_status se_audit_mac_run_next(se_audit_mac_run *run,
									   const uint8_t *prev_mac, size_t prevlen,
									   const uint8_t *record, size_t recordlen,
									   uint8_t out[SE_AUDIT_MAC_LEN]);
extern void se_audit_mac_run_end(se_audit_mac_run *run);

/*
 * AAD = secret_id "|" secret_name.  se_aad_len gives the size of the
 * buffer; se_build_aad returns SE_ERR_AAD when secret_id contains '|'.
 */
extern size_t se_aad_len(size_t idlen, size_t namelen);
extern se_status se_build_aad(const char *id, size_t idlen,
							  const char *name, size_t namelen,
							  uint8_t *out);

/* Wrap a DEK under a KEK: out is SE_WRAPPED_DEK_LEN bytes. */
extern se_status se_wrap_dek(se_aead *aead, const uint8_t kek[SE_KEY_LEN],
							 const uint8_t dek[SE_KEY_LEN],
							 uint8_t out[SE_WRAPPED_DEK_LEN]);

/*
 * Unwrap a DEK: SE_ERR_LENGTH when wrappedlen != 60, SE_ERR_UNWRAP when the
 * tag does not verify (wrong KEK or corrupted wrapped DEK).
 */
extern se_status se_unwrap_dek(se_aead *aead, const uint8_t kek[SE_KEY_LEN],
							   const uint8_t *wrapped, size_t wrappedlen,
							   uint8_t dek[SE_KEY_LEN]);

/*
 * Encrypt a secret value: a fresh random DEK seals pt under aad into
 * value_out (ptlen + 28 bytes) and is wrapped under kek into wrapped_out.
 * The DEK is wiped before return.
 */
extern se_status se_envelope_seal(se_aead *aead, const uint8_t kek[SE_KEY_LEN],
								  const uint8_t *aad, size_t aadlen,
								  const uint8_t *pt, size_t ptlen,
								  uint8_t *value_out,
								  uint8_t wrapped_out[SE_WRAPPED_DEK_LEN]);

/*
 * Decrypt a secret value into pt_out (valuelen - 28 bytes).  Lengths are
 * checked first (SE_ERR_LENGTH), then the wrapped DEK (SE_ERR_UNWRAP), then
 * the value under the AAD (SE_ERR_OPEN).  pt_out is wiped on failure.
 */
extern se_status se_envelope_open(se_aead *aead, const uint8_t kek[SE_KEY_LEN],
								  const uint8_t *wrapped, size_t wrappedlen,
								  const uint8_t *aad, size_t aadlen,
								  const uint8_t *value, size_t valuelen,
								  uint8_t *pt_out);

/*
 * Re-wrap: open the wrapped DEK with old_kek, wrap the same DEK under
 * new_kek with a fresh nonce.  encrypted_value never changes in a rotation.
 */
extern se_status se_rewrap_dek(se_aead *aead,
							   const uint8_t old_kek[SE_KEY_LEN],
							   const uint8_t new_kek[SE_KEY_LEN],
							   const uint8_t *wrapped, size_t wrappedlen,
							   uint8_t out[SE_WRAPPED_DEK_LEN]);

/*
 * Display mask of a UTF-8 string, counting code points: fewer than 8 code
 * points give "***", otherwise the first 3 code points, "...", the last 4.
 * out must hold se_mask_bound(len) bytes; returns the mask length (no NUL
 * is written).  Bytes that are not valid UTF-8 are never split inside a
 * sequence and never read out of bounds.
 */
extern size_t se_mask_bound(size_t len);
extern size_t se_mask_utf8(const char *s, size_t len, char *out);

/*
 * Secure memory for long-lived key material: page-aligned, locked in RAM
 * where the OS allows (mlock), excluded from core dumps (MADV_DONTDUMP),
 * wiped on free.  *locked reports whether mlock succeeded.  Allocations are
 * locked again in a forked child (locks are not inherited by fork), and
 * se_secure_memory_locked says whether every live secure allocation is
 * locked in the calling process (1; also when there is none) or not (0).
 * se_secure_alloc_shared makes the same kind of memory shared with the
 * processes forked after it (MAP_SHARED, no name, no file).
 */
extern void *se_secure_alloc(size_t len, int *locked);
extern void *se_secure_alloc_shared(size_t len, int *locked);
extern void se_secure_free(void *ptr, size_t len);
extern int	se_secure_memory_locked(void);

/* The value of a hexadecimal digit (either case), or -1. */
extern int	se_hex_digit(char c);

#endif							/* SE_CRYPTO_H */
