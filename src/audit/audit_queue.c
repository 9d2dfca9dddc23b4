/*-------------------------------------------------------------------------
 *
 * audit_queue.c
 *	  The audit settings, and the shared-memory queue that carries records
 *	  out of the reading transaction.
 *
 * A reader never writes its record itself: its transaction may roll back,
 * fail or be cancelled, and the record must stay.  It copies the record
 * into a slot of a fixed array in shared memory (needs
 * shared_preload_libraries) and wakes the writer of its database
 * (audit_worker.c), which inserts queued records, oldest ticket first, in
 * transactions of its own and then frees their slots.  The slot is filled
 * before the plaintext leaves secretenv; the backend's own exit (a
 * pg_terminate_backend right after the read) does not touch it.
 *
 * Strict mode (secretenv.audit_strict): the reader marks its slot as
 * waited for and sleeps on a condition variable until the writer reports
 * the record committed, for at most SE_AUDIT_STRICT_WAIT_MS; then, or
 * when the queue stays full that long, the read fails with 55S02 and no
 * plaintext leaves.  Not strict: a full queue drops the record and counts
 * it (audit_stats(), status()).
 *
 * The slots outlive a crash restart.  When any backend dies by a signal
 * the postmaster throws away PostgreSQL's shared memory and makes it anew,
 * which would lose every record queued and not yet committed, among them
 * the read of a backend killed right after it returned.  So the slots and
 * their records live apart from it, in a mapping the postmaster makes once
 * at start and every process inherits (KeptSlots).  After a crash restart
 * recover_kept_slots() keeps what was queued; a record that a writer had
 * taken is queued again with the transaction that inserted it, and the
 * next writer appends it only if that transaction did not commit, so the
 * record is neither lost nor written twice.  Slot states are stored after
 * the record they describe (a write barrier): a process killed half way
 * through a copy leaves a slot that is still free.  When the postmaster
 * exits (any shutdown, immediate included) it saves what is still queued
 * to QUEUE_FILE in the data directory, and the next start queues it again
 * and removes the file.  Only a postmaster that is killed or loses power
 * loses queued records.
 *
 * Where the table cannot be written the record goes to the server log,
 * written by the backend before the plaintext leaves: on a hot standby,
 * without preload (there is no queue; strict reads refuse instead), and in
 * a database whose extension is still 1.0 or 1.1 (no audit_log table).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/mman.h>

#include "access/transam.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port/pg_crc32c.h"
#include "storage/condition_variable.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "audit/audit.h"
#include "se_messages.h"

/*
 * Room for the reads of a busy server while a writer starts (a dynamic
 * worker, forked and connected when records wait): at 100 000 reads a
 * second, 40 ms.  1 024 slots dropped records in the benchmark whenever a
 * writer started late.  A slot's record is about 1.4 kB: 6 MB in all.
 */
#define QUEUE_SLOTS 4096
#define MAX_WRITERS 16
#define MAX_HEADS 64
#define SE_AUDIT_STRICT_WAIT_MS 5000

/* Queued records saved at the postmaster's exit, relative to the data directory. */
#define QUEUE_FILE "secretenv_audit_queue"
#define QUEUE_FILE_MAGIC 0x53455151	/* "SEQQ" */
#define QUEUE_FILE_FORMAT 1

int			se_audit_level = SE_AUDIT_READS;
bool		se_audit_strict = false;
int			se_audit_destination = SE_AUDIT_DEST_TABLE;

static const struct config_enum_entry level_options[] = {
	{"off", SE_AUDIT_OFF, false},
	{"writes", SE_AUDIT_WRITES, false},
	{"reads", SE_AUDIT_READS, false},
	{NULL, 0, false}
};

static const struct config_enum_entry destination_options[] = {
	{"table", SE_AUDIT_DEST_TABLE, false},
	{"log", SE_AUDIT_DEST_LOG, false},
	{"both", SE_AUDIT_DEST_BOTH, false},
	{NULL, 0, false}
};

typedef enum SlotState
{
	SLOT_FREE,
	SLOT_QUEUED,				/* waiting for its database's writer */
	SLOT_TAKEN,					/* being written */
	SLOT_DONE					/* written or given up; its waiter reads the result */
} SlotState;

/*
 * A slot's state, apart from its record: the scans under the lock walk
 * these small entries, never the records (about 1.4 kB each).
 */
typedef struct QueueSlot
{
	uint64		ticket;
	Oid			dboid;
	uint8		state;
	bool		waited;			/* a strict reader sleeps on it */
	bool		written;		/* SLOT_DONE: committed (else given up) */
	TransactionId inserted_by;	/* a writer's transaction that inserted it and
								 * may have committed; else invalid */
} QueueSlot;

