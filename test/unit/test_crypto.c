/*-------------------------------------------------------------------------
 *
 * test_crypto.c
 *	  Standalone unit tests of secretenv's cryptographic core.
 *
 * usage: test_crypto [VECTORS]
 *
 * VECTORS is a directory of MLflow vector JSON files, converted on the fly
 * by running vectors_to_tsv.pl, or a record file that script wrote.  It
 * defaults to the shared MLflow sample.
 *
 * Checks, by group: AES-256-GCM known answers (McGrew & Viega test cases
 * 13-16, the AES-256 ones with 96-bit IVs), PBKDF2-HMAC-SHA256 known
 * answers (RFC 7914 section 11) and the KEK salt layout, every MLflow
 * vector (KEK derivation, decryption, byte-exact deterministic seals,
 * rotation, rejections, masks), and properties: round trips, fresh
 * nonces, rejection of every bit flip and truncation, masks of arbitrary
 * bytes, secure memory (and its locks after a fork).  One line per group, then "unit: N passed, M
 * failed"; the exit status is non-zero when any check failed.
 *
 * Builds with no PostgreSQL header, against libcrypto only.
 *
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>

#include "se_crypto_internal.h"
#include "test_bytes.h"

#ifndef SE_CONVERTER
#define SE_CONVERTER "vectors_to_tsv.pl"
#endif
#ifndef SE_DEFAULT_VECTORS
#define SE_DEFAULT_VECTORS "../../../shared/vectors/mlflow"
#endif

/* AddressSanitizer's mlock does not lock, so lock checks cannot hold there. */
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

#define MLFLOW_SALT "mlflow-secrets-kek-v1-2025"
#define MAX_FIELDS 32

typedef struct
{
	uint8_t    *data;
	size_t		len;
} buf;

typedef struct
{
	const char *name;
	int			passed;
	int			failed;
	int			cases;			/* vector cases (records, for g_records) */
} group;

static group *current;
static int	total_passed;
static int	total_failed;
static se_aead *aead;

/* Groups of the MLflow vector checks, reported after all records. */
static group g_kek = {"mlflow kek", 0, 0, 0};
static group g_secrets = {"mlflow secrets", 0, 0, 0};
static group g_rotation = {"mlflow rotation", 0, 0, 0};
static group g_negative = {"mlflow negative", 0, 0, 0};
static group g_mask = {"mlflow mask", 0, 0, 0};
static group g_records = {"mlflow records", 0, 0, 0};
static int	n_rejects_flagged;
static int	n_skipped;

/* ---------- reporting ---------- */

static void
group_print(const group *g)
{
	if (g->cases > 0)
		printf("%s: %d passed, %d failed (%d %s)\n",
			   g->name, g->passed, g->failed, g->cases,
			   g == &g_records ? "records" : "cases");
	else
		printf("%s: %d passed, %d failed\n", g->name, g->passed, g->failed);
	fflush(stdout);
}

static void
check(int ok, const char *where, const char *what)
{
	if (ok)
	{
		current->passed++;
		total_passed++;
	}
	else
	{
		current->failed++;
		total_failed++;
		printf("FAIL [%s] %s: %s\n", current->name, where, what);
	}
}

/* ---------- helpers ---------- */

static void *
xmalloc(size_t len)
{
	/* Never malloc(0): tests pass these buffers to memcmp and friends. */
	void	   *p = malloc(len > 0 ? len : 1);

	if (p == NULL)
	{
		fprintf(stderr, "test_crypto: out of memory\n");
		exit(2);
	}
	return p;
}

static buf
buf_new(size_t len)
{
	buf			b;

	b.data = xmalloc(len);
	b.len = len;
	return b;
}

static void
buf_free(buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = 0;
}

/* Decode hex into a new buf; 0 when hex is not even-length hex. */
static int
unhex(const char *hex, buf *out)
{
	size_t		n = strlen(hex);
	size_t		i;

	out->data = NULL;
	out->len = 0;
	if (n % 2 != 0)
		return 0;
	*out = buf_new(n / 2);
	for (i = 0; i < n / 2; i++)
	{
		int			hi = se_hex_digit(hex[2 * i]);
		int			lo = se_hex_digit(hex[2 * i + 1]);

		if (hi < 0 || lo < 0)
		{
			buf_free(out);
			return 0;
		}
		out->data[i] = (uint8_t) (hi << 4 | lo);
	}
	return 1;
}

/* Hex that is a constant of this file: a typo is a bug here, so abort. */
static buf
H(const char *hex)
{
	buf			b;

	if (!unhex(hex, &b))
	{
		fprintf(stderr, "test_crypto: bad hex constant %s\n", hex);
		exit(2);
	}
	return b;
}

static int
bytes_eq(const uint8_t *a, size_t alen, const buf *b)
{
	return alen == b->len && (alen == 0 || memcmp(a, b->data, alen) == 0);
}

static int
has_pipe(const buf *b)
{
	return b->len > 0 && memchr(b->data, '|', b->len) != NULL;
}

/* Small deterministic generator for test inputs (not for keys). */
static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static uint32_t
rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t) (rng_state >> 16);
}

static void
rng_fill(uint8_t *p, size_t len)
{
	size_t		i;

	for (i = 0; i < len; i++)
		p[i] = (uint8_t) rng();
}

/*
 * AAD for (id, name) as MLflow builds it.  se_build_aad must agree, except
 * that it refuses an id containing '|': check that refusal and build the
 * bytes by hand, so the vector can still be opened.
 */
static buf
make_aad(const buf *id, const buf *name, const char *where)
{
	buf			aad = buf_new(se_aad_len(id->len, name->len));
	se_status	st;

	st = se_build_aad((const char *) id->data, id->len,
					  (const char *) name->data, name->len, aad.data);
	if (has_pipe(id))
	{
		check(st == SE_ERR_AAD, where, "se_build_aad refuses an id with '|'");
		memcpy(aad.data, id->data, id->len);
		aad.data[id->len] = '|';
		memcpy(aad.data + id->len + 1, name->data, name->len);
	}
	else
		check(st == SE_OK, where, "se_build_aad");
	return aad;
}

/* ---------- KEK derivation with a cache (600 000 iterations each) ---------- */

typedef struct
{
	buf			pass;
	uint32_t	version;
	se_status	status;
	uint8_t		kek[SE_KEY_LEN];
} kek_entry;

static kek_entry *kek_cache;
static size_t kek_cache_len;
static size_t kek_cache_cap;

static se_status
derive_mlflow_kek(const buf *pass, uint32_t version, uint8_t kek[SE_KEY_LEN])
{
	kek_entry  *e;
	size_t		i;

	for (i = 0; i < kek_cache_len; i++)
	{
		e = &kek_cache[i];
		if (e->version == version && bytes_eq(pass->data, pass->len, &e->pass))
		{
			memcpy(kek, e->kek, SE_KEY_LEN);
			return e->status;
		}
	}
	if (kek_cache_len == kek_cache_cap)
	{
		kek_cache_cap = kek_cache_cap ? kek_cache_cap * 2 : 16;
		kek_cache = realloc(kek_cache, kek_cache_cap * sizeof(kek_entry));
		if (kek_cache == NULL)
		{
			fprintf(stderr, "test_crypto: out of memory\n");
			exit(2);
		}
	}
	e = &kek_cache[kek_cache_len++];
	e->pass = buf_new(pass->len);
	memcpy(e->pass.data, pass->data, pass->len);
	e->version = version;
	e->status = se_derive_kek(pass->data, pass->len,
							  (const uint8_t *) MLFLOW_SALT,
							  strlen(MLFLOW_SALT), version, e->kek);
	memcpy(kek, e->kek, SE_KEY_LEN);
	return e->status;
}

static int
parse_version(const char *s, uint32_t *out)
{
	char	   *end;
	unsigned long long v;

	v = strtoull(s, &end, 10);
	if (*s == '\0' || *end != '\0' || v > UINT32_MAX)
		return 0;
	*out = (uint32_t) v;
	return 1;
}

/*
 * The KEK of a record: kek_hex when the case gives it, derived from the
 * passphrase and version otherwise.  When both are given, se_derive_kek
 * must reproduce kek_hex.
 */
static int
record_kek(const char *pass_hex, const char *version, const char *kek_hex,
		   const char *where, uint8_t kek[SE_KEY_LEN])
{
	buf			pass;
	buf			given;
	uint32_t	v;
	uint8_t		derived[SE_KEY_LEN];
	int			have_given = strcmp(kek_hex, "-") != 0;
	int			ok = 1;

	if (have_given)
	{
		if (!unhex(kek_hex, &given) || given.len != SE_KEY_LEN)
		{
			check(0, where, "kek_hex is 32 bytes of hex");
			return 0;
		}
		memcpy(kek, given.data, SE_KEY_LEN);
	}
	if (strcmp(pass_hex, "-") != 0)
	{
		if (!unhex(pass_hex, &pass) || !parse_version(version, &v))
		{
			check(0, where, "passphrase and version parse");
			ok = 0;
		}
		else
		{
			se_status	st = derive_mlflow_kek(&pass, v, derived);

			check(st == SE_OK, where, "se_derive_kek succeeds");
			if (have_given)
				check(bytes_eq(derived, SE_KEY_LEN, &given), where,
					  "se_derive_kek reproduces kek_hex");
			else
				memcpy(kek, derived, SE_KEY_LEN);
			ok = st == SE_OK || have_given;
			buf_free(&pass);
		}
	}
	else if (!have_given)
	{
		check(0, where, "record gives a passphrase or a KEK");
		ok = 0;
	}
	if (have_given)
		buf_free(&given);
	return ok;
}

