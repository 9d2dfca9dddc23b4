/*-------------------------------------------------------------------------
 *
 * coherence.c
 *	  Credential cache coherence: what may be cached, when it is dropped.
 *
 * The rule (DESIGN 7b).  A secret_get never returns a value older than the
 * newest version of the row committed before its statement began (READ
 * COMMITTED), nor other than what its transaction's snapshot sees
 * (REPEATABLE READ), nor a row the caller's own read would not return.
 *
 * What may be cached.  Only a row version read with the caller's snapshot
 * that is also visible to a fresh snapshot taken after the read
 * (se_coherence_row_is_latest): the newest committed version at that
 * moment.  Only unique names are cached, so that version is the only one of
 * its name any newer snapshot can see until a later commit changes it.  A
 * value read under an older snapshot is returned but never cached, so it
 * cannot outlive its transaction.  Entries are keyed by the user id the
 * read was checked as (cache.c), so a role switch on one connection
 * (SET ROLE, SET SESSION AUTHORIZATION, a pooler) never meets another
 * role's entry; privileges are checked on every call, hit or miss.
 *
 * When it must be dropped.  Every committed change of secretenv.secrets
 * queues a relcache invalidation of the signal relation (trigger.c: a
 * statement trigger, and a row trigger that fires only under logical
 * replication apply, which runs no statement triggers).  The signal is the
 * view secretenv.masked_secrets (every extension version has it), not the
 * table: a relcache invalidation of a relation that a backend holds open
 * makes it rebuild that entry at once, and the rebuild opens catalogs,
 * whose first lock in a transaction processes the invalidations still
 * queued, which rebuild again: a backend that held the table open while
 * thousands of writes committed (VACUUM waiting up to 5 s for the lock to
 * truncate it) recursed once per write and exceeded the stack depth.  No
 * statement holds a view open while it runs, so an invalidation of the
 * view rebuilds nothing anywhere.  The relcache callback below drops the
 * whole cache for an invalidation of the signal or of the table (DDL,
 * policies, access rules), for a reset (InvalidOid: sinval queue overflow,
 * which may have lost one), and for any relation while either OID is not
 * known (a lookup in progress must not lose an invalidation).  Changes of roles and memberships (which
 * row-level security policies and BYPASSRLS depend on), a new key
 * configuration, and the abort of a transaction that filled entries drop
 * it too.  Each drop bumps a generation counter.
 *
 * Ordering against commit visibility.  A committing writer becomes visible
 * (ProcArrayEndTransaction) before it sends its invalidations
 * (AtEOXact_Inval).  writer_counters.c counts writers in shared memory: "started"
 * in the trigger, before the commit can be visible, "finished" after the
 * invalidations went out.  A call begins (se_coherence_begin) by reading
 * finished, then started, and only then AcceptInvalidationMessages.  Take a
 * writer W visible before the call's statement began:
 *	- if the read of finished counted W, W's invalidation was queued before
 *	  it and the AcceptInvalidationMessages that follows processes it;
 *	- if not, started (read later, and W started before it was visible)
 *	  exceeds finished: started >= finished + 1 always holds for a writer
 *	  counted in one and not the other, since every finish follows its
 *	  start.  The call neither serves nor fills.
 * Reading the counters after AcceptInvalidationMessages instead would let W
 * send its invalidation between the two and finish: counters equal, the
 * invalidation unseen, the old value served.  (COMMIT PREPARED, which makes
 * another transaction visible and fires no trigger, counts as a writer of
 * its own: writer_counters.c.)
 *
 * Why a hit is right.  An entry holds the newest committed version V as of
 * its fill, and survives only while no newer version became visible before
 * a call began (by the above).  So a hit returns V when V is the newest
 * version committed before the call, hence before its statement, began:
 * right for READ COMMITTED.  Under REPEATABLE READ, the transaction's
 * snapshot S was taken before the call; V was committed before the fill,
 * and the fill was either before S (then S sees V, or a newer version that
 * would have dropped the entry) or in this transaction (then it read V with
 * S): either way S sees V.
 *
 * Ordering of a fill against invalidations arriving mid-read.  Let the
 * fill's freshness check take its fresh snapshot at time L, and W commit a
 * newer version.  If W was visible at L the check fails.  Otherwise W's
 * invalidation is sent after L.  se_coherence_may_fill runs right before
 * the insert (nothing between them reads a catalog or takes a lock, so no
 * invalidation can be processed there) and requires: the generation is the
 * one sampled before the read (no relevant invalidation was processed
 * since, not even one the callback met while the table's OID was not yet
 * known), and no writer in flight (finished, then started).  So either W's
 * invalidation was processed during the read (generation changed: no
 * fill), or W is in flight (no fill), or W had not started (it becomes
 * visible later, and the next call's begin handles it as above), or W
 * finished but its invalidation is still queued for this backend: the next
 * call's AcceptInvalidationMessages drops the entry before any lookup.
 *
 * A hot standby.  Replay makes a commit visible
 * (ExpireTreeKnownAssignedTransactionIds in the commit record's redo)
 * before it sends the commit's invalidations (later in the same redo), and
 * no writer counter covers the startup process.  But replay publishes, under
 * its info_lck spinlock, replayEndRecPtr (the end of the record about to be
 * replayed, set before its redo) and lastReplayedEndRecPtr (set after its
 * redo).  A call on a standby reads the first, then the second, then
 * AcceptInvalidationMessages, and may use the cache only if replayed >=
 * replaying.  Take a commit record C visible before the statement began;
 * its redo began before that.  If C's redo had finished when replayed was
 * read, replayed >= end(C) and C's invalidations were sent before, so they
 * are processed next.  If not, C's redo was in progress from before the
 * read of replaying until the read of replayed, so replaying = end(C) >
 * replayed: the call reads the table.  Replay that is idle or between
 * records lets the cache work; a record in redo makes calls read the table.
 * Fills need nothing more than on a primary: the fresh-snapshot check and
 * the generation cover a replayed commit exactly as a local one.
 *
 * Memory ordering: the atomics and barrier of se_writers_in_flight, and
 * the spinlocks of the replay pointers, order those reads before
 * AcceptInvalidationMessages' unlocked look at its hasMessages flag, which
 * the sender set (under SInvalWriteLock) before finishing.
 *
 * Where the cache is not used at all.
 *	- SERIALIZABLE: the read must take its SSI predicate lock on the table.
 *	- Without shared_preload_libraries there are no writer counters.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/tableam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlogrecovery.h"
#include "catalog/namespace.h"
#include "miscadmin.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "cache/cache.h"
#include "cache/coherence.h"
#include "cache/writer_counters.h"
#include "keys/keyring.h"
#include "se_messages.h"

/* Bumped by every invalidation that drops the cache. */
static uint64 generation = 1;