/* The slots and their records: kept across a crash restart. */
typedef struct KeptSlots
{
	uint64		next_ticket;
	QueueSlot	slots[QUEUE_SLOTS];
	SeAuditRecord records[QUEUE_SLOTS];
} KeptSlots;

typedef struct Writer
{
	Oid			dboid;			/* InvalidOid: unused */
	Latch	   *latch;			/* NULL while starting */
	bool		idle;			/* waits for records: the next one wakes it */
	uint32		generation;		/* tells a writer from its predecessor */
} Writer;

/* The last record a writer chained in a database, since the server started. */
typedef struct ChainHead
{
	Oid			dboid;
	int64		seq;
	uint8		mac[SE_AUDIT_MAC_LEN];
} ChainHead;

typedef struct AuditQueue
{
	LWLock	   *lock;
	ConditionVariable done_cv;	/* a slot became DONE or FREE */
	Latch	   *launcher;
	int			nfree;			/* FREE slots that no one waits on */
	uint64		queued;
	uint64		written;
	uint64		dropped;
	uint64		given_up;
	uint64		write_failures;
	uint64		strict_failures;
	uint64		log_only;
	Writer		writers[MAX_WRITERS];
	ChainHead	heads[MAX_HEADS];
} AuditQueue;

static AuditQueue *queue = NULL;
static KeptSlots *kept = NULL;
static bool kept_loaded = false;	/* the postmaster's: QUEUE_FILE was read */
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* The slot this backend waits on, released if it exits while waiting. */
static int	waiting_slot = -1;
static bool exit_callback_set = false;

bool
se_audit_queue_exists(void)
{
	return queue != NULL;
}

/* ---------- the reader's side ---------- */

SeAuditOutcome
se_audit_outcome_of_error(int sqlerrcode)
{
	if (sqlerrcode == ERRCODE_INSUFFICIENT_PRIVILEGE)
		return SE_AUDIT_DENIED;
	if (sqlerrcode == ERRCODE_NO_DATA_FOUND)
		return SE_AUDIT_NOT_FOUND;
	return SE_AUDIT_FAILED;
}

/*
 * Whether this database has the 1.2 table (1.0 and 1.1 databases do not),
 * looked up once and again after any change of pg_class or pg_namespace
 * names (an extension update or drop), not on every read.
 */
typedef enum TableKnown
{
	TABLE_UNKNOWN,
	TABLE_ABSENT,
	TABLE_PRESENT
} TableKnown;

static TableKnown audit_table = TABLE_UNKNOWN;
static bool table_callback_set = false;

static void
audit_table_changed(Datum arg, int cacheid, uint32 hashvalue)
{
	audit_table = TABLE_UNKNOWN;
}

static bool
audit_table_exists(void)
{
	if (!table_callback_set)
	{
		CacheRegisterSyscacheCallback(RELNAMENSP, audit_table_changed, (Datum) 0);
		CacheRegisterSyscacheCallback(NAMESPACENAME, audit_table_changed, (Datum) 0);
		table_callback_set = true;
	}
	if (audit_table == TABLE_UNKNOWN)
	{
		Oid			nsp = get_namespace_oid("secretenv", true);

		audit_table = OidIsValid(nsp) && OidIsValid(get_relname_relid("audit_log", nsp)) ?
			TABLE_PRESENT : TABLE_ABSENT;
	}
	return audit_table == TABLE_PRESENT;
}

bool
se_audit_prepare(SeAuditRecord *rec, SeAuditOp op, SeAuditVia via,
				 const uint8 *id, const char *name, int namelen)
{
	if (se_audit_level == SE_AUDIT_OFF ||
		(op == SE_AUDIT_READ && se_audit_level != SE_AUDIT_READS))
	{
		rec->sink = SE_AUDIT_SINK_NONE;
		return false;
	}
	se_audit_fill(rec, op, via, SE_AUDIT_OK, id, name, namelen);
	if (se_audit_destination == SE_AUDIT_DEST_LOG)
		rec->sink = SE_AUDIT_SINK_LOG;
	else if (queue == NULL)
		rec->sink = se_audit_strict ? SE_AUDIT_SINK_REFUSE : SE_AUDIT_SINK_LOG;
	else if (RecoveryInProgress() || !audit_table_exists())
		rec->sink = SE_AUDIT_SINK_LOG;
	else
		rec->sink = SE_AUDIT_SINK_QUEUE;
	return true;
}