/* ---------- AES-256-GCM known answers ---------- */

typedef struct
{
	const char *name;
	const char *key;
	const char *iv;
	const char *aad;
	const char *pt;
	const char *ct;
	const char *tag;
} gcm_kat;

/*
 * McGrew & Viega, "The Galois/Counter Mode of Operation (GCM)", test cases
 * 13-16 (AES-256, 96-bit IV), the vectors NIST SP 800-38D refers to.
 * Cross-checked with python3-cryptography's AESGCM.
 */
static const gcm_kat gcm_kats[] = {
	{"test case 13 (empty)",
		"0000000000000000000000000000000000000000000000000000000000000000",
		"000000000000000000000000", "", "", "",
	"530f8afbc74536b9a963b4f1c4cb738b"},
	{"test case 14 (one block)",
		"0000000000000000000000000000000000000000000000000000000000000000",
		"000000000000000000000000", "",
		"00000000000000000000000000000000",
		"cea7403d4d606b6e074ec5d3baf39d18",
	"d0d1c8a799996bf0265b98b5d48ab919"},
	{"test case 15 (4 blocks, no AAD)",
		"feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
		"cafebabefacedbaddecaf888", "",
		"d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
		"1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
		"522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
		"8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
	"b094dac5d93471bdec1a502270e3cc6c"},
	{"test case 16 (60 bytes, AAD)",
		"feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
		"cafebabefacedbaddecaf888",
		"feedfacedeadbeeffeedfacedeadbeefabaddad2",
		"d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
		"1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
		"522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
		"8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
	"76fc6ece0f4e1768cddf8853bb2d551b"},
};

static void
test_gcm_kat(void)
{
	size_t		i;

	for (i = 0; i < sizeof(gcm_kats) / sizeof(gcm_kats[0]); i++)
	{
		const gcm_kat *t = &gcm_kats[i];
		buf			key = H(t->key);
		buf			iv = H(t->iv);
		buf			aad = H(t->aad);
		buf			pt = H(t->pt);
		buf			ct = H(t->ct);
		buf			tag = H(t->tag);
		buf			sealed = buf_new(pt.len + SE_SEAL_OVERHEAD);
		buf			back = buf_new(pt.len);
		se_status	st;

		st = se_gcm_seal_with_nonce(aead, key.data, iv.data, aad.data,
									aad.len, pt.data, pt.len, sealed.data);
		check(st == SE_OK, t->name, "seal succeeds");
		check(memcmp(sealed.data, iv.data, SE_NONCE_LEN) == 0, t->name,
			  "output starts with the nonce");
		check(bytes_eq(sealed.data + SE_NONCE_LEN, pt.len, &ct), t->name,
			  "ciphertext matches");
		check(bytes_eq(sealed.data + SE_NONCE_LEN + pt.len, SE_TAG_LEN, &tag),
			  t->name, "tag matches");

		st = se_aead_open(aead, key.data, aad.data, aad.len,
						  sealed.data, sealed.len, back.data);
		check(st == SE_OK && bytes_eq(back.data, pt.len, &pt), t->name,
			  "open returns the plaintext");

		sealed.data[sealed.len - 1] ^= 0x80;
		memset(back.data, 0xA5, back.len);
		st = se_aead_open(aead, key.data, aad.data, aad.len,
						  sealed.data, sealed.len, back.data);
		check(st == SE_ERR_OPEN, t->name, "a flipped tag bit is rejected");
		check(test_all_zero(back.data, pt.len), t->name,
			  "output wiped after a rejection");

		buf_free(&key);
		buf_free(&iv);
		buf_free(&aad);
		buf_free(&pt);
		buf_free(&ct);
		buf_free(&tag);
		buf_free(&sealed);
		buf_free(&back);
	}
}

/* ---------- PBKDF2 ---------- */

/* Raw PBKDF2-HMAC-SHA256, the reference for se_derive_kek. */
static int
pbkdf2_sha256(const char *pass, size_t passlen, const uint8_t *salt,
			  size_t saltlen, int iterations, uint8_t *out, size_t outlen)
{
	return PKCS5_PBKDF2_HMAC(pass, (int) passlen, salt, (int) saltlen,
							 iterations, EVP_sha256(), (int) outlen, out) == 1;
}

static void
test_pbkdf2(void)
{
	/* RFC 7914, section 11. */
	static const struct
	{
		const char *pass;
		const char *salt;
		int			iterations;
		const char *dk;
	}			rfc[] = {
		{"passwd", "salt", 1,
			"55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
		"49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783"},
		{"Password", "NaCl", 80000,
			"4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56"
		"a1d425a1225833549adb841b51c9b3176a272bdebba1d078478f62b397f33c8d"},
	};
	uint8_t		dk[64];
	uint8_t		kek[SE_KEY_LEN];
	uint8_t		ref[SE_KEY_LEN];
	uint8_t		salt[64];
	size_t		saltlen;
	size_t		i;
	const char *pass = "correct horse battery staple";
	const char *appsalt = "secretenv-kek-v1";

	for (i = 0; i < sizeof(rfc) / sizeof(rfc[0]); i++)
	{
		buf			want = H(rfc[i].dk);

		check(pbkdf2_sha256(rfc[i].pass, strlen(rfc[i].pass),
							(const uint8_t *) rfc[i].salt,
							strlen(rfc[i].salt), rfc[i].iterations,
							dk, sizeof(dk)) &&
			  bytes_eq(dk, sizeof(dk), &want),
			  rfc[i].pass, "RFC 7914 PBKDF2-HMAC-SHA256 vector");
		buf_free(&want);
	}

	/* se_derive_kek = PBKDF2(pass, salt || be32(version), 600000, 32). */
	saltlen = strlen(appsalt);
	memcpy(salt, appsalt, saltlen);
	memcpy(salt + saltlen, "\x80\x00\x00\x01", 4);
	check(pbkdf2_sha256(pass, strlen(pass), salt, saltlen + 4,
						SE_PBKDF2_ITERATIONS, ref, sizeof(ref)) &&
		  se_derive_kek((const uint8_t *) pass, strlen(pass),
						(const uint8_t *) appsalt, saltlen,
						0x80000001U, kek) == SE_OK &&
		  memcmp(kek, ref, SE_KEY_LEN) == 0,
		  "salt layout", "KEK = PBKDF2(pass, salt || be32(version))");

	/* Empty passphrase and salt: only the version is salted in. */
	check(pbkdf2_sha256("", 0, (const uint8_t *) "\x00\x00\x00\x07", 4,
						SE_PBKDF2_ITERATIONS, ref, sizeof(ref)) &&
		  se_derive_kek(NULL, 0, NULL, 0, 7, kek) == SE_OK &&
		  memcmp(kek, ref, SE_KEY_LEN) == 0,
		  "empty inputs", "empty passphrase and salt are accepted");
}

/* ---------- MLflow vectors ---------- */


/*
 * A buffer for the plaintext that the encrypted value ev seals (empty when
 * ev is too short to be one).
 */
static buf
plaintext_buf(const buf *ev)
{
	return buf_new(ev->len >= SE_SEAL_OVERHEAD ? ev->len - SE_SEAL_OVERHEAD : 0);
}

/* The number of buffers in an array of a record's fields. */
#define NFIELDS(bufs) ((int) (sizeof(bufs) / sizeof((bufs)[0])))

/* Free the first n buffers of a record's decoded fields. */
static void
free_fields(int n, buf **out)
{
	int			i;

	for (i = 0; i < n; i++)
		buf_free(out[i]);
}

/*
 * Decode the n consecutive hex fields of a record that start at hex; on
 * failure nothing stays allocated.
 */
static int
unhex_all(const char *where, int n, char **hex, buf **out)
{
	int			i;

	for (i = 0; i < n; i++)
	{
		if (!unhex(hex[i], out[i]))
		{
			free_fields(i, out);
			check(0, where, "hex fields decode");
			return 0;
		}
	}
	return 1;
}

/*
 * Begin a record of group g: false, after a failed check saying what, unless
 * it has nf == want fields.  A counted record adds a case to the group, and
 * its last field flags it as one MLflow rejects.
 */
static int
record_begin(group *g, char **f, int nf, int want, int counted, const char *what)
{
	current = g;
	if (nf != want)
	{
		check(0, f[1], what);
		return 0;
	}
	if (counted)
	{
		current->cases++;
		n_rejects_flagged += strcmp(f[want - 1], "1") == 0;
	}
	return 1;
}

