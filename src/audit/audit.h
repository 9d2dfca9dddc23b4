/*-------------------------------------------------------------------------
 *
 * audit.h
 *	  The access audit: records of every operation on a stored secret,
 *	  queued in shared memory, written by background workers into the
 *	  HMAC-chained table secretenv.audit_log (and/or the server log).
 *
 * audit_record.c	a record: built from the session, its canonical encoding,
 *					its log line
 * audit_queue.c	the settings, the shared-memory queue, strict waits
 * audit_chain.c	appending records to this database's chain
 * audit_worker.c	the launcher and the per-database writers
 * audit_sql.c		audit_verify(), audit_purge(), audit_stats(), the write
 *					trigger and the decrypted_secrets read function
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRETENV_AUDIT_H
#define SECRETENV_AUDIT_H

#include "datatype/timestamp.h"
#include "lib/stringinfo.h"
#include "storage/latch.h"

#include "crypto/se_crypto.h"

/* Longest secret name a record keeps (names are limited to 1024 bytes). */
#define SE_AUDIT_MAX_NAME 1024
#define SE_AUDIT_UUID_LEN 16

typedef enum SeAuditOp
{
	SE_AUDIT_READ,
	SE_AUDIT_CREATE,
	SE_AUDIT_UPDATE,
	SE_AUDIT_DELETE,
	SE_AUDIT_PURGE,
	SE_AUDIT_RESTORE,
	SE_AUDIT_DESTROY,
	SE_AUDIT_STAGE,
	SE_AUDIT_PROMOTE,
	SE_AUDIT_ROLLBACK
} SeAuditOp;

typedef enum SeAuditVia
{
	SE_VIA_SECRET_GET,
	SE_VIA_CACHE,
	SE_VIA_VIEW,
	SE_VIA_TABLE,
	SE_VIA_PURGE,
	SE_VIA_DECRYPT
} SeAuditVia;

typedef enum SeAuditOutcome
{
	SE_AUDIT_OK,
	SE_AUDIT_DENIED,
	SE_AUDIT_NOT_FOUND,
	SE_AUDIT_FAILED
} SeAuditOutcome;

/* What the reading backend knows; fixed size, it travels through shared memory. */
typedef struct SeAuditRecord
{
	TimestampTz time;
	Oid			dboid;
	int32		pid;
	uint8		op;
	uint8		via;
	uint8		outcome;
	bool		has_id;
	uint8		id[SE_AUDIT_UUID_LEN];
	char		database[NAMEDATALEN];
	char		session_user[NAMEDATALEN];
	char		current_user[NAMEDATALEN];
	char		application_name[NAMEDATALEN];
	char		client_addr[64];	/* "" when none (Unix socket, worker) */
	int32		version;		/* version of the secret; 0: not known */
	int32		namelen;		/* -1: no name (a purge checkpoint) */
	char		name[SE_AUDIT_MAX_NAME];
	uint8		sink;			/* where it goes; not part of the record */
} SeAuditRecord;

/* Where a record goes (decided when it is prepared, see audit_queue.c). */
#define SE_AUDIT_SINK_NONE 0	/* not recorded: audit is off for it */
#define SE_AUDIT_SINK_QUEUE 1	/* the queue, to the table (and the log) */
#define SE_AUDIT_SINK_LOG 2		/* a log line, written by the backend */
#define SE_AUDIT_SINK_REFUSE 3	/* strict, and no durable sink: refuse */

/* A record as chained in the table. */
typedef struct SeAuditRow
{
	SeAuditRecord rec;
	int64		seq;
	int32		mac_kek_version;
	bool		has_purged_through;
	int64		purged_through;
	bool		has_anchor;
	uint8		anchor[SE_AUDIT_MAC_LEN];
	uint8		mac[SE_AUDIT_MAC_LEN];
} SeAuditRow;