static void
release_waited_slot(int code, Datum arg)
{
	if (waiting_slot < 0 || queue == NULL)
		return;
	LWLockAcquire(queue->lock, LW_EXCLUSIVE);
	if (kept->slots[waiting_slot].state == SLOT_DONE)
	{
		kept->slots[waiting_slot].state = SLOT_FREE;
		queue->nfree++;
	}
	kept->slots[waiting_slot].waited = false;
	LWLockRelease(queue->lock);
	waiting_slot = -1;
}

static void
refuse_unrecorded(const char *why)
{
	ereport(ERROR,
			(errcode(ERRCODE_SECRETENV_AUDIT_UNAVAILABLE),
			 errmsg("could not record the read in the access audit"),
			 errdetail("%s", why),
			 errhint("secretenv.audit_strict is on: a read whose audit record cannot be made durable fails.")));
}

static Writer *
writer_of(Oid dboid)
{
	for (int i = 0; i < MAX_WRITERS; i++)
		if (queue->writers[i].dboid == dboid)
			return &queue->writers[i];
	return NULL;
}

/*
 * The latch to set for a record just queued (under the lock), or NULL:
 * the launcher's when the database has no writer; the writer's when it is
 * idle, or when a strict reader will wait for the record (that cuts a
 * writer's lingering short, see audit_worker.c).  A writer that is busy
 * takes the record on its next round without a wakeup.
 */
static Latch *
latch_to_wake(Oid dboid, bool waited)
{
	Writer	   *w = writer_of(dboid);

	if (w == NULL)
		return queue->launcher;
	if (!w->idle && !waited)
		return NULL;
	w->idle = false;
	return w->latch;
}

/*
 * Copy the record into a free slot; returns it, or -1 when the queue is
 * full (known from the count of free slots, without a scan: a full queue
 * is when the writer most needs the lock).  A record that only a strict
 * reader waits for is marked so.
 */
static int
enqueue(const SeAuditRecord *rec, bool waited)
{
	static int	hint = 0;
	Latch	   *latch = NULL;
	int			slot = -1;

	LWLockAcquire(queue->lock, LW_EXCLUSIVE);
	for (int n = 0; n < QUEUE_SLOTS && queue->nfree > 0; n++)
	{
		int			i = (hint + n) % QUEUE_SLOTS;

		if (kept->slots[i].state == SLOT_FREE && !kept->slots[i].waited)
		{
			slot = i;
			break;
		}
	}
	if (slot >= 0)
	{
		QueueSlot  *s = &kept->slots[slot];

		memcpy(&kept->records[slot], rec, sizeof(*rec));
		s->dboid = rec->dboid;
		s->ticket = ++kept->next_ticket;
		s->waited = waited;
		s->written = false;
		s->inserted_by = InvalidTransactionId;
		/* The record is whole before its slot says so (see the top). */
		pg_write_barrier();
		s->state = SLOT_QUEUED;
		queue->nfree--;
		queue->queued++;
		latch = latch_to_wake(rec->dboid, waited);
		hint = (slot + 1) % QUEUE_SLOTS;
	}
	LWLockRelease(queue->lock);
	if (latch != NULL)
		SetLatch(latch);
	return slot;
}

/*
 * A strict read gives up on its record: if the writer has not taken it
 * yet, it will say the read failed, as it did (no plaintext left).
 */
static void
mark_read_failed(int slot)
{
	LWLockAcquire(queue->lock, LW_EXCLUSIVE);
	if (kept->slots[slot].state == SLOT_QUEUED)
		kept->records[slot].outcome = SE_AUDIT_FAILED;
	LWLockRelease(queue->lock);
}