static void
vec_kek(char **f, int nf)
{
	uint8_t		kek[SE_KEY_LEN];

	current = &g_kek;
	if (nf != 6 || strcmp(f[4], "-") == 0)
	{
		check(0, f[1], "kek record has 6 fields and a kek_hex");
		return;
	}
	current->cases++;
	n_rejects_flagged += strcmp(f[5], "1") == 0;
	record_kek(f[2], f[3], f[4], f[1], kek);
}

static void
vec_secret(char **f, int nf)
{
	const char *name = f[1];
	uint8_t		kek[SE_KEY_LEN];
	buf			id,
				sname,
				aad_given,
				pt,
				ev,
				wd;
	buf		   *bufs[] = {&id, &sname, &aad_given, &pt, &ev, &wd};
	buf			aad,
				out;
	uint8_t		dek[SE_KEY_LEN];
	se_status	st;

	if (!record_begin(&g_secrets, f, nf, 18, 1, "secret record has 18 fields"))
		return;
	if (!record_kek(f[2], f[3], f[4], name, kek) ||
		!unhex_all(name, NFIELDS(bufs), &f[5], bufs))
		return;

	/* AAD: se_build_aad must produce aad_hex (or refuse a '|' id). */
	aad = make_aad(&id, &sname, name);
	check(bytes_eq(aad.data, aad.len, &aad_given), name,
		  "id|name equals aad_hex");

	/* Decryption under the authoritative AAD. */
	out = plaintext_buf(&ev);
	st = se_envelope_open(aead, kek, wd.data, wd.len, aad_given.data,
						  aad_given.len, ev.data, ev.len, out.data);
	check(st == SE_OK, name, "se_envelope_open succeeds");
	check(st == SE_OK && bytes_eq(out.data, out.len, &pt), name,
		  "decrypts to plaintext_utf8_hex");

	st = se_unwrap_dek(aead, kek, wd.data, wd.len, dek);
	check(st == SE_OK, name, "se_unwrap_dek succeeds");
	if (strcmp(f[11], "-") != 0)
	{
		buf			dek_given;

		if (unhex(f[11], &dek_given))
		{
			check(st == SE_OK && bytes_eq(dek, SE_KEY_LEN, &dek_given), name,
				  "unwrapped DEK equals dek_hex");
			buf_free(&dek_given);
		}
		else
			check(0, name, "dek_hex decodes");
	}

	/* Deterministic cases: byte-exact known answers. */
	if (strcmp(f[12], "1") == 0)
	{
		buf			vnonce,
					wnonce;
		buf			sealed = buf_new(pt.len + SE_SEAL_OVERHEAD);
		uint8_t		wrapped[SE_WRAPPED_DEK_LEN];

		if (unhex(f[13], &vnonce) && vnonce.len == SE_NONCE_LEN &&
			unhex(f[14], &wnonce) && wnonce.len == SE_NONCE_LEN)
		{
			st = se_gcm_seal_with_nonce(aead, dek, vnonce.data, aad_given.data,
										aad_given.len, pt.data, pt.len,
										sealed.data);
			check(st == SE_OK && bytes_eq(sealed.data, sealed.len, &ev), name,
				  "deterministic seal reproduces encrypted_value");
			st = se_gcm_seal_with_nonce(aead, kek, wnonce.data, NULL, 0,
										dek, SE_KEY_LEN, wrapped);
			check(st == SE_OK && bytes_eq(wrapped, sizeof(wrapped), &wd),
				  name, "deterministic wrap reproduces wrapped_dek");
			buf_free(&vnonce);
			buf_free(&wnonce);
		}
		else
			check(0, name, "deterministic nonces are 12 bytes of hex");
		buf_free(&sealed);
	}
	se_wipe(dek, sizeof(dek));

	/* The string mask MLflow computed for this plaintext. */
	if (strcmp(f[15], "1") == 0)
	{
		buf			want;
		buf			m = buf_new(se_mask_bound(pt.len));
		size_t		mlen;

		mlen = se_mask_utf8((const char *) pt.data, pt.len, (char *) m.data);
		if (unhex(f[16], &want))
		{
			check(bytes_eq(m.data, mlen, &want), name, "mask equals masked");
			buf_free(&want);
		}
		else
			check(0, name, "masked decodes");
		buf_free(&m);
	}

	/* A fresh envelope of the same plaintext opens under the same KEK. */
	{
		buf			value = buf_new(pt.len + SE_SEAL_OVERHEAD);
		uint8_t		wrapped[SE_WRAPPED_DEK_LEN];
		buf			back = buf_new(pt.len);

		st = se_envelope_seal(aead, kek, aad.data, aad.len, pt.data, pt.len,
							  value.data, wrapped);
		check(st == SE_OK, name, "se_envelope_seal succeeds");
		st = se_envelope_open(aead, kek, wrapped, sizeof(wrapped), aad.data,
							  aad.len, value.data, value.len, back.data);
		check(st == SE_OK && bytes_eq(back.data, back.len, &pt), name,
			  "re-sealed envelope round-trips");
		buf_free(&value);
		buf_free(&back);
	}

	buf_free(&aad);
	buf_free(&out);
	free_fields(NFIELDS(bufs), bufs);
}

static void
vec_alt(char **f, int nf)
{
	const char *name = f[1];
	uint8_t		kek[SE_KEY_LEN];
	buf			id,
				sname,
				pt,
				ev,
				wd;
	buf		   *bufs[] = {&id, &sname, &pt, &ev, &wd};
	buf			aad,
				out;
	se_status	st;

	if (!record_begin(&g_secrets, f, nf, 10, 0, "alt record has 10 fields"))
		return;
	if (!record_kek(f[2], f[3], f[4], name, kek) ||
		!unhex_all(name, NFIELDS(bufs), &f[5], bufs))
		return;

	aad = make_aad(&id, &sname, name);
	out = plaintext_buf(&ev);
	st = se_envelope_open(aead, kek, wd.data, wd.len, aad.data, aad.len,
						  ev.data, ev.len, out.data);
	check(st == SE_OK && bytes_eq(out.data, out.len, &pt), name,
		  "also_decrypts_with pair opens the same ciphertext");

	buf_free(&aad);
	buf_free(&out);
	free_fields(NFIELDS(bufs), bufs);
}

/* Does wrapped open under kek, and if so to dek? */
static se_status
unwrap_status(const uint8_t *kek, const buf *wrapped, uint8_t *dek)
{
	return se_unwrap_dek(aead, kek, wrapped->data, wrapped->len, dek);
}

static void
vec_rotation(char **f, int nf)
{
	const char *name = f[1];
	uint8_t		old_kek[SE_KEY_LEN];
	uint8_t		new_kek[SE_KEY_LEN];
	buf			id,
				sname,
				ev,
				before,
				after,
				dek_given,
				pt;
	buf		   *bufs[] = {&id, &sname, &ev, &before, &after, &dek_given, &pt};
	buf			aad,
				out;
	uint8_t		dek[SE_KEY_LEN];
	uint8_t		rewrapped[SE_WRAPPED_DEK_LEN];
	se_status	st;

	if (!record_begin(&g_rotation, f, nf, 18, 1, "rotation record has 18 fields"))
		return;
	if (!record_kek(f[2], f[3], f[4], name, old_kek) ||
		!record_kek(f[5], f[6], f[7], name, new_kek) ||
		!unhex_all(name, NFIELDS(bufs), &f[8], bufs))
		return;

	aad = make_aad(&id, &sname, name);
	out = plaintext_buf(&ev);

	st = unwrap_status(old_kek, &before, dek);
	check(st == SE_OK && bytes_eq(dek, SE_KEY_LEN, &dek_given), name,
		  "before opens with the old KEK to dek_hex");
	st = se_envelope_open(aead, old_kek, before.data, before.len, aad.data,
						  aad.len, ev.data, ev.len, out.data);
	check(st == SE_OK && bytes_eq(out.data, out.len, &pt), name,
		  "encrypted_value decrypts under before and the old KEK");

	st = unwrap_status(new_kek, &after, dek);
	check(st == SE_OK && bytes_eq(dek, SE_KEY_LEN, &dek_given), name,
		  "after opens with the new KEK to dek_hex");
	st = se_envelope_open(aead, new_kek, after.data, after.len, aad.data,
						  aad.len, ev.data, ev.len, out.data);
	check(st == SE_OK && bytes_eq(out.data, out.len, &pt), name,
		  "encrypted_value decrypts under after and the new KEK");

	st = unwrap_status(old_kek, &after, dek);
	check((st == SE_OK) == (strcmp(f[15], "1") == 0) &&
		  (st == SE_OK || st == SE_ERR_UNWRAP), name,
		  "after opens with the old KEK exactly when the vector says so");
	st = unwrap_status(new_kek, &before, dek);
	check((st == SE_OK) == (strcmp(f[16], "1") == 0) &&
		  (st == SE_OK || st == SE_ERR_UNWRAP), name,
		  "before opens with the new KEK exactly when the vector says so");

	/* Our own rotation: same DEK under the new KEK, fresh nonce. */
	st = se_rewrap_dek(aead, old_kek, new_kek, before.data, before.len,
					   rewrapped);
	check(st == SE_OK, name, "se_rewrap_dek succeeds");
	check(memcmp(rewrapped, before.data, SE_NONCE_LEN) != 0 &&
		  memcmp(rewrapped, after.data, SE_NONCE_LEN) != 0, name,
		  "rewrap draws a fresh nonce");
	st = se_unwrap_dek(aead, new_kek, rewrapped, sizeof(rewrapped), dek);
	check(st == SE_OK && bytes_eq(dek, SE_KEY_LEN, &dek_given), name,
		  "rewrapped DEK opens with the new KEK to the same DEK");
	st = se_envelope_open(aead, new_kek, rewrapped, sizeof(rewrapped),
						  aad.data, aad.len, ev.data, ev.len, out.data);
	check(st == SE_OK && bytes_eq(out.data, out.len, &pt), name,
		  "encrypted_value decrypts under the rewrapped DEK");
	se_wipe(dek, sizeof(dek));

	buf_free(&aad);
	buf_free(&out);
	free_fields(NFIELDS(bufs), bufs);
}

