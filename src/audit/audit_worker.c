/*-------------------------------------------------------------------------
 *
 * audit_worker.c
 *	  The audit launcher and the per-database writers that drain the queue.
 *
 * With shared_preload_libraries, a static launcher (no database) wakes
 * when a record is queued for a database that has no writer, and starts a
 * dynamic worker connected to it.  The writer takes that database's
 * queued records, oldest first, in batches; appends each batch to the
 * chain (audit_chain.c) in one transaction of its own (one commit for
 * many records: a transaction per record would cost more than the reads
 * it records); after the commit
 * frees the slots (waking strict readers) and, with
 * secretenv.audit_destination = both, writes each record's log line with
 * its sequence number and MAC.  A batch that fails is queued again and
 * retried a second later; after MAX_ATTEMPTS failures in a row it is given
 * up (counted, and logged as lines without a MAC so nothing is lost
 * silently).  A small batch that no strict reader waits for lingers
 * LINGER_MS for the records of the next reads before it is written, so
 * that a steady stream of reads makes batches of many records rather than
 * one commit per read; a strict reader's record cuts the lingering short
 * (it sets the latch) and the writer never lingers over one.  A writer
 * that is busy is not woken per record (see audit_queue.c); an idle one
 * is.  A writer leaves after IDLE_EXIT_MS without records, so it
 * never holds a database that someone wants to drop.
 *
 * Both start once the server accepts writes: a hot standby has no writer
 * (records go to the log there, see audit_queue.c).  The writers run as
 * the bootstrap superuser and resolve nothing through search_path.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "audit/audit.h"
#include "se_messages.h"

#define BATCH 256
#define LINGER_BELOW 32
#define LINGER_MS 1
#define IDLE_EXIT_MS 1000
#define RETRY_MS 1000
#define MAX_ATTEMPTS 30
#define MAX_STARTS 16

PGDLLEXPORT void secretenv_audit_launcher_main(Datum arg);
PGDLLEXPORT void secretenv_audit_writer_main(Datum arg);

void
se_audit_worker_register(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 1;
	strlcpy(worker.bgw_library_name, "secretenv", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "secretenv_audit_launcher_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "secretenv audit launcher", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "secretenv audit launcher", BGW_MAXLEN);
	RegisterBackgroundWorker(&worker);
}

typedef struct Started
{
	uint64		writer;
	BackgroundWorkerHandle *handle;
} Started;

static void
launcher_exit(int code, Datum arg)
{
	se_audit_set_launcher(NULL);
}

void
secretenv_audit_launcher_main(Datum arg)
{
	Started		started[MAX_STARTS];
	int			nstarted = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	se_audit_set_launcher(MyLatch);
	before_shmem_exit(launcher_exit, (Datum) 0);

	for (;;)
	{
		uint64		writers[MAX_STARTS];
		int			n;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		/* Forget writers that exited; requeue what a dead one held. */
		for (int i = 0; i < nstarted;)
		{
			pid_t		pid;

			if (GetBackgroundWorkerPid(started[i].handle, &pid) == BGWH_STOPPED)
			{
				se_audit_worker_gone(started[i].writer);
				pfree(started[i].handle);
				started[i] = started[--nstarted];
			}
			else
				i++;
		}

		n = se_audit_databases_waiting(writers, MAX_STARTS - nstarted);
		for (int i = 0; i < n; i++)
		{
			BackgroundWorker worker;
			BackgroundWorkerHandle *handle;

			memset(&worker, 0, sizeof(worker));
			worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
			worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
			worker.bgw_restart_time = BGW_NEVER_RESTART;
			strlcpy(worker.bgw_library_name, "secretenv", BGW_MAXLEN);
			strlcpy(worker.bgw_function_name, "secretenv_audit_writer_main", BGW_MAXLEN);
			strlcpy(worker.bgw_name, "secretenv audit writer", BGW_MAXLEN);
			strlcpy(worker.bgw_type, "secretenv audit writer", BGW_MAXLEN);
			worker.bgw_main_arg = UInt64GetDatum(writers[i]);
			worker.bgw_notify_pid = MyProcPid;
			if (!RegisterDynamicBackgroundWorker(&worker, &handle))
			{
				ereport(LOG,
						(errmsg("secretenv could not start an audit writer"),
						 errhint("Raise max_worker_processes; the launcher retries in a second.")));
				se_audit_worker_gone(writers[i]);
				continue;
			}
			started[nstarted].writer = writers[i];
			/* Allocated in TopMemoryContext, where the launcher runs. */
			started[nstarted].handle = handle;
			nstarted++;
		}

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 RETRY_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