/* Sleep until the slot is DONE or the deadline passes; returns written. */
static bool
wait_for_record(int slot, TimestampTz deadline)
{
	bool		written = false;
	bool		done = false;

	if (!exit_callback_set)
	{
		before_shmem_exit(release_waited_slot, (Datum) 0);
		exit_callback_set = true;
	}
	waiting_slot = slot;
	PG_TRY();
	{
		ConditionVariablePrepareToSleep(&queue->done_cv);
		for (;;)
		{
			long		remaining;

			LWLockAcquire(queue->lock, LW_SHARED);
			done = kept->slots[slot].state == SLOT_DONE;
			written = kept->slots[slot].written;
			LWLockRelease(queue->lock);
			if (done)
				break;
			remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
			if (remaining <= 0)
				break;
			(void) ConditionVariableTimedSleep(&queue->done_cv, remaining, PG_WAIT_EXTENSION);
		}
		ConditionVariableCancelSleep();
	}
	PG_CATCH();
	{
		/* Cancelled: the record stays queued; nobody waits for it any more. */
		ConditionVariableCancelSleep();
		mark_read_failed(slot);
		release_waited_slot(0, (Datum) 0);
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (!done)
		mark_read_failed(slot);
	release_waited_slot(0, (Datum) 0);
	return done && written;
}

void
se_audit_emit(SeAuditRecord *rec, SeAuditOutcome outcome, bool releases)
{
	bool		strict = releases && se_audit_strict;
	TimestampTz deadline;
	int			slot;

	rec->outcome = outcome;
	switch (rec->sink)
	{
		case SE_AUDIT_SINK_NONE:
			return;
		case SE_AUDIT_SINK_LOG:
			se_audit_log_line(rec, NULL, NULL);
			if (queue != NULL)
			{
				LWLockAcquire(queue->lock, LW_EXCLUSIVE);
				queue->log_only++;
				LWLockRelease(queue->lock);
			}
			return;
		case SE_AUDIT_SINK_REFUSE:
			if (strict)
				refuse_unrecorded("secretenv is not in shared_preload_libraries, so no record can be made durable.");
			/* Nothing is released: a denied or failed read goes to the log. */
			se_audit_log_line(rec, NULL, NULL);
			return;
		case SE_AUDIT_SINK_QUEUE:
			break;
	}

	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), SE_AUDIT_STRICT_WAIT_MS);
	for (;;)
	{
		long		remaining;

		slot = enqueue(rec, strict);
		if (slot >= 0)
			break;
		if (!strict)
		{
			LWLockAcquire(queue->lock, LW_EXCLUSIVE);
			queue->dropped++;
			LWLockRelease(queue->lock);
			return;
		}
		/* Strict: wait for room, within the same bound. */
		remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (remaining <= 0)
		{
			ConditionVariableCancelSleep();
			LWLockAcquire(queue->lock, LW_EXCLUSIVE);
			queue->strict_failures++;
			LWLockRelease(queue->lock);
			refuse_unrecorded("The audit queue stayed full.");
		}
		(void) ConditionVariableTimedSleep(&queue->done_cv, remaining, PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
	if (!strict)
		return;
	if (!wait_for_record(slot, deadline))
	{
		LWLockAcquire(queue->lock, LW_EXCLUSIVE);
		queue->strict_failures++;
		LWLockRelease(queue->lock);
		refuse_unrecorded("The audit writer did not commit the record in time; it stays queued.");
	}
}

/* ---------- the writers' side ---------- */

void
se_audit_set_launcher(Latch *latch)
{
	LWLockAcquire(queue->lock, LW_EXCLUSIVE);
	queue->launcher = latch;
	LWLockRelease(queue->lock);
}

/*
 * Databases with queued records and no writer: each gets a writer entry,
 * named by its index and generation (the writer's argument).
 */
int
se_audit_databases_waiting(uint64 *writers, int max)
{
	int			n = 0;

	LWLockAcquire(queue->lock, LW_EXCLUSIVE);
	for (int i = 0; i < QUEUE_SLOTS && n < max; i++)
	{
		Oid			db = kept->slots[i].dboid;
		bool		known = false;
		int			free_writer = -1;

		if (kept->slots[i].state != SLOT_QUEUED)
			continue;
		for (int w = 0; w < MAX_WRITERS; w++)
		{
			if (queue->writers[w].dboid == db)
				known = true;
			else if (queue->writers[w].dboid == InvalidOid && free_writer < 0)
				free_writer = w;
		}
		if (known || free_writer < 0)
			continue;
		queue->writers[free_writer].dboid = db;
		queue->writers[free_writer].latch = NULL;
		queue->writers[free_writer].idle = false;
		queue->writers[free_writer].generation++;
		writers[n++] = ((uint64) queue->writers[free_writer].generation << 32) | free_writer;
	}
	LWLockRelease(queue->lock);
	return n;
}

static Writer *
writer_entry(uint64 writer)
{
	int			w = (int) (writer & 0xffffffff);
	uint32		generation = (uint32) (writer >> 32);

	if (w < 0 || w >= MAX_WRITERS || queue->writers[w].generation != generation ||
		queue->writers[w].dboid == InvalidOid)
		return NULL;
	return &queue->writers[w];
}

/*
 * A dead writer's records are queued again; each keeps the transaction
 * that inserted it, which the next writer asks whether it committed.
 */
static void
requeue_taken(Oid dboid)
{
	for (int i = 0; i < QUEUE_SLOTS; i++)
		if (kept->slots[i].state == SLOT_TAKEN && kept->slots[i].dboid == dboid)
			kept->slots[i].state = SLOT_QUEUED;
}

/* A writer starts: its database, or InvalidOid if its entry is gone. */
Oid
se_audit_worker_attach(uint64 writer, Latch *latch)
{
	Writer	   *entry;
	Oid			dboid = InvalidOid;

	LWLockAcquire(queue->lock, LW_EXCLUSIVE);
	entry = writer_entry(writer);
	if (entry != NULL)
	{
		entry->latch = latch;
		dboid = entry->dboid;
		/* Records a dead predecessor had taken are queued again. */
		requeue_taken(dboid);
	}
	LWLockRelease(queue->lock);
	return dboid;
}

/* Leave when nothing is queued for the database (checked under the lock). */
bool
se_audit_worker_detach_if_idle(uint64 writer)
{
	Writer	   *entry;

	LWLockAcquire(queue->lock, LW_EXCLUSIVE);
	entry = writer_entry(writer);
	if (entry != NULL)
	{
		for (int i = 0; i < QUEUE_SLOTS; i++)
			if (kept->slots[i].state == SLOT_QUEUED && kept->slots[i].dboid == entry->dboid)
			{
				LWLockRelease(queue->lock);
				return false;
			}
		entry->dboid = InvalidOid;
		entry->latch = NULL;
	}
	LWLockRelease(queue->lock);
	return true;
}

/* A writer exited or never started: free its entry, requeue what it held. */
void
se_audit_worker_gone(uint64 writer)
{
	Writer	   *entry;

	LWLockAcquire(queue->lock, LW_EXCLUSIVE);
	entry = writer_entry(writer);
	if (entry != NULL)
	{
		requeue_taken(entry->dboid);
		entry->dboid = InvalidOid;
		entry->latch = NULL;
	}
	LWLockRelease(queue->lock);
	if (queue->launcher)
		SetLatch(queue->launcher);
}

static int
compare_tickets(const void *a, const void *b)
{
	uint64		ta = kept->slots[*(const int *) a].ticket;
	uint64		tb = kept->slots[*(const int *) b].ticket;

	return ta < tb ? -1 : ta > tb ? 1 : 0;
}

/*
 * Take up to max queued records of a database, oldest ticket first; *waited
 * says whether a strict reader waits for one of them, inserted_by[i] which
 * transaction of a dead writer may already have inserted record i.
 * Taking none marks the writer idle: the next record queued wakes it.  A
 * TAKEN slot belongs to its writer alone, so the records are copied after
 * the lock is released.
 */
int
se_audit_take(Oid dboid, SeAuditRecord *recs, int *slots, TransactionId *inserted_by,
			  int max, bool *waited)
{
	int			found[QUEUE_SLOTS];
	int			n = 0;
	Writer	   *w;

	*waited = false;
	LWLockAcquire(queue->lock, LW_EXCLUSIVE);
	for (int i = 0; i < QUEUE_SLOTS; i++)
		if (kept->slots[i].state == SLOT_QUEUED && kept->slots[i].dboid == dboid)
			found[n++] = i;
	qsort(found, n, sizeof(int), compare_tickets);
	n = Min(n, max);
	for (int i = 0; i < n; i++)
	{
		kept->slots[found[i]].state = SLOT_TAKEN;
		*waited = *waited || kept->slots[found[i]].waited;
		inserted_by[i] = kept->slots[found[i]].inserted_by;
		slots[i] = found[i];
	}
	w = writer_of(dboid);
	if (w != NULL)
		w->idle = n == 0;
	LWLockRelease(queue->lock);
	for (int i = 0; i < n; i++)
		memcpy(&recs[i], &kept->records[slots[i]], sizeof(SeAuditRecord));
	return n;
}

/* The records are committed (written) or given up: wake their waiters. */
void
se_audit_finish(const int *slots, int n, bool written)
{
	LWLockAcquire(queue->lock, LW_EXCLUSIVE);
	for (int i = 0; i < n; i++)
	{
		QueueSlot  *s = &kept->slots[slots[i]];

		s->written = written;
		s->inserted_by = InvalidTransactionId;
		s->state = s->waited ? SLOT_DONE : SLOT_FREE;
		if (s->state == SLOT_FREE)
			queue->nfree++;
	}
	if (written)
		queue->written += n;
	else
		queue->given_up += n;
	LWLockRelease(queue->lock);
	ConditionVariableBroadcast(&queue->done_cv);
}

/* The batch's transaction aborted: its records are queued again. */
void
se_audit_requeue(const int *slots, int n)
{
	LWLockAcquire(queue->lock, LW_EXCLUSIVE);
	for (int i = 0; i < n; i++)
	{
		kept->slots[slots[i]].inserted_by = InvalidTransactionId;
		kept->slots[slots[i]].state = SLOT_QUEUED;
	}
	queue->write_failures++;
	LWLockRelease(queue->lock);
}

/*
 * Called just before the writer commits the transaction xid that inserted
 * these records: should it die before se_audit_finish(), the next writer
 * learns from xid whether they are in the table.
 */
void
se_audit_mark_inserted(const int *slots, int n, TransactionId xid)
{
	LWLockAcquire(queue->lock, LW_EXCLUSIVE);
	for (int i = 0; i < n; i++)
		kept->slots[slots[i]].inserted_by = xid;
	LWLockRelease(queue->lock);
}

void
se_audit_count_failure(void)
{
	LWLockAcquire(queue->lock, LW_EXCLUSIVE);
	queue->write_failures++;
	LWLockRelease(queue->lock);
}

bool
se_audit_get_head(Oid dboid, int64 *seq, uint8 *mac)
{
	bool		found = false;

	if (queue == NULL)
		return false;
	LWLockAcquire(queue->lock, LW_SHARED);
	for (int i = 0; i < MAX_HEADS; i++)
		if (queue->heads[i].dboid == dboid)
		{
			*seq = queue->heads[i].seq;
			if (mac != NULL)
				memcpy(mac, queue->heads[i].mac, SE_AUDIT_MAC_LEN);
			found = true;
			break;
		}
	LWLockRelease(queue->lock);
	return found;
}

void
se_audit_set_head(Oid dboid, int64 seq, const uint8 *mac)
{
	int			slot = -1;

	if (queue == NULL)
		return;
	LWLockAcquire(queue->lock, LW_EXCLUSIVE);
	for (int i = 0; i < MAX_HEADS; i++)
	{
		if (queue->heads[i].dboid == dboid)
		{
			slot = i;
			break;
		}
		if (slot < 0 && queue->heads[i].dboid == InvalidOid)
			slot = i;
	}
	/* More databases than heads: that one's truncation goes unnoticed. */
	if (slot >= 0 && (queue->heads[slot].dboid != dboid || queue->heads[slot].seq < seq))
	{
		queue->heads[slot].dboid = dboid;
		queue->heads[slot].seq = seq;
		memcpy(queue->heads[slot].mac, mac, SE_AUDIT_MAC_LEN);
	}
	LWLockRelease(queue->lock);
}

/* The counters audit_stats() shows. */
Datum
se_audit_stats_jsonb(void)
{
	StringInfoData s;
	uint64		c[8] = {0};
	int			queued_now = 0;

	if (queue != NULL)
	{
		LWLockAcquire(queue->lock, LW_SHARED);
		c[0] = queue->queued;
		c[1] = queue->written;
		c[2] = queue->dropped;
		c[3] = queue->given_up;
		c[4] = queue->write_failures;
		c[5] = queue->strict_failures;
		c[6] = queue->log_only;
		for (int i = 0; i < QUEUE_SLOTS; i++)
			if (kept->slots[i].state == SLOT_QUEUED || kept->slots[i].state == SLOT_TAKEN)
				queued_now++;
		LWLockRelease(queue->lock);
	}
	initStringInfo(&s);
	appendStringInfo(&s,
					 "{\"level\": \"%s\", \"strict\": %s, \"destination\": \"%s\", "
					 "\"queue\": %s, \"queue_slots\": %d, \"pending\": %d, "
					 "\"queued\": " UINT64_FORMAT ", \"written\": " UINT64_FORMAT
					 ", \"dropped\": " UINT64_FORMAT ", \"given_up\": " UINT64_FORMAT
					 ", \"write_failures\": " UINT64_FORMAT
					 ", \"strict_failures\": " UINT64_FORMAT
					 ", \"log_only\": " UINT64_FORMAT "}",
					 level_options[se_audit_level].name,
					 se_audit_strict ? "true" : "false",
					 destination_options[se_audit_destination].name,
					 queue != NULL ? "true" : "false", QUEUE_SLOTS, queued_now,
					 c[0], c[1], c[2], c[3], c[4], c[5], c[6]);
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(s.data));
}