static void
vec_negative(char **f, int nf)
{
	const char *name = f[1];
	uint8_t		kek[SE_KEY_LEN];
	buf			id,
				sname,
				ev,
				wd;
	buf		   *bufs[] = {&id, &sname, &ev, &wd};
	buf			aad,
				out;
	se_status	st,
				want;

	if (!record_begin(&g_negative, f, nf, 12, 1, "negative record has 12 fields"))
		return;
	if (!record_kek(f[2], f[3], f[4], name, kek) ||
		!unhex_all(name, NFIELDS(bufs), &f[5], bufs))
		return;

	if (wd.len != SE_WRAPPED_DEK_LEN || ev.len < SE_SEAL_OVERHEAD)
		want = SE_ERR_LENGTH;
	else if (strncmp(f[10], "unwrap", 6) == 0)
		want = SE_ERR_UNWRAP;
	else
		want = SE_ERR_OPEN;

	aad = make_aad(&id, &sname, name);
	out = plaintext_buf(&ev);
	memset(out.data, 0xA5, out.len);
	st = se_envelope_open(aead, kek, wd.data, wd.len, aad.data, aad.len,
						  ev.data, ev.len, out.data);
	check(st != SE_OK, name, "rejected");
	if (st != want)
	{
		char		msg[256];

		snprintf(msg, sizeof(msg), "status is \"%s\", expected \"%s\"",
				 se_status_string(st), se_status_string(want));
		check(0, name, msg);
	}
	else
		check(1, name, "status matches the failing stage");
	check(test_all_zero(out.data, out.len), name, "output wiped");

	buf_free(&aad);
	buf_free(&out);
	free_fields(NFIELDS(bufs), bufs);
}

static void
vec_mask(char **f, int nf)
{
	const char *name = f[1];
	buf			in,
				want,
				out;
	size_t		len;

	current = &g_mask;
	if (nf != 4 || !unhex(f[2], &in))
	{
		check(0, name, "mask record has 4 fields of hex");
		return;
	}
	if (!unhex(f[3], &want))
	{
		buf_free(&in);
		check(0, name, "mask record has 4 fields of hex");
		return;
	}
	current->cases++;
	out = buf_new(se_mask_bound(in.len));
	len = se_mask_utf8((const char *) in.data, in.len, (char *) out.data);
	check(bytes_eq(out.data, len, &want), name, "mask equals masked");
	buf_free(&in);
	buf_free(&want);
	buf_free(&out);
}

/* Split a line on tabs in place, keeping empty fields. */
static int
split_tabs(char *line, char **fields)
{
	int			n = 0;
	char	   *p = line;

	for (;;)
	{
		char	   *tab = strchr(p, '\t');

		if (n == MAX_FIELDS)
			return -1;
		fields[n++] = p;
		if (tab == NULL)
			break;
		*tab = '\0';
		p = tab + 1;
	}
	return n;
}

static void
run_records(FILE *in)
{
	char	   *line = NULL;
	size_t		cap = 0;
	ssize_t		got;
	int			nrecords = 0;

	while ((got = getline(&line, &cap, in)) != -1)
	{
		char	   *f[MAX_FIELDS];
		int			nf;

		if (got > 0 && line[got - 1] == '\n')
			line[got - 1] = '\0';
		if (line[0] == '\0')
			continue;
		nrecords++;
		nf = split_tabs(line, f);
		if (nf < 2)
		{
			current = &g_records;
			check(0, line, "record has a type and a name");
		}
		else if (strcmp(f[0], "kek") == 0)
			vec_kek(f, nf);
		else if (strcmp(f[0], "secret") == 0)
			vec_secret(f, nf);
		else if (strcmp(f[0], "alt") == 0)
			vec_alt(f, nf);
		else if (strcmp(f[0], "rotation") == 0)
			vec_rotation(f, nf);
		else if (strcmp(f[0], "negative") == 0)
			vec_negative(f, nf);
		else if (strcmp(f[0], "mask") == 0)
			vec_mask(f, nf);
		else if (strcmp(f[0], "skip") == 0)
		{
			n_skipped++;
			printf("note: skipped vector %s: %s\n", f[1], nf > 2 ? f[2] : "");
		}
		else
		{
			current = &g_records;
			check(0, f[0], "known record type");
		}
	}
	free(line);

	current = &g_records;
	check(nrecords > 0, "input", "vector records were read");
	check(g_kek.cases > 0 && g_secrets.cases > 0 && g_rotation.cases > 0 &&
		  g_negative.cases > 0 && g_mask.cases > 0, "input",
		  "every vector file contributed cases");
	group_print(&g_kek);
	group_print(&g_secrets);
	group_print(&g_rotation);
	group_print(&g_negative);
	group_print(&g_mask);
	if (n_rejects_flagged > 0 || n_skipped > 0)
		printf("note: %d vector cases flagged secretenv_rejects (checked in "
			   "the core, refused by the SQL layer), %d skipped\n",
			   n_rejects_flagged, n_skipped);
	g_records.cases = nrecords;
	group_print(&g_records);
}

/* Run the converter on a vector directory and read its output. */
static void
run_vector_dir(const char *dir)
{
	int			fds[2];
	pid_t		pid;
	int			wstatus;
	FILE	   *in;

	if (pipe(fds) != 0 || (pid = fork()) < 0)
	{
		perror("test_crypto: could not start " SE_CONVERTER);
		exit(2);
	}
	if (pid == 0)
	{
		dup2(fds[1], STDOUT_FILENO);
		close(fds[0]);
		close(fds[1]);
		execlp("perl", "perl", SE_CONVERTER, dir, (char *) NULL);
		perror("test_crypto: could not run perl");
		_exit(127);
	}
	close(fds[1]);
	in = fdopen(fds[0], "r");
	if (in == NULL)
	{
		perror("test_crypto: fdopen");
		exit(2);
	}
	run_records(in);
	fclose(in);
	current = &g_records;
	check(waitpid(pid, &wstatus, 0) == pid && WIFEXITED(wstatus) &&
		  WEXITSTATUS(wstatus) == 0, dir, "vectors_to_tsv.pl succeeded");
}

static void
test_vectors(const char *path)
{
	struct stat st;

	if (stat(path, &st) != 0)
	{
		current = &g_records;
		check(0, path, "vector path exists");
		group_print(&g_records);
		return;
	}
	if (S_ISDIR(st.st_mode))
		run_vector_dir(path);
	else
	{
		FILE	   *in = fopen(path, "r");

		if (in == NULL)
		{
			current = &g_records;
			check(0, path, "vector record file opens");
			group_print(&g_records);
			return;
		}
		run_records(in);
		fclose(in);
	}
}

/* ---------- properties ---------- */

static const uint8_t prop_kek[SE_KEY_LEN] = {
	0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe,
	0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
	0xf0, 0xe1, 0xd2, 0xc3, 0xb4, 0xa5, 0x96, 0x87,
	0x78, 0x69, 0x5a, 0x4b, 0x3c, 0x2d, 0x1e, 0x0f,
};

static void
roundtrip_one(size_t ptlen)
{
	size_t		aadlen = rng() % 80;
	uint8_t    *pt = xmalloc(ptlen);
	uint8_t    *aad = xmalloc(aadlen);
	uint8_t    *value = xmalloc(ptlen + SE_SEAL_OVERHEAD);
	uint8_t    *back = xmalloc(ptlen);
	uint8_t		wrapped[SE_WRAPPED_DEK_LEN];
	char		where[64];
	se_status	st;

	snprintf(where, sizeof(where), "%zu bytes", ptlen);
	rng_fill(pt, ptlen);
	rng_fill(aad, aadlen);

	st = se_envelope_seal(aead, prop_kek, aad, aadlen, pt, ptlen,
						  value, wrapped);
	check(st == SE_OK, where, "envelope seal");
	st = se_envelope_open(aead, prop_kek, wrapped, sizeof(wrapped), aad,
						  aadlen, value, ptlen + SE_SEAL_OVERHEAD, back);
	check(st == SE_OK && (ptlen == 0 || memcmp(back, pt, ptlen) == 0),
		  where, "envelope round trip");

	st = se_aead_seal(aead, prop_kek, aad, aadlen, pt, ptlen, value);
	check(st == SE_OK, where, "aead seal");
	st = se_aead_open(aead, prop_kek, aad, aadlen, value,
					  ptlen + SE_SEAL_OVERHEAD, back);
	check(st == SE_OK && (ptlen == 0 || memcmp(back, pt, ptlen) == 0),
		  where, "aead round trip");

	free(pt);
	free(aad);
	free(value);
	free(back);
}