/* OIDs of secretenv.secrets and of the signal view, InvalidOid while not known. */
static Oid	secrets_relid = InvalidOid;
static Oid	signal_relid = InvalidOid;

static uint64 seen_key_generation = 0;
static bool filled_in_xact = false;

/*
 * Test-only injection points (README, "Testing"): with test_pause_at set
 * and test_pause_lock non-zero, the backend waits at that point until the
 * test releases that advisory lock.  A lock wait, unlike a sleep, is what
 * the isolation tester sees as "blocked", so a spec can run other sessions'
 * steps exactly there.
 */
typedef enum TestPausePoint
{
	PAUSE_NONE,
	PAUSE_BEGIN,				/* se_coherence_begin, between counters and
								 * AcceptInvalidationMessages */
	PAUSE_FILL,					/* se_coherence_may_fill, between the read and
								 * the insert */
	PAUSE_COMMIT				/* a writer's commit, visible but its
								 * invalidations not yet sent */
} TestPausePoint;

static const struct config_enum_entry pause_points[] = {
	{"none", PAUSE_NONE, false},
	{"begin", PAUSE_BEGIN, false},
	{"fill", PAUSE_FILL, false},
	{"commit", PAUSE_COMMIT, false},
	{NULL, 0, false}
};

static int	test_pause_at = PAUSE_NONE;
static int	test_pause_lock = 0;

static bool
test_pause(TestPausePoint point)
{
	if (test_pause_at != point || test_pause_lock == 0)
		return false;
	DirectFunctionCall1(pg_advisory_lock_int8, Int64GetDatum(test_pause_lock));
	DirectFunctionCall1(pg_advisory_unlock_int8, Int64GetDatum(test_pause_lock));
	return true;
}

static void
drop_cache(void)
{
	generation++;
	se_cache_invalidate();
}

static void
lookup_relids(void)
{
	Oid			nsp;

	if (OidIsValid(secrets_relid) && OidIsValid(signal_relid))
		return;
	nsp = get_namespace_oid("secretenv", true);
	if (!OidIsValid(nsp))
		return;
	if (!OidIsValid(secrets_relid))
		secrets_relid = get_relname_relid("secrets", nsp);
	if (!OidIsValid(signal_relid))
		signal_relid = get_relname_relid("masked_secrets", nsp);
}

/* OID of secretenv.secrets, or InvalidOid if it does not exist (yet). */
Oid
se_secrets_relid(void)
{
	lookup_relids();
	return secrets_relid;
}

/*
 * The relation whose relcache invalidation tells every backend that
 * secretenv.secrets changed: the view (see the header comment), or the
 * table itself should the view be missing.
 */
Oid
se_cache_signal_relid(void)
{
	lookup_relids();
	return OidIsValid(signal_relid) ? signal_relid : secrets_relid;
}