/* ---------- shared memory and settings ---------- */

static void
audit_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(AuditQueue)));
	RequestNamedLWLockTranche("secretenv audit", 1);
}

/*
 * At the first start, after load_kept_slots(), and after a crash restart
 * (the postmaster, before any other process runs): what was queued or taken is
 * queued, each record a writer had inserted keeping its transaction.  The
 * strict readers died with the other backends without their plaintext, so
 * a record they waited for and that is not known to be committed says the
 * read failed.  Returns the number of free slots.
 */
static int
recover_kept_slots(bool restart)
{
	int			nfree = 0;
	int			requeued = 0;

	for (int i = 0; i < QUEUE_SLOTS; i++)
	{
		QueueSlot  *s = &kept->slots[i];

		if (s->state == SLOT_QUEUED || s->state == SLOT_TAKEN)
		{
			if (s->waited && !TransactionIdIsValid(s->inserted_by))
				kept->records[i].outcome = SE_AUDIT_FAILED;
			s->state = SLOT_QUEUED;
			requeued++;
		}
		else
		{
			s->state = SLOT_FREE;
			s->inserted_by = InvalidTransactionId;
			nfree++;
		}
		s->waited = false;
	}
	if (restart && requeued > 0)
		ereport(LOG,
				(errmsg_plural("secretenv kept %d queued audit record across the restart",
							   "secretenv kept %d queued audit records across the restart",
							   requeued, requeued)));
	return nfree;
}