static void
test_roundtrip(void)
{
	size_t		n;
	int			i;

	for (n = 0; n <= 64; n++)
		roundtrip_one(n);
	for (i = 0; i < 200; i++)
		roundtrip_one(rng() % 4097);
	roundtrip_one(4096);
}

static void
test_fresh_nonces(void)
{
	static const uint8_t pt[] = "same plaintext, same key, same AAD";
	static const uint8_t aad[] = "id|name";
	uint8_t		v1[sizeof(pt) + SE_SEAL_OVERHEAD];
	uint8_t		v2[sizeof(pt) + SE_SEAL_OVERHEAD];
	uint8_t		w1[SE_WRAPPED_DEK_LEN];
	uint8_t		w2[SE_WRAPPED_DEK_LEN];
	uint8_t		r1[32];
	uint8_t		r2[32];

	check(se_envelope_seal(aead, prop_kek, aad, sizeof(aad), pt, sizeof(pt),
						   v1, w1) == SE_OK &&
		  se_envelope_seal(aead, prop_kek, aad, sizeof(aad), pt, sizeof(pt),
						   v2, w2) == SE_OK, "envelope", "two seals");
	check(memcmp(v1, v2, SE_NONCE_LEN) != 0, "envelope",
		  "value nonces differ");
	check(memcmp(v1 + SE_NONCE_LEN, v2 + SE_NONCE_LEN,
				 sizeof(v1) - SE_NONCE_LEN) != 0, "envelope",
		  "values differ (fresh DEK)");
	check(memcmp(w1, w2, sizeof(w1)) != 0, "envelope", "wrapped DEKs differ");

	check(se_aead_seal(aead, prop_kek, aad, sizeof(aad), pt, sizeof(pt),
					   v1) == SE_OK &&
		  se_aead_seal(aead, prop_kek, aad, sizeof(aad), pt, sizeof(pt),
					   v2) == SE_OK &&
		  memcmp(v1, v2, SE_NONCE_LEN) != 0 && memcmp(v1, v2, sizeof(v1)) != 0,
		  "aead", "same key and input, different nonce and ciphertext");

	check(se_random_bytes(r1, sizeof(r1)) == SE_OK &&
		  se_random_bytes(r2, sizeof(r2)) == SE_OK &&
		  memcmp(r1, r2, sizeof(r1)) != 0, "random", "two draws differ");
	check(se_random_bytes(r1, 0) == SE_OK, "random", "zero bytes");
}

static void
test_tamper(void)
{
	enum
	{
		PTLEN = 37
	};
	static const uint8_t aad0[] = "2b0c1b9e-0e6f-4d8a-9a7e-5c7f1e0d2a11|api";
	uint8_t		pt[PTLEN];
	uint8_t		aad[sizeof(aad0)];
	uint8_t		value[PTLEN + SE_SEAL_OVERHEAD];
	uint8_t		wrapped[SE_WRAPPED_DEK_LEN];
	uint8_t		longer[PTLEN + SE_SEAL_OVERHEAD + 1];
	uint8_t		wlonger[SE_WRAPPED_DEK_LEN + 1];
	uint8_t		out[PTLEN + 1];
	uint8_t		dek[SE_KEY_LEN];
	uint8_t		other_kek[SE_KEY_LEN];
	uint8_t		rewrapped[SE_WRAPPED_DEK_LEN];
	size_t		i;
	int			ok;

	rng_fill(pt, sizeof(pt));
	memcpy(aad, aad0, sizeof(aad));
	memcpy(other_kek, prop_kek, sizeof(other_kek));
	other_kek[0] ^= 1;
	check(se_envelope_seal(aead, prop_kek, aad, sizeof(aad), pt, sizeof(pt),
						   value, wrapped) == SE_OK, "setup", "seal");

	/* Every single-bit flip of the value fails the tag check. */
	ok = 1;
	for (i = 0; i < sizeof(value) * 8; i++)
	{
		value[i / 8] ^= (uint8_t) (1 << (i % 8));
		memset(out, 0xA5, sizeof(out));
		if (se_envelope_open(aead, prop_kek, wrapped, sizeof(wrapped), aad,
							 sizeof(aad), value, sizeof(value),
							 out) != SE_ERR_OPEN ||
			!test_all_zero(out, PTLEN))
			ok = 0;
		value[i / 8] ^= (uint8_t) (1 << (i % 8));
	}
	check(ok, "value", "every bit flip gives SE_ERR_OPEN and a wiped output");

	ok = 1;
	for (i = 0; i < sizeof(wrapped) * 8; i++)
	{
		wrapped[i / 8] ^= (uint8_t) (1 << (i % 8));
		memset(out, 0xA5, sizeof(out));
		if (se_envelope_open(aead, prop_kek, wrapped, sizeof(wrapped), aad,
							 sizeof(aad), value, sizeof(value),
							 out) != SE_ERR_UNWRAP ||
			!test_all_zero(out, PTLEN) ||
			se_unwrap_dek(aead, prop_kek, wrapped, sizeof(wrapped),
						  dek) != SE_ERR_UNWRAP ||
			!test_all_zero(dek, sizeof(dek)))
			ok = 0;
		wrapped[i / 8] ^= (uint8_t) (1 << (i % 8));
	}
	check(ok, "wrapped DEK", "every bit flip gives SE_ERR_UNWRAP");

	ok = 1;
	for (i = 0; i < sizeof(aad) * 8; i++)
	{
		aad[i / 8] ^= (uint8_t) (1 << (i % 8));
		if (se_envelope_open(aead, prop_kek, wrapped, sizeof(wrapped), aad,
							 sizeof(aad), value, sizeof(value),
							 out) != SE_ERR_OPEN)
			ok = 0;
		aad[i / 8] ^= (uint8_t) (1 << (i % 8));
	}
	check(ok, "AAD", "every bit flip gives SE_ERR_OPEN");
	check(se_envelope_open(aead, prop_kek, wrapped, sizeof(wrapped), aad,
						   sizeof(aad) - 1, value, sizeof(value),
						   out) == SE_ERR_OPEN, "AAD", "shortened AAD");
	check(se_envelope_open(aead, other_kek, wrapped, sizeof(wrapped), aad,
						   sizeof(aad), value, sizeof(value),
						   out) == SE_ERR_UNWRAP, "KEK", "wrong KEK");

	/* Every truncation, and one extra byte, is rejected. */
	ok = 1;
	for (i = 0; i < sizeof(value); i++)
	{
		se_status	want = i < SE_SEAL_OVERHEAD ? SE_ERR_LENGTH : SE_ERR_OPEN;

		if (se_envelope_open(aead, prop_kek, wrapped, sizeof(wrapped), aad,
							 sizeof(aad), value, i, out) != want ||
			se_aead_open(aead, prop_kek, aad, sizeof(aad), value, i,
						 out) != want)
			ok = 0;
	}
	check(ok, "value", "every truncation rejected (length, then tag)");
	memcpy(longer, value, sizeof(value));
	longer[sizeof(value)] = 0;
	check(se_envelope_open(aead, prop_kek, wrapped, sizeof(wrapped), aad,
						   sizeof(aad), longer, sizeof(longer),
						   out) == SE_ERR_OPEN, "value", "one extra byte");

	ok = 1;
	for (i = 0; i < sizeof(wrapped); i++)
	{
		if (se_envelope_open(aead, prop_kek, wrapped, i, aad, sizeof(aad),
							 value, sizeof(value), out) != SE_ERR_LENGTH ||
			se_unwrap_dek(aead, prop_kek, wrapped, i, dek) != SE_ERR_LENGTH ||
			se_rewrap_dek(aead, prop_kek, other_kek, wrapped, i,
						  rewrapped) != SE_ERR_LENGTH)
			ok = 0;
	}
	check(ok, "wrapped DEK", "every truncation gives SE_ERR_LENGTH");
	memcpy(wlonger, wrapped, sizeof(wrapped));
	wlonger[sizeof(wrapped)] = 0;
	check(se_unwrap_dek(aead, prop_kek, wlonger, sizeof(wlonger),
						dek) == SE_ERR_LENGTH &&
		  se_envelope_open(aead, prop_kek, wlonger, sizeof(wlonger), aad,
						   sizeof(aad), value, sizeof(value),
						   out) == SE_ERR_LENGTH,
		  "wrapped DEK", "61 bytes gives SE_ERR_LENGTH");

	/* Rotation keeps the DEK, moves it to the new KEK only. */
	check(se_rewrap_dek(aead, prop_kek, other_kek, wrapped, sizeof(wrapped),
						rewrapped) == SE_OK, "rewrap", "succeeds");
	check(se_envelope_open(aead, other_kek, rewrapped, sizeof(rewrapped), aad,
						   sizeof(aad), value, sizeof(value), out) == SE_OK &&
		  memcmp(out, pt, PTLEN) == 0, "rewrap", "opens under the new KEK");
	check(se_unwrap_dek(aead, prop_kek, rewrapped, sizeof(rewrapped),
						dek) == SE_ERR_UNWRAP, "rewrap",
		  "does not open under the old KEK");
	memset(rewrapped, 0xA5, sizeof(rewrapped));
	check(se_rewrap_dek(aead, other_kek, prop_kek, wrapped, sizeof(wrapped),
						rewrapped) == SE_ERR_UNWRAP &&
		  test_all_zero(rewrapped, sizeof(rewrapped)), "rewrap",
		  "wrong old KEK gives SE_ERR_UNWRAP and a wiped output");
}

