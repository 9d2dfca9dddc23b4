/*-------------------------------------------------------------------------
 *
 * writer_counters.c
 *	  Shared counters of transactions that changed secretenv.secrets.
 *
 * The credential cache relies on relcache invalidations, which a committing
 * transaction sends only after its changes became visible to new snapshots
 * (CommitTransaction runs ProcArrayEndTransaction before AtEOXact_Inval).
 * A secret_get starting in that gap would see the new row in the table but
 * could still hit the old value in its cache.
 *
 * To close the gap, every transaction that changes the table counts itself
 * in shared memory: "started" when its invalidation trigger fires (before it
 * can commit), "finished" from a resource-release callback of the
 * RESOURCE_RELEASE_AFTER_LOCKS phase, which runs after AtEOXact_Inval on
 * commit and abort alike.  While started != finished some writer may be in the gap, and
 * secret_get neither serves nor fills the cache.
 *
 * Readers must read finished before started, and both before
 * AcceptInvalidationMessages: coherence.c states why.
 *
 * The counters live in shared memory of their own, which exists only when
 * secretenv is in shared_preload_libraries; without preload the cache is
 * not used.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/resowner.h"

#include "cache/writer_counters.h"
#include "se_messages.h"
#include "utility_hook_chain.h"

typedef struct WriterCounters
{
	pg_atomic_uint64 started;
	pg_atomic_uint64 finished;
} WriterCounters;

/* NULL without shared_preload_libraries. */
static WriterCounters *counters = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static bool counted_in_this_xact = false;
static ProcessUtility_hook_type prev_ProcessUtility = NULL;

static void
counters_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(WriterCounters)));
}

static void
counters_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	counters = ShmemInitStruct("secretenv writer counters", sizeof(WriterCounters), &found);
	if (!found)
	{
		pg_atomic_init_u64(&counters->started, 0);
		pg_atomic_init_u64(&counters->finished, 0);
	}
	LWLockRelease(AddinShmemInitLock);
}

/* After the transaction's invalidations went out, it no longer counts. */
static void
writers_release_callback(ResourceReleasePhase phase, bool isCommit,
						 bool isTopLevel, void *arg)
{
	if (phase == RESOURCE_RELEASE_AFTER_LOCKS && isTopLevel && counted_in_this_xact)
	{
		pg_atomic_fetch_add_u64(&counters->finished, 1);
		counted_in_this_xact = false;
	}
}

/*
 * COMMIT PREPARED makes another transaction's changes visible
 * (ProcArrayRemove) before it sends that transaction's invalidations, and
 * no trigger fires in it.  It counts as a writer of its own, whatever the
 * prepared transaction changed: from before it starts until after its own
 * transaction ends (the release callback above).
 */
static void
writers_ProcessUtility(PlannedStmt *pstmt, const char *queryString,
					   bool readOnlyTree, ProcessUtilityContext context,
					   ParamListInfo params, QueryEnvironment *queryEnv,
					   DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;

	if (IsA(parsetree, TransactionStmt) &&
		((TransactionStmt *) parsetree)->kind == TRANS_STMT_COMMIT_PREPARED)
		se_writer_started();
	se_next_process_utility(prev_ProcessUtility, pstmt, queryString, readOnlyTree,
							context, params, queryEnv, dest, qc);
}

void
se_writers_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = counters_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = counters_shmem_startup;
	RegisterResourceReleaseCallback(writers_release_callback, NULL);
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = writers_ProcessUtility;
}

/* Count this transaction as a writer of secretenv.secrets (once). */
void
se_writer_started(void)
{
	if (counters == NULL || counted_in_this_xact)
		return;
	pg_atomic_fetch_add_u64(&counters->started, 1);
	counted_in_this_xact = true;
}

/* Whether this transaction counted itself as a writer. */
bool
se_writer_counted(void)
{
	return counted_in_this_xact;
}

/*
 * Whether some transaction that changed secretenv.secrets may not have sent
 * its invalidations yet.  Always true without shared memory.
 */
bool
se_writers_in_flight(void)
{
	uint64		finished;

	if (counters == NULL)
		return true;
	/* Read finished first: a writer counted after it only makes us safer. */
	finished = pg_atomic_read_u64(&counters->finished);
	pg_memory_barrier();
	return pg_atomic_read_u64(&counters->started) != finished;
}