/* ---------- kept across a restart of the server ---------- */

typedef struct QueueFileHeader
{
	uint32		magic;
	uint32		format;
	uint32		slot_size;		/* sizeof(QueueSlot) + sizeof(SeAuditRecord) */
	uint32		count;
} QueueFileHeader;

/*
 * The postmaster exits (on_proc_exit; its children drop that callback):
 * every child is gone, so what is still queued or was taken stays as it
 * is, and is written to QUEUE_FILE, oldest first, each slot with its
 * record, then a CRC-32C of all that.  Failures are logged: the server is
 * going down either way.
 */
static void
save_kept_slots(int code, Datum arg)
{
	static int	order[QUEUE_SLOTS];
	QueueFileHeader header = {QUEUE_FILE_MAGIC, QUEUE_FILE_FORMAT,
	sizeof(QueueSlot) + sizeof(SeAuditRecord), 0};
	pg_crc32c	crc;
	FILE	   *file;
	bool		ok;

	for (int i = 0; i < QUEUE_SLOTS; i++)
		if (kept->slots[i].state == SLOT_QUEUED || kept->slots[i].state == SLOT_TAKEN)
			order[header.count++] = i;
	if (header.count == 0)
		return;
	qsort(order, header.count, sizeof(int), compare_tickets);

	file = AllocateFile(QUEUE_FILE ".tmp", PG_BINARY_W);
	if (file == NULL)
	{
		ereport(LOG,
				(errcode_for_file_access(),
				 errmsg("could not save %u queued audit records: could not create file \"%s\": %m",
						header.count, QUEUE_FILE ".tmp")));
		return;
	}
	INIT_CRC32C(crc);
	COMP_CRC32C(crc, &header, sizeof(header));
	ok = fwrite(&header, sizeof(header), 1, file) == 1;
	for (uint32 i = 0; i < header.count && ok; i++)
	{
		QueueSlot  *slot = &kept->slots[order[i]];
		SeAuditRecord *rec = &kept->records[order[i]];

		COMP_CRC32C(crc, slot, sizeof(QueueSlot));
		COMP_CRC32C(crc, rec, sizeof(SeAuditRecord));
		ok = fwrite(slot, sizeof(QueueSlot), 1, file) == 1 &&
			fwrite(rec, sizeof(SeAuditRecord), 1, file) == 1;
	}
	FIN_CRC32C(crc);
	ok = ok && fwrite(&crc, sizeof(crc), 1, file) == 1;
	if (FreeFile(file) != 0)
		ok = false;
	if (!ok)
	{
		ereport(LOG,
				(errcode_for_file_access(),
				 errmsg("could not save %u queued audit records: could not write file \"%s\": %m",
						header.count, QUEUE_FILE ".tmp")));
		unlink(QUEUE_FILE ".tmp");
		return;
	}
	if (durable_rename(QUEUE_FILE ".tmp", QUEUE_FILE, LOG) == 0)
		ereport(LOG,
				(errmsg_plural("secretenv saved %u queued audit record for the next start",
							   "secretenv saved %u queued audit records for the next start",
							   header.count, header.count)));
}