static void
test_aad(void)
{
	uint8_t		out[32];

	check(se_aad_len(3, 4) == 8, "se_aad_len", "id + 1 + name");
	check(se_aad_len(SIZE_MAX, 1) == SIZE_MAX, "se_aad_len", "saturates");
	check(se_build_aad("abc", 3, "d|e", 3, out) == SE_OK &&
		  memcmp(out, "abc|d|e", 7) == 0, "se_build_aad", "'|' in the name");
	check(se_build_aad("a|b", 3, "c", 1, out) == SE_ERR_AAD, "se_build_aad",
		  "'|' in the id");
	check(se_build_aad("|", 1, "", 0, out) == SE_ERR_AAD, "se_build_aad",
		  "id that is just '|'");
	check(se_build_aad(NULL, 0, NULL, 0, out) == SE_OK && out[0] == '|',
		  "se_build_aad", "empty id and name");
}

/* Reference mask: collect code point starts, then slice. */
static size_t
ref_mask(const uint8_t *s, size_t len, uint8_t *out)
{
	size_t	   *starts = xmalloc((len + 1) * sizeof(size_t));
	size_t		n = 0;
	size_t		i;
	size_t		head,
				tail;

	for (i = 0; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xBF)
			starts[n++] = i;
	if (n < 8)
	{
		free(starts);
		memcpy(out, "***", 3);
		return 3;
	}
	head = starts[3];
	tail = starts[n - 4];
	free(starts);
	memcpy(out, s, head);
	memcpy(out + head, "...", 3);
	memcpy(out + head + 3, s + tail, len - tail);
	return head + 3 + len - tail;
}

static void
test_mask(void)
{
	static const struct
	{
		const char *in;
		const char *want;
	}			cases[] = {
		{"", "***"},
		{"1234567", "***"},
		{"12345678", "123...5678"},
		{"123456789", "123...6789"},
		{"\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87" "123", "***"},
		{"\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87" "1234",
		"\xd0\xba\xd0\xbb\xd1\x8e...1234"},
		/* astral characters (4-byte sequences) */
		{"\xf0\x9f\x94\x91\xf0\x9f\x94\x91\xf0\x9f\x94\x91\xf0\x9f\x94\x91"
			"\xf0\x9f\x94\x91\xf0\x9f\x94\x91\xf0\x9f\x94\x91\xf0\x9f\x94\x91",
			"\xf0\x9f\x94\x91\xf0\x9f\x94\x91\xf0\x9f\x94\x91..."
		"\xf0\x9f\x94\x91\xf0\x9f\x94\x91\xf0\x9f\x94\x91\xf0\x9f\x94\x91"},
		/* combining mark: counted as its own code point, as in Python */
		{"e\xcc\x81" "abcdef", "e\xcc\x81" "a...cdef"},
		/* invalid: only continuation bytes, no code point starts */
		{"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80", "***"},
		/* leading continuation bytes join the first code point */
		{"\x80\x80" "abcdefgh", "\x80\x80" "abc...efgh"},
		/* truncated sequence at the end stays whole */
		{"abcdefg\xe2\x82", "abc...efg\xe2\x82"},
		/* bytes that are never valid UTF-8 count as code points */
		{"\xff\xff\xff\xff\xff\xff\xff\xff",
		"\xff\xff\xff...\xff\xff\xff\xff"},
		{"\xff\xfe\xc0\xc1\xf5\xf8\xfc", "***"},
	};
	size_t		i;
	int			ok;
	int			n;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
	{
		size_t		len = strlen(cases[i].in);
		char	   *out = xmalloc(se_mask_bound(len));
		size_t		got = se_mask_utf8(cases[i].in, len, out);
		char		where[32];

		snprintf(where, sizeof(where), "edge case %zu", i);
		check(got == strlen(cases[i].want) &&
			  memcmp(out, cases[i].want, got) == 0, where, "mask");
		free(out);
	}
	check(se_mask_bound(0) == 3 && se_mask_bound(8) == 11, "se_mask_bound",
		  "len + 3");

	/*
	 * Arbitrary bytes, biased towards UTF-8 structure, in exact-size heap
	 * buffers so that AddressSanitizer sees any overrun: always within
	 * se_mask_bound, always equal to the reference.
	 */
	ok = 1;
	for (n = 0; n < 20000; n++)
	{
		static const uint8_t alphabet[] = {
			'a', 'Z', '0', 0x80, 0x8F, 0xBF, 0xC3, 0xD0, 0xE2, 0xF0, 0xFF
		};
		size_t		len = rng() % 40;
		uint8_t    *in = xmalloc(len);
		uint8_t    *out = xmalloc(se_mask_bound(len));
		uint8_t    *ref = xmalloc(len + 3);
		size_t		got,
					want;
		size_t		j;

		for (j = 0; j < len; j++)
			in[j] = rng() % 2 ? alphabet[rng() % sizeof(alphabet)]
				: (uint8_t) rng();
		got = se_mask_utf8((const char *) in, len, (char *) out);
		want = ref_mask(in, len, ref);
		if (got > se_mask_bound(len) || got != want ||
			memcmp(out, ref, got) != 0)
			ok = 0;
		free(in);
		free(out);
		free(ref);
	}
	check(ok, "random bytes", "mask within bound and equal to the reference");
}

static void
test_secure_memory(void)
{
	long		page = sysconf(_SC_PAGESIZE);
	size_t		sizes[5];
	size_t		i;
	int			nlocked = 0;

	sizes[0] = 1;
	sizes[1] = SE_KEY_LEN;
	sizes[2] = (size_t) page;
	sizes[3] = (size_t) page + 1;
	sizes[4] = 3 * (size_t) page;
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
	{
		int			locked = -1;
		size_t		maplen = (sizes[i] + page - 1) / page * page;
		uint8_t    *p = se_secure_alloc(sizes[i], &locked);
		char		where[32];

		snprintf(where, sizeof(where), "%zu bytes", sizes[i]);
		check(p != NULL, where, "allocated");
		if (p == NULL)
			continue;
		check((uintptr_t) p % (uintptr_t) page == 0, where, "page-aligned");
		check(test_all_zero(p, maplen), where, "zeroed, up to the page end");
		check(locked == 0 || locked == 1, where, "*locked is set");
		nlocked += locked == 1;
		memset(p, 0x5A, maplen);
		check(p[maplen - 1] == 0x5A, where, "writable to the page end");
		se_secure_free(p, sizes[i]);
	}
	check(se_secure_alloc(0, NULL) == NULL, "0 bytes", "refused");
	se_secure_free(NULL, 16);
	check(1, "NULL", "se_secure_free(NULL) is a no-op");
	printf("note: mlock succeeded for %d of %zu secure allocations\n",
		   nlocked, sizeof(sizes) / sizeof(sizes[0]));
}

/*
 * The VmFlags of the mapping that holds p, from /proc/self/smaps: *lo is
 * whether its pages are locked ("lo"), *dd whether it is excluded from core
 * dumps ("dd").  The kernel splits a mapping wherever mlock or madvise
 * change part of it, so the flags of the mapping are those of every page
 * in it.  Returns 0 when the mapping or its flags were not found.
 */
static int
vma_flags(const void *p, int *lo, int *dd)
{
	FILE	   *f = fopen("/proc/self/smaps", "r");
	char		line[512];
	int			inside = 0;
	int			found = 0;

	if (f == NULL)
		return 0;
	while (fgets(line, sizeof(line), f) != NULL)
	{
		unsigned long start,
					end;

		if (sscanf(line, "%lx-%lx ", &start, &end) == 2 && strchr(line, '-') < strchr(line, ' '))
			inside = (uintptr_t) p >= start && (uintptr_t) p < end;
		else if (inside && strncmp(line, "VmFlags:", 8) == 0)
		{
			*lo = strstr(line, " lo") != NULL;
			*dd = strstr(line, " dd") != NULL;
			found = 1;
			break;
		}
	}
	fclose(f);
	return found;
}

