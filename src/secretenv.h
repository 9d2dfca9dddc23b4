/*-------------------------------------------------------------------------
 *
 * secretenv.h
 *	  Declarations shared by the PostgreSQL layer of secretenv.
 *
 * The cryptographic core (src/crypto) knows nothing of PostgreSQL; the
 * files declared here are the fmgr glue, configuration, cache and triggers
 * on top of it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRETENV_H
#define SECRETENV_H

#include "fmgr.h"
#include "se_crypto.h"

/*
 * Messages raised by secretenv's C code carry their own text domain, which
 * is how the log redaction hook tells them (never secret-bearing) from
 * messages of other code that may quote its input.  As in PL/pgSQL.
 */
#undef TEXTDOMAIN
#define TEXTDOMAIN PG_TEXTDOMAIN("secretenv")

/*
 * SQLSTATEs of secretenv's own failure classes.  They are implementation-
 * defined subclasses (letters S..) of the standard classes, so handlers for
 * data_exception (22) or integrity_constraint_violation (23) catch them.
 */
#define ERRCODE_SECRETENV_MALFORMED_ENVELOPE	MAKE_SQLSTATE('2','2','S','0','1')
#define ERRCODE_SECRETENV_KEK_MISMATCH			MAKE_SQLSTATE('2','2','S','0','2')
#define ERRCODE_SECRETENV_VALUE_MISMATCH		MAKE_SQLSTATE('2','2','S','0','3')
#define ERRCODE_SECRETENV_KEK_NOT_CONFIGURED	MAKE_SQLSTATE('2','2','S','0','4')
#define ERRCODE_SECRETENV_KEK_RETIRED			MAKE_SQLSTATE('2','2','S','0','5')
#define ERRCODE_SECRETENV_IDENTITY_CHANGE		MAKE_SQLSTATE('2','3','S','0','1')

/* keyring.c: KEK configuration, derivation and lookup */
extern void se_keyring_init(void);
extern int32 se_keyring_current_version(void);
extern int32 se_keyring_previous_version(void);
extern bool se_keyring_has_version(int32 version);
extern const uint8_t *se_keyring_kek(int32 version);
extern bool se_keyring_using_default(int32 version);
extern uint64 se_keyring_generation(void);
extern const uint8_t *se_keyring_kek_if_available(int32 version);

/* engine.c: the backend's reusable AES-256-GCM engine */
extern void se_engine_init(void);
extern se_aead *se_engine(void);

/* scrub.c: wipe plaintext copies when their memory context is reset */
extern void se_wipe_at_reset(void *ptr, size_t len);
extern text *se_text_arg_scrubbed(FunctionCallInfo fcinfo, int argno);

/* errors.c: mapping core status codes to ereport */
extern void se_report_crypto_failure(se_status status, int32 kek_version,
									 const char *what) pg_attribute_noreturn();
extern void se_check_version_argument(int32 version);

/* envelope_sql.c: envelope primitives shared with the managed store */
#define UUID_TEXT_LEN 36
struct pg_uuid_t;
extern void se_uuid_to_text(const struct pg_uuid_t *uuid, char *out);
extern uint8_t *se_build_aad_from_text(const char *id, int idlen,
									   const char *name, int namelen,
									   size_t *aadlen);
extern text *se_decrypt_to_text(const uint8_t *value, size_t valuelen,
								const uint8_t *wrapped, size_t wrappedlen,
								int32 kek_version,
								const char *id, int idlen,
								const char *name, int namelen);

/*
 * The largest plaintext secret_encrypt, secret_create and secret_update
 * accept (bytes; a jsonb secret counts as its JSON text).  Reads have no
 * limit of their own: they open whatever was stored.
 */
#define SE_MAX_SECRET_VALUE_LEN ((size_t) 1024 * 1024)

/* envelope_memo.c: the columns of one secret_encrypt(...).* agree */
typedef struct SeEncryptArgs
{
	const char *value;
	size_t		valuelen;
	const char *id;
	int			idlen;
	const char *name;
	int			namelen;
} SeEncryptArgs;
extern bool se_memo_fetch(FunctionCallInfo fcinfo, const SeEncryptArgs *args,
						  Datum *envelope);
extern void se_memo_store(FunctionCallInfo fcinfo, const SeEncryptArgs *args,
						  Datum envelope);

/* cache.c: per-backend credential cache behind secret_get */
#define SE_CACHE_MAX_NAME_LEN 127	/* longer names are served uncached */
extern void se_cache_init(void);
extern void se_cache_clear_all(void);
extern bool se_cache_enabled(void);
extern text *se_cache_lookup(const char *name, int namelen);
extern void se_cache_insert(const char *name, int namelen,
							const char *pt, size_t ptlen);

/* store.c: the managed table secretenv.secrets */
extern Oid	se_secrets_relid(void);
extern Oid	se_secrets_relid_cached(void);
extern void se_forget_secrets_relid(void);

/* writers.c: transactions that changed secretenv.secrets, cluster-wide */
extern void se_writers_init(void);
extern void se_writer_started(void);
extern bool se_writers_in_flight(void);

/* drop_guard.c: no DROP EXTENSION while secrets are stored */
extern void se_drop_guard_init(void);

/* kek_retirement.c: secretenv.min_kek_version */
extern void se_retirement_init(void);
extern int32 se_min_kek_version(void);
extern bool se_kek_version_retired(int32 version);
extern void se_check_not_retired(int32 version);
extern void se_check_current_not_retired(void);

/* key_freshness.c: act on the key settings the server last loaded */
extern void se_apply_pending_key_settings(void);

/* redact.c: keeps plaintext-bearing statements out of every channel */
extern void se_redact_init(void);
extern void se_redact_note_plaintext(void);

#endif							/* SECRETENV_H */