/*
 * At the first start: the records a previous postmaster saved are queued
 * again, in their order, and the file is removed (a second start must not
 * queue them twice).  A file that does not check out is left aside,
 * renamed, with a WARNING: its records may be missing from the chain.
 */
static void
load_kept_slots(void)
{
	QueueFileHeader header;
	FILE	   *file;
	pg_crc32c	crc;
	pg_crc32c	stored;
	uint32		loaded = 0;
	bool		ok;

	file = AllocateFile(QUEUE_FILE, PG_BINARY_R);
	if (file == NULL)
	{
		if (errno != ENOENT)
			ereport(WARNING,
					(errcode_for_file_access(),
					 errmsg("could not read file \"%s\": %m", QUEUE_FILE),
					 errdetail("It holds audit records queued when the server last stopped.")));
		return;
	}
	INIT_CRC32C(crc);
	ok = fread(&header, sizeof(header), 1, file) == 1 &&
		header.magic == QUEUE_FILE_MAGIC && header.format == QUEUE_FILE_FORMAT &&
		header.slot_size == sizeof(QueueSlot) + sizeof(SeAuditRecord) &&
		header.count <= QUEUE_SLOTS;
	if (ok)
		COMP_CRC32C(crc, &header, sizeof(header));
	for (; ok && loaded < header.count; loaded++)
	{
		QueueSlot  *slot = &kept->slots[loaded];
		SeAuditRecord *rec = &kept->records[loaded];

		ok = fread(slot, sizeof(QueueSlot), 1, file) == 1 &&
			fread(rec, sizeof(SeAuditRecord), 1, file) == 1;
		if (ok)
		{
			COMP_CRC32C(crc, slot, sizeof(QueueSlot));
			COMP_CRC32C(crc, rec, sizeof(SeAuditRecord));
		}
	}
	FIN_CRC32C(crc);
	ok = ok && fread(&stored, sizeof(stored), 1, file) == 1 && EQ_CRC32C(crc, stored) &&
		fgetc(file) == EOF;
	FreeFile(file);
	if (!ok)
	{
		memset(kept, 0, sizeof(KeptSlots));
		ereport(WARNING,
				(errmsg("ignoring the audit records queued when the server last stopped: file \"%s\" is damaged",
						QUEUE_FILE),
				 errdetail("It is kept as \"%s\"; its records may be missing from secretenv.audit_log.",
						   QUEUE_FILE ".damaged")));
		(void) durable_rename(QUEUE_FILE, QUEUE_FILE ".damaged", WARNING);
		return;
	}
	/* States and waits are settled by recover_kept_slots(), as after a crash. */
	for (uint32 i = 0; i < header.count; i++)
		kept->slots[i].ticket = i + 1;
	kept->next_ticket = header.count;
	if (durable_unlink(QUEUE_FILE, WARNING) != 0)
	{
		/* Left in place, the records would be queued again at the next start. */
		memset(kept, 0, sizeof(KeptSlots));
		return;
	}
	ereport(LOG,
			(errmsg_plural("secretenv queued %u audit record saved when the server last stopped",
						   "secretenv queued %u audit records saved when the server last stopped",
						   header.count, header.count)));
}