/* Does the locked report equal what the kernel says of every region? */
static int
report_is_true(void *const *ptrs, int n)
{
	int			all = 1;

	for (int i = 0; i < n; i++)
	{
		int			lo = 0,
					dd = 0;

		if (!vma_flags(ptrs[i], &lo, &dd))
			return 0;
		all = all && lo;
	}
	return se_secure_memory_locked() == all;
}

/*
 * Child side of the fork test: one byte per finding, written to fd.
 *	[0] the report equals the kernel's truth after fork
 *	[1] the inherited region is locked in the child
 *	[2] the inherited region is still MADV_DONTDUMP in the child
 *	[3] with RLIMIT_MEMLOCK 0, a new region's lock state is reported truly
 *	[4] ... and the report is false if that region could not be locked
 *	[5] in a grandchild forked then, the report is true again of it
 *	[6] once that region is freed, it no longer counts in the report
 */
static void
secure_fork_child(void *inherited, int fd)
{
	unsigned char r[7];
	struct rlimit none = {0, 0};
	void	   *ptrs[2];
	void	   *fresh;
	int			lo = 0,
				dd = 0;
	int			fresh_locked = -1;
	pid_t		pid;
	int			status;

	ptrs[0] = inherited;
	r[0] = report_is_true(ptrs, 1);
	r[1] = vma_flags(inherited, &lo, &dd) && lo;
	r[2] = dd;

	/* Without CAP_IPC_LOCK, a zero limit makes the next mlock fail. */
	(void) setrlimit(RLIMIT_MEMLOCK, &none);
	fresh = se_secure_alloc(1, &fresh_locked);
	ptrs[1] = fresh;
	r[3] = fresh != NULL && report_is_true(ptrs, 2);
	r[4] = fresh != NULL && (fresh_locked == 1 || se_secure_memory_locked() == 0);

	pid = fork();
	if (pid == 0)
		_exit(report_is_true(ptrs, 2) ? 0 : 1);
	r[5] = pid > 0 && waitpid(pid, &status, 0) == pid &&
		WIFEXITED(status) && WEXITSTATUS(status) == 0;
	se_secure_free(fresh, 1);
	r[6] = report_is_true(ptrs, 1);
	_exit(write(fd, r, sizeof(r)) == (ssize_t) sizeof(r) ? 0 : 1);
}

/*
 * mlock is not inherited by fork: the registry locks every secure region
 * again in the child, and the report of the calling process is the truth
 * as /proc/self/smaps tells it, whether locking succeeded or not.
 */
static void
test_secure_memory_fork(void)
{
	if (UNDER_ASAN)
	{
		/* AddressSanitizer's mlock interceptor returns 0 without locking. */
		printf("note: lock checks after fork skipped under AddressSanitizer\n");
		return;
	}
	void	   *region = se_secure_alloc(3 * 4096, NULL);
	void	   *ptrs[1];
	unsigned char r[7];
	int			fds[2];
	pid_t		pid;
	int			status;
	int			lo = 0,
				dd = 0;

	check(region != NULL, "secure fork", "allocated");
	if (region == NULL)
		return;
	ptrs[0] = region;
	check(vma_flags(region, &lo, &dd), "secure fork", "mapping found in /proc/self/smaps");
	check(dd, "secure fork", "parent: MADV_DONTDUMP (dd) set");
	check(report_is_true(ptrs, 1), "secure fork", "parent: locked report equals the kernel's");
	printf("note: secure memory locked in the parent: %s\n", lo ? "yes" : "no");

	memset(r, 0, sizeof(r));
	check(pipe(fds) == 0, "secure fork", "pipe");
	pid = fork();
	if (pid == 0)
	{
		close(fds[0]);
		secure_fork_child(region, fds[1]);
	}
	check(pid > 0, "secure fork", "fork");
	close(fds[1]);
	check(read(fds[0], r, sizeof(r)) == (ssize_t) sizeof(r), "secure fork", "child findings");
	close(fds[0]);
	check(waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
		  WEXITSTATUS(status) == 0, "secure fork", "child exits cleanly");
	check(r[0], "secure fork", "child: locked report equals the kernel's");
	/* Same limit in the child as in the parent: what locked there locks here. */
	check(!lo || r[1], "secure fork", "child: the inherited region is locked again");
	check(r[2], "secure fork", "child: MADV_DONTDUMP is inherited");
	check(r[3], "secure fork", "child, RLIMIT_MEMLOCK 0: report equals the kernel's");
	check(r[4], "secure fork", "child, RLIMIT_MEMLOCK 0: an unlocked region makes the report false");
	check(r[5], "secure fork", "grandchild: report equals the kernel's");
	check(r[6], "secure fork", "child: a freed region leaves the report");
	se_secure_free(region, 3 * 4096);
}

/*
 * Identity tags: HMAC-SHA256(key, domain || data) truncated to 16 bytes,
 * known answers computed with Python's hmac module; equal inputs agree,
 * a different domain, key or input does not.
 */
static void
test_identity_tag(void)
{
	uint8_t		key[SE_KEY_LEN];
	uint8_t		t1[SE_IDENTITY_TAG_LEN];
	uint8_t		t2[SE_IDENTITY_TAG_LEN];
	buf			want1 = H("ca8b20c60a0ddb9a87bf292a5f08c6f9");
	buf			want2 = H("be50ddd42cbf202ab9dcd497caceb3af");

	for (int i = 0; i < SE_KEY_LEN; i++)
		key[i] = (uint8_t) i;
	check(se_identity_tag(key, 'p', (const uint8_t *) "passphrase", 10, t1) == SE_OK &&
		  bytes_eq(t1, sizeof(t1), &want1), "identity tag", "known answer");
	check(se_identity_tag(key, 'c', NULL, 0, t2) == SE_OK &&
		  bytes_eq(t2, sizeof(t2), &want2), "identity tag", "known answer, empty input");
	check(se_identity_tag(key, 'p', (const uint8_t *) "passphrase", 10, t2) == SE_OK &&
		  memcmp(t1, t2, sizeof(t1)) == 0, "identity tag", "deterministic");
	check(se_identity_tag(key, 'c', (const uint8_t *) "passphrase", 10, t2) == SE_OK &&
		  memcmp(t1, t2, sizeof(t1)) != 0, "identity tag", "domain separates");
	key[0] ^= 1;
	check(se_identity_tag(key, 'p', (const uint8_t *) "passphrase", 10, t2) == SE_OK &&
		  memcmp(t1, t2, sizeof(t1)) != 0, "identity tag", "key separates");
	buf_free(&want1);
	buf_free(&want2);
}

static void
test_api(void)
{
	se_status	all[] = {SE_OK, SE_ERR_OPENSSL, SE_ERR_NOMEM, SE_ERR_RANDOM,
		SE_ERR_LENGTH, SE_ERR_UNWRAP, SE_ERR_OPEN, SE_ERR_AAD, SE_ERR_UNAVAILABLE};
	size_t		n = sizeof(all) / sizeof(all[0]);
	size_t		i,
				j;
	int			ok = 1;
	uint8_t		buf8[8] = {1, 2, 3, 4, 5, 6, 7, 8};

	for (i = 0; i < n; i++)
	{
		const char *s = se_status_string(all[i]);

		if (s == NULL || s[0] == '\0')
			ok = 0;
		for (j = 0; j < i; j++)
			if (strcmp(s, se_status_string(all[j])) == 0)
				ok = 0;
	}
	check(ok, "se_status_string", "non-empty and distinct for every status");
	ok = 1;
	check(strcmp(se_status_string((se_status) 99), "unknown status") == 0,
		  "se_status_string", "out-of-range status");

	se_wipe(buf8, sizeof(buf8));
	check(test_all_zero(buf8, sizeof(buf8)), "se_wipe", "zeroes the buffer");
	se_wipe(NULL, 8);
	check(1, "se_wipe", "NULL is a no-op");

	/* Contexts come and go without leaking (AddressSanitizer checks). */
	for (i = 0; i < 100; i++)
	{
		se_aead    *a;

		if (se_aead_new(&a) != SE_OK || a == NULL)
			ok = 0;
		se_aead_free(a);
	}
	se_aead_free(NULL);
	check(ok, "se_aead_new", "100 contexts created and freed");
}

/*
 * No provider implements AES-256-GCM (here: default properties that no
 * provider matches, as a broken OpenSSL configuration would set): the
 * engine reports SE_ERR_UNAVAILABLE, not an allocation failure, and leaves
 * no OpenSSL error behind; with the properties restored it works again.
 */