/*
 * Relcache callback.  An invalidation of the signal or the table, a reset,
 * or any invalidation while an OID is unknown (a lookup may be in
 * progress) drops the cache; the OIDs are looked up again after the first
 * three, in case the relations were dropped and re-created.  It only sets
 * variables: a callback runs while invalidations are processed, where a
 * catalog access could process further ones.
 */
static void
relcache_changed(Datum arg, Oid relid)
{
	if (!OidIsValid(relid) || relid == secrets_relid || relid == signal_relid)
	{
		secrets_relid = InvalidOid;
		signal_relid = InvalidOid;
	}
	else if (OidIsValid(secrets_relid) && OidIsValid(signal_relid))
		return;
	drop_cache();
}

/* Roles and memberships: policies and BYPASSRLS depend on them. */
static void
roles_changed(Datum arg, int cacheid, uint32 hashvalue)
{
	drop_cache();
}

/* Entries filled by a transaction that aborts may hold its own writes. */
static void
xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
	{
		if (filled_in_xact)
			drop_cache();
		filled_in_xact = false;
	}
	else if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT ||
			 event == XACT_EVENT_PREPARE)
	{
		filled_in_xact = false;
		/* Commit callbacks run after ProcArrayEndTransaction, before AtEOXact_Inval. */
		if (event == XACT_EVENT_COMMIT && se_writer_counted())
			test_pause(PAUSE_COMMIT);
	}
}

static void
subxact_callback(SubXactEvent event, SubTransactionId mySubid,
				 SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB && filled_in_xact)
		drop_cache();
}

/*
 * On a standby: whether no WAL record was in redo between the two reads
 * (replaying first, then replayed; each read takes replay's spinlock).
 */
static bool
replay_between_records(void)
{
	XLogRecPtr	replaying = GetCurrentReplayRecPtr(NULL);
	XLogRecPtr	replayed = GetXLogReplayRecPtr(NULL);

	return replayed >= replaying;
}

/*
 * Start of a secret_get call, before anything reads the table: returns
 * whether this call may serve from (and fill) the cache.  Always processes
 * pending invalidations.  The order is the argument of the header comment:
 * writer counters first, then AcceptInvalidationMessages.
 */
bool
se_coherence_begin(void)
{
	bool		usable;
	uint64		keys;

	usable = se_cache_enabled() &&
		!IsolationIsSerializable() &&
		!se_writers_in_flight() &&
		(!RecoveryInProgress() || replay_between_records());
	test_pause(PAUSE_BEGIN);
	AcceptInvalidationMessages();

	keys = se_keyring_generation();
	if (keys != seen_key_generation)
	{
		seen_key_generation = keys;
		drop_cache();
	}
	return usable;
}

/* Sampled before the read; se_coherence_may_fill compares. */
uint64
se_coherence_ticket(void)
{
	return generation;
}

/*
 * Whether the row version at tid, which the caller's snapshot returned, is
 * also visible to a fresh snapshot: then it is the newest committed version
 * (or this transaction's own, which a writer-in-flight check excludes).
 * slot is any slot of rel; its contents are replaced.
 */
bool
se_coherence_row_is_latest(Relation rel, ItemPointer tid, TupleTableSlot *slot)
{
	ItemPointerData probe = *tid;

	return table_tuple_fetch_row_version(rel, &probe, GetLatestSnapshot(), slot);
}

/*
 * Right before an insert: no invalidation processed since the ticket and
 * no writer in flight.  Nothing may read a catalog or take a lock between
 * this and the insert.
 */
bool
se_coherence_may_fill(uint64 ticket)
{
	/*
	 * Test-only: after the pause, process invalidations, as a catalog
	 * access or a lock in this window would (none happens here today).
	 */
	if (test_pause(PAUSE_FILL))
		AcceptInvalidationMessages();
	if (se_writers_in_flight() || generation != ticket)
		return false;
	filled_in_xact = true;
	return true;
}

void
se_coherence_init(void)
{
	DefineCustomEnumVariable("secretenv.test_pause_at",
							 "Test only: the point where a backend waits for secretenv.test_pause_lock.",
							 "none, begin, fill or commit; used by the isolation tests.",
							 &test_pause_at,
							 PAUSE_NONE, pause_points,
							 PGC_SUSET,
							 GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							 NULL, NULL, NULL);
	DefineCustomIntVariable("secretenv.test_pause_lock",
							"Test only: advisory lock key the pause of secretenv.test_pause_at waits for; 0 disables.",
							NULL,
							&test_pause_lock,
							0, 0, INT_MAX,
							PGC_SUSET,
							GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							NULL, NULL, NULL);

	CacheRegisterRelcacheCallback(relcache_changed, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHOID, roles_changed, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, roles_changed, (Datum) 0);
	RegisterXactCallback(xact_callback, NULL);
	RegisterSubXactCallback(subxact_callback, NULL);
}