/* audit_record.c */
extern const char *se_audit_op_name(int op);
extern const char *se_audit_via_name(int via);
extern const char *se_audit_outcome_name(int outcome);
extern int	se_audit_op_from_name(const char *s);
extern int	se_audit_via_from_name(const char *s);
extern int	se_audit_outcome_from_name(const char *s);
extern void se_audit_fill(SeAuditRecord *rec, SeAuditOp op, SeAuditVia via,
						  SeAuditOutcome outcome, const uint8 *id,
						  const char *name, int namelen);
extern void se_audit_encode(const SeAuditRow *row, StringInfo out);
extern void se_audit_log_line(const SeAuditRecord *rec, const SeAuditRow *row,
							  const uint8 *mac);

/* audit_queue.c: settings */
#define SE_AUDIT_OFF 0
#define SE_AUDIT_WRITES 1
#define SE_AUDIT_READS 2
#define SE_AUDIT_DEST_TABLE 0
#define SE_AUDIT_DEST_LOG 1
#define SE_AUDIT_DEST_BOTH 2
extern int	se_audit_level;
extern bool se_audit_strict;
extern int	se_audit_destination;
extern void se_audit_init(void);

/*
 * Recording one operation takes two calls.  se_audit_prepare, before the
 * operation, fills the record from the session (catalog lookups happen
 * here, never in an error path) and decides where it goes; it returns
 * false when nothing is to be recorded.  se_audit_emit, once the outcome
 * is known (also from a PG_CATCH block), hands it on without touching the
 * catalog.  A read whose plaintext is about to leave passes releases =
 * true: in strict mode se_audit_emit then returns only once the record is
 * durable, or raises 55S02; it never raises otherwise.
 */
extern bool se_audit_prepare(SeAuditRecord *rec, SeAuditOp op, SeAuditVia via,
							 const uint8 *id, const char *name, int namelen);
extern void se_audit_emit(SeAuditRecord *rec, SeAuditOutcome outcome, bool releases);

/* The outcome an error of a read means: denied, not_found or failed. */
extern SeAuditOutcome se_audit_outcome_of_error(int sqlerrcode);

/*
 * audit_sql.c: secret_decrypt() of a stored secret's envelope.  Called
 * with the id and name a decrypt binds (its AAD); when the id is a stored
 * secret's, prepares its record (returns true) for se_audit_emit.
 */
extern bool se_audit_decrypt_prepare(SeAuditRecord *rec, const char *id, int idlen,
									 const char *name, int namelen);

/* audit_sql.c: the executor hooks that record refused and failed writes */
extern void se_audit_hooks_init(void);

/* audit_queue.c, for the workers and audit_sql.c */
extern bool se_audit_queue_exists(void);
extern void se_audit_set_launcher(Latch *latch);
extern int	se_audit_databases_waiting(uint64 *writers, int max);
extern Oid	se_audit_worker_attach(uint64 writer, Latch *latch);
extern bool se_audit_worker_detach_if_idle(uint64 writer);
extern void se_audit_worker_gone(uint64 writer);
extern int	se_audit_take(Oid dboid, SeAuditRecord *recs, int *slots,
						  TransactionId *inserted_by, int max, bool *waited);
extern void se_audit_finish(const int *slots, int n, bool written);
extern void se_audit_requeue(const int *slots, int n);
extern void se_audit_mark_inserted(const int *slots, int n, TransactionId xid);
extern bool se_audit_get_head(Oid dboid, int64 *seq, uint8 *mac);
extern void se_audit_set_head(Oid dboid, int64 seq, const uint8 *mac);
extern void se_audit_count_failure(void);
extern Datum se_audit_stats_jsonb(void);

/* audit_chain.c: append to this database's chain (in a transaction) */
extern void se_audit_chain_append(SeAuditRow *rows, int n);

/* audit_worker.c */
extern void se_audit_worker_register(void);

#endif							/* SECRETENV_AUDIT_H */
