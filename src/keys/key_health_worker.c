/*-------------------------------------------------------------------------
 *
 * key_health_worker.c
 *	  The background workers that check key health in every database.
 *
 * With shared_preload_libraries, a static launcher (in the manner of
 * pg_cron's) lists the databases of the cluster and starts, one at a time,
 * a dynamic worker connected to each; the worker checks that database's
 * rows (key_health.c) and publishes the result in shared memory.  Rounds
 * run:
 *	  - at start,
 *	  - after every reload that changes the key settings (the launcher
 *		reloads its configuration on SIGHUP, and workers started afterwards
 *		are forked from a postmaster that already derived the new KEKs),
 *	  - for a database whose secretenv.secrets changed, at most once a
 *		second (key_health.c marks it after the change commits and sets
 *		the launcher's latch).
 * The workers run as the bootstrap superuser; the check itself pins
 * search_path and qualifies every name, so no object a database user
 * created is ever resolved.  The launcher never touches a key.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "keys/key_health.h"
#include "keys/keyring.h"
#include "se_messages.h"

/* Never check one database more often than this. */
#define MIN_ROUND_INTERVAL_MS 1000
#define MAX_DATABASES_PER_ROUND 1024

PGDLLEXPORT void secretenv_health_launcher_main(Datum arg);
PGDLLEXPORT void secretenv_health_worker_main(Datum arg);

void
se_key_health_worker_register(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	/* Hot standbys hold rows too: start as soon as they can be read. */
	worker.bgw_start_time = BgWorkerStart_ConsistentState;
	worker.bgw_restart_time = 10;
	strlcpy(worker.bgw_library_name, "secretenv", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "secretenv_health_launcher_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "secretenv key health launcher", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "secretenv key health launcher", BGW_MAXLEN);
	RegisterBackgroundWorker(&worker);
}

/* Databases that accept connections (shared catalog, no database needed). */
static int
list_databases(Oid *dboids, int max)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tuple;
	int			n = 0;

	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL && n < max)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tuple);

		/*
		 * Templates are skipped: a worker connected to one would make a
		 * concurrent CREATE DATABASE fail.
		 */
		if (db->datallowconn && !db->datistemplate)
			dboids[n++] = db->oid;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return n;
}

/* Run one database's worker to completion. */
static void
check_one_database(Oid dboid)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	pid_t		pid;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_ConsistentState;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(worker.bgw_library_name, "secretenv", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "secretenv_health_worker_main", BGW_MAXLEN);
	snprintf(worker.bgw_name, BGW_MAXLEN, "secretenv key health check of database %u", dboid);
	strlcpy(worker.bgw_type, "secretenv key health check", BGW_MAXLEN);
	worker.bgw_main_arg = ObjectIdGetDatum(dboid);
	worker.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
	{
		ereport(LOG,
				(errmsg("secretenv could not start a key health check of database %u", dboid),
				 errhint("Raise max_worker_processes; the check is retried at the next round.")));
		return;
	}
	if (WaitForBackgroundWorkerStartup(handle, &pid) == BGWH_STARTED)
		(void) WaitForBackgroundWorkerShutdown(handle);
	pfree(handle);
}

static void
launcher_exit(int code, Datum arg)
{
	se_key_health_set_launcher(NULL);
}

void
secretenv_health_launcher_main(Datum arg)
{
	uint64		seen_generation;
	bool		check_all = true;
	Oid		   *dboids;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	dboids = MemoryContextAlloc(TopMemoryContext, sizeof(Oid) * MAX_DATABASES_PER_ROUND);
	se_key_health_set_launcher(MyLatch);
	before_shmem_exit(launcher_exit, (Datum) 0);
	seen_generation = se_keyring_generation();

	for (;;)
	{
		int			n;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			if (se_keyring_generation() != seen_generation)
			{
				seen_generation = se_keyring_generation();
				check_all = true;
			}
		}

		if (check_all)
		{
			/* Pending marks are covered by the full round. */
			(void) se_key_health_take_rechecks(dboids, MAX_DATABASES_PER_ROUND);
			n = list_databases(dboids, MAX_DATABASES_PER_ROUND);
			check_all = false;
		}
		else
			n = se_key_health_take_rechecks(dboids, MAX_DATABASES_PER_ROUND);

		for (int i = 0; i < n; i++)
		{
			CHECK_FOR_INTERRUPTS();
			check_one_database(dboids[i]);
		}

		/* Rate limit, then sleep until a change, a reload or a recheck mark. */
		if (n > 0)
		{
			(void) WaitLatch(NULL, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 MIN_ROUND_INTERVAL_MS, PG_WAIT_EXTENSION);
			continue;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 60 * 1000L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

void
secretenv_health_worker_main(Datum arg)
{
	Oid			dboid = DatumGetObjectId(arg);

	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);

	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "secretenv key health check");
	se_key_health_check_database();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	proc_exit(0);
}
