/*-------------------------------------------------------------------------
 *
 * envelope_sql.h
 *	  SQL-callable envelope primitives, and the helpers the managed store,
 *	  the triggers, verify_secrets() and re-encryption share.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRETENV_ENVELOPE_SQL_H
#define SECRETENV_ENVELOPE_SQL_H

#include "access/tupdesc.h"
#include "fmgr.h"

#include "crypto/se_crypto.h"

/* envelope_sql.c */
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
extern se_status se_envelope_check(const uint8_t *value, size_t valuelen,
								   const uint8_t *wrapped, size_t wrappedlen,
								   int32 kek_version,
								   const char *id, int idlen,
								   const char *name, int namelen,
								   bool *utf8_ok);
extern Datum se_seal_envelope_row(TupleDesc tupdesc, const uint8_t *kek,
								  int32 kek_version,
								  const uint8_t *aad, size_t aadlen,
								  const uint8_t *pt, size_t ptlen,
								  const char *what);

/*
 * The largest plaintext secret_encrypt, secret_create and secret_update
 * accept (bytes; a jsonb secret counts as its JSON text).  Reads have no
 * limit of their own: they open whatever was stored.
 */
#define SE_MAX_SECRET_VALUE_LEN ((size_t) 1024 * 1024)

#endif							/* SECRETENV_ENVELOPE_SQL_H */