static void
audit_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	queue = ShmemInitStruct("secretenv audit", sizeof(AuditQueue), &found);
	if (!found)
	{
		bool		restart = kept_loaded;

		/* At the first start only: a crash restart keeps the mapping. */
		if (!kept_loaded)
		{
			load_kept_slots();
			on_proc_exit(save_kept_slots, (Datum) 0);
			kept_loaded = true;
		}
		memset(queue, 0, sizeof(AuditQueue));
		queue->nfree = recover_kept_slots(restart);
		queue->lock = &(GetNamedLWLockTranche("secretenv audit"))->lock;
		ConditionVariableInit(&queue->done_cv);
	}
	LWLockRelease(AddinShmemInitLock);
}

void
se_audit_init(void)
{
	DefineCustomEnumVariable("secretenv.audit",
							 "Which operations on stored secrets are recorded in the access audit.",
							 "off, writes (create, update, delete) or reads (every read as well).",
							 &se_audit_level,
							 SE_AUDIT_READS, level_options,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("secretenv.audit_strict",
							 "No plaintext leaves secretenv until its audit record is durable.",
							 "A read whose record cannot be committed within 5 seconds fails with SQLSTATE 55S02.",
							 &se_audit_strict,
							 false,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomEnumVariable("secretenv.audit_destination",
							 "Where access audit records go.",
							 "table (secretenv.audit_log), log (one LOG_SERVER_ONLY line each) or both.",
							 &se_audit_destination,
							 SE_AUDIT_DEST_TABLE, destination_options,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);

	if (!process_shared_preload_libraries_in_progress)
		return;

	/*
	 * Made by the postmaster, inherited by every process it forks, and
	 * never remade: a crash restart keeps it (see the top).  Anonymous
	 * memory starts zeroed, every slot free.
	 */
	kept = mmap(NULL, sizeof(KeptSlots), PROT_READ | PROT_WRITE,
				MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (kept == MAP_FAILED)
		ereport(FATAL,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not map the secretenv audit queue: %m")));
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = audit_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = audit_shmem_startup;
}