static void
test_unavailable(void)
{
	se_aead    *a = NULL;
	se_status	st;

	if (!EVP_set_default_properties(NULL, "provider=secretenv-no-such-provider"))
	{
		check(0, "se_aead_new", "could not set OpenSSL default properties");
		return;
	}
	st = se_aead_new(&a);
	check(st == SE_ERR_UNAVAILABLE, "se_aead_new", "no AES-256-GCM implementation: SE_ERR_UNAVAILABLE");
	check(a == NULL, "se_aead_new", "no engine is returned when it fails");
	check(ERR_peek_error() == 0, "se_aead_new", "no OpenSSL error is left queued");
	check(strcmp(se_status_string(st), "no loaded OpenSSL provider implements AES-256-GCM") == 0,
		  "se_status_string", "names the missing AES-256-GCM implementation");

	check(EVP_set_default_properties(NULL, "") == 1, "se_aead_new", "default properties restored");
	st = se_aead_new(&a);
	check(st == SE_OK && a != NULL, "se_aead_new", "works again once a provider implements it");
	se_aead_free(a);
}

/*
 * The random pool must never hand a forked child its parent's bytes: a
 * child and its parent drawing right after the fork get different bytes,
 * and many draws (across pool refills) never repeat a 16-byte value.
 */
static void
test_random_pool(void)
{
	uint8_t		warm[16];
	uint8_t		parent[32];
	uint8_t		child[32];
	uint8_t		seen[600][16];
	int			fds[2];
	pid_t		pid;
	int			status;
	int			repeats = 0;
	int			draw_failures = 0;

	/* Fill the pool in this process first, so the child inherits a copy. */
	check(se_random_bytes(warm, sizeof(warm)) == SE_OK, "pool", "warm-up draw");
	check(pipe(fds) == 0, "fork", "pipe");
	pid = fork();
	if (pid == 0)
	{
		ssize_t		n;

		close(fds[0]);
		if (se_random_bytes(child, sizeof(child)) != SE_OK)
			_exit(1);
		n = write(fds[1], child, sizeof(child));
		_exit(n == (ssize_t) sizeof(child) ? 0 : 1);
	}
	check(pid > 0, "fork", "fork");
	close(fds[1]);
	check(se_random_bytes(parent, sizeof(parent)) == SE_OK, "fork", "parent draw");
	check(read(fds[0], child, sizeof(child)) == (ssize_t) sizeof(child), "fork", "child draw");
	close(fds[0]);
	check(waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
		  WEXITSTATUS(status) == 0, "fork", "child exits cleanly");
	check(memcmp(parent, child, sizeof(parent)) != 0, "fork",
		  "child and parent draw different bytes after a fork");

	/* 600 x 16 bytes cross two 4 KB refills. */
	for (int i = 0; i < 600; i++)
	{
		draw_failures += se_random_bytes(seen[i], 16) != SE_OK;
		for (int j = 0; j < i; j++)
			repeats += memcmp(seen[i], seen[j], 16) == 0;
	}
	check(draw_failures == 0, "pool", "600 draws across refills succeed");
	check(repeats == 0, "pool", "no 16-byte draw repeats across refills");
}

/* KEK fingerprints: HMAC-SHA256(KEK, label), first 8 bytes (Python's hmac). */
static void
test_fingerprint(void)
{
	static const struct
	{
		const char *kek;
		const char *fingerprint;
	}			kat[] = {
		{"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
		"5d064a4cfe60fc6c"},
		{"ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
		"0260ffdf981c5f5b"},
	};
	uint8_t		fp[SE_KEK_FINGERPRINT_LEN];

	for (size_t i = 0; i < sizeof(kat) / sizeof(kat[0]); i++)
	{
		buf			kek = H(kat[i].kek);
		buf			want = H(kat[i].fingerprint);

		check(se_kek_fingerprint(kek.data, fp) == SE_OK, "fingerprint", "returns SE_OK");
		check(bytes_eq(fp, sizeof(fp), &want), "fingerprint", "matches HMAC-SHA256 reference");
		buf_free(&kek);
		buf_free(&want);
	}
}

/* Audit key and chained MACs: HMAC-SHA256 as Python's hmac computes them. */
static void
test_audit_mac(void)
{
	buf			kek = H("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
	buf			want_key = H("de8f7098faccf1a19ba73cfa917947a9b4a70f79d15375e62b9f136b4caaea86");
	buf			want1 = H("aec3582efd1ee7e1366a37b2dcc9b0c2843c276e754cbd6f3b26e3e4dcc40ad3");
	buf			want2 = H("3603db6ee03d1cf59c1a5306be75912e5787d97a019b4fd436bf24633434006b");
	uint8_t		key[SE_KEY_LEN];
	uint8_t		m1[SE_AUDIT_MAC_LEN];
	uint8_t		m2[SE_AUDIT_MAC_LEN];
	uint8_t		other[SE_AUDIT_MAC_LEN];

	check(se_audit_key(kek.data, key) == SE_OK && bytes_eq(key, sizeof(key), &want_key),
		  "audit mac", "audit key known answer");
	check(se_audit_mac(key, NULL, 0, (const uint8_t *) "record one", 10, m1) == SE_OK &&
		  bytes_eq(m1, sizeof(m1), &want1), "audit mac", "first record known answer");
	check(se_audit_mac(key, m1, sizeof(m1), (const uint8_t *) "record two", 10, m2) == SE_OK &&
		  bytes_eq(m2, sizeof(m2), &want2), "audit mac", "chained record known answer");
	check(se_audit_mac(key, m1, 5, (const uint8_t *) "record two", 10, other) == SE_ERR_LENGTH,
		  "audit mac", "a previous MAC of the wrong length is refused");
	/* Moving bytes between the previous MAC and the record changes the MAC. */
	check(se_audit_mac(key, NULL, 0, (const uint8_t *) "record two", 10, other) == SE_OK &&
		  memcmp(other, m2, sizeof(m2)) != 0, "audit mac", "the previous MAC is bound");
	check(memcmp(key, kek.data, SE_KEY_LEN) != 0, "audit mac", "the audit key is not the KEK");
	se_wipe(key, sizeof(key));

	/* A run keyed once gives the same chain, record after record. */
	{
		se_audit_mac_run *run = NULL;

		check(se_audit_mac_run_begin(kek.data, &run) == SE_OK && run != NULL,
			  "audit mac", "a run begins");
		check(se_audit_mac_run_next(run, NULL, 0, (const uint8_t *) "record one", 10, m1) == SE_OK &&
			  bytes_eq(m1, sizeof(m1), &want1), "audit mac", "a run's first record known answer");
		check(se_audit_mac_run_next(run, m1, sizeof(m1), (const uint8_t *) "record two", 10, m2) == SE_OK &&
			  bytes_eq(m2, sizeof(m2), &want2), "audit mac", "a run's chained record known answer");
		check(se_audit_mac_run_next(run, m1, sizeof(m1), (const uint8_t *) "record two", 10, other) == SE_OK &&
			  bytes_eq(other, sizeof(other), &want2), "audit mac", "a run restarts the MAC for each record");
		check(se_audit_mac_run_next(run, m1, 5, (const uint8_t *) "record two", 10, other) == SE_ERR_LENGTH,
			  "audit mac", "a run refuses a previous MAC of the wrong length");
		check(se_audit_mac_run_next(run, NULL, 0, (const uint8_t *) "record one", 10, other) == SE_OK &&
			  bytes_eq(other, sizeof(other), &want1), "audit mac", "a refused record leaves the run usable");
		se_audit_mac_run_end(run);
		se_audit_mac_run_end(NULL);
	}
	buf_free(&kek);
	buf_free(&want_key);
	buf_free(&want1);
	buf_free(&want2);
}

static void
run_group(const char *name, void (*fn) (void))
{
	group		g;

	g.name = name;
	g.passed = 0;
	g.failed = 0;
	g.cases = 0;
	current = &g;
	fn();
	group_print(&g);
}

int
main(int argc, char **argv)
{
	const char *vectors = argc > 1 ? argv[1] : SE_DEFAULT_VECTORS;
	size_t		i;

	if (argc > 2)
	{
		fprintf(stderr, "usage: %s [VECTOR_DIR | RECORD_FILE]\n", argv[0]);
		return 2;
	}
	if (se_aead_new(&aead) != SE_OK)
	{
		fprintf(stderr, "test_crypto: se_aead_new failed\n");
		return 2;
	}

	run_group("api", test_api);
	run_group("missing AES-256-GCM provider", test_unavailable);
	run_group("gcm known answers", test_gcm_kat);
	run_group("pbkdf2 known answers", test_pbkdf2);
	run_group("identity tag", test_identity_tag);
	run_group("aad", test_aad);
	run_group("round trip", test_roundtrip);
	run_group("fresh nonces", test_fresh_nonces);
	run_group("random pool", test_random_pool);
	run_group("tamper and truncation", test_tamper);
	run_group("mask", test_mask);
	run_group("secure memory", test_secure_memory);
	run_group("kek fingerprint", test_fingerprint);
	run_group("audit mac", test_audit_mac);
	run_group("secure memory after fork", test_secure_memory_fork);
	test_vectors(vectors);

	se_aead_free(aead);
	for (i = 0; i < kek_cache_len; i++)
	{
		se_wipe(kek_cache[i].kek, SE_KEY_LEN);
		buf_free(&kek_cache[i].pass);
	}
	free(kek_cache);

	printf("unit: %d passed, %d failed\n", total_passed, total_failed);
	return total_failed == 0 ? 0 : 1;
}