static uint64 writer_id;

static void
writer_exit(int code, Datum arg)
{
	se_audit_worker_gone(writer_id);
}

/* Append one batch in a transaction; false when it failed (logged). */
static bool
write_batch(SeAuditRecord *recs, const int *slots, int n)
{
	SeAuditRow *rows = palloc0(sizeof(SeAuditRow) * n);
	MemoryContext cxt = CurrentMemoryContext;
	bool		ok = true;

	for (int i = 0; i < n; i++)
		memcpy(&rows[i].rec, &recs[i], sizeof(SeAuditRecord));

	PG_TRY();
	{
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, "secretenv audit writer");
		se_audit_chain_append(rows, n);
		se_audit_mark_inserted(slots, n, GetCurrentTransactionId());
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		ereport(WARNING,
				(errmsg("secretenv could not write %d audit records: %s", n, edata->message),
				 errhint("They stay queued and are retried.")));
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);

	if (ok && se_audit_destination == SE_AUDIT_DEST_BOTH)
		for (int i = 0; i < n; i++)
			se_audit_log_line(&rows[i].rec, &rows[i], rows[i].mac);
	if (ok)
		se_audit_set_head(MyDatabaseId, rows[n - 1].seq, rows[n - 1].mac);
	pfree(rows);
	return ok;
}

/*
 * Records that a dead writer (killed, or gone in a crash restart) had
 * inserted: those its transaction committed are in the table and only
 * their slots are freed; the rest stay in the batch.  Returns the count
 * left, compacted in place.
 */
static int
drop_committed(SeAuditRecord *recs, int *slots, const TransactionId *inserted_by, int n)
{
	int			committed[BATCH];
	int			ncommitted = 0;
	int			kept = 0;

	for (int i = 0; i < n; i++)
	{
		if (TransactionIdIsValid(inserted_by[i]) && TransactionIdDidCommit(inserted_by[i]))
		{
			committed[ncommitted++] = slots[i];
			continue;
		}
		if (kept != i)
		{
			memcpy(&recs[kept], &recs[i], sizeof(SeAuditRecord));
			slots[kept] = slots[i];
		}
		kept++;
	}
	if (ncommitted > 0)
		se_audit_finish(committed, ncommitted, true);
	return kept;
}

void
secretenv_audit_writer_main(Datum arg)
{
	SeAuditRecord *recs;
	int			slots[BATCH];
	TransactionId inserted_by[BATCH];
	int			attempts = 0;
	bool		waited;
	TimestampTz idle_since;
	Oid			dboid;

	writer_id = DatumGetUInt64(arg);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	dboid = se_audit_worker_attach(writer_id, MyLatch);
	if (!OidIsValid(dboid))
		proc_exit(0);
	before_shmem_exit(writer_exit, (Datum) 0);
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	/* Nothing a database user created is ever resolved. */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);

	recs = MemoryContextAlloc(TopMemoryContext, sizeof(SeAuditRecord) * BATCH);
	idle_since = GetCurrentTimestamp();
	for (;;)
	{
		int			n;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		n = se_audit_take(dboid, recs, slots, inserted_by, BATCH, &waited);
		if (n > 0 && n < LINGER_BELOW && !waited)
		{
			/* Later records have later tickets: the order is kept. */
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 LINGER_MS, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			n += se_audit_take(dboid, recs + n, slots + n, inserted_by + n, BATCH - n, &waited);
		}
		if (n > 0 && (n = drop_committed(recs, slots, inserted_by, n)) == 0)
			continue;
		if (n > 0)
		{
			if (write_batch(recs, slots, n))
			{
				se_audit_finish(slots, n, true);
				attempts = 0;
			}
			else if (++attempts >= MAX_ATTEMPTS)
			{
				/* Given up: the log still gets them, without a MAC. */
				for (int i = 0; i < n; i++)
					se_audit_log_line(&recs[i], NULL, NULL);
				se_audit_finish(slots, n, false);
				attempts = 0;
			}
			else
			{
				se_audit_requeue(slots, n);
				(void) WaitLatch(MyLatch, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								 RETRY_MS, PG_WAIT_EXTENSION);
			}
			idle_since = GetCurrentTimestamp();
			continue;
		}
		if (TimestampDifferenceExceeds(idle_since, GetCurrentTimestamp(), IDLE_EXIT_MS) &&
			se_audit_worker_detach_if_idle(writer_id))
			proc_exit(0);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 100, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
