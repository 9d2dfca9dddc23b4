/*-------------------------------------------------------------------------
 *
 * cache.c
 *	  The sealed per-backend credential store behind secret_get().
 *
 * Entries map (user id, name) to a plaintext sealed with AES-256-GCM, the
 * AAD being the (user id, name) key itself, under a time-bucket key.  The
 * store knows no table and no snapshot: coherence.c decides what may be
 * stored and when everything must be dropped.  (It watches transaction ends
 * only to re-arm its timers after error recovery cancelled them.)
 *
 * Buckets and lifetime.  Time, read from CLOCK_MONOTONIC (so that setting
 * the wall clock neither extends nor cuts a lifetime), is cut into buckets
 * of cache_ttl / 2.  A bucket key is drawn from the CSPRNG when its bucket
 * first seals an entry, never derived from anything, and lives until the
 * end of the bucket after its own: at most two keys exist, the current
 * bucket's and the previous one's.  An entry lives exactly as long as the
 * key that sealed it, so between cache_ttl / 2 and cache_ttl seconds, and
 * an entry whose key is gone cannot be decrypted even from a full memory
 * dump.  Entries carry no expiry of their own.
 *
 * Idle purge, the least work that keeps that property.  Each key slot has
 * a one-shot timeout (SIGALRM) armed for its key's end; its handler only
 * overwrites that key and marks the slot dead.  Entries under a dead key
 * are unreadable from that instant; their memory is freed later by
 * ordinary code (the next operation, or cache_stats()).  With no key left
 * no timeout is armed: the timer stops when the cache is empty.  Error
 * recovery cancels every timeout of the backend; rearm_timers() puts them
 * back (see there).
 *
 * Racing the handler.  The handler touches nothing but a slot's key bytes
 * and its live flag (volatile, with a compiler barrier between the two),
 * so it may interrupt any ordinary code at any point:
 *	- an open that races a wipe fails authentication, and the entry is
 *	  dropped as a miss; one that completed before the wipe returns what was
 *	  a live entry when the lookup began;
 *	- a seal that races a wipe is detected by re-reading the slot's live
 *	  flag and serial after sealing, and nothing is stored;
 *	- a slot is (re)filled only with its timeout disabled, so a handler can
 *	  never wipe half a new key and leave it marked live.
 *
 * Nothing an ERROR can leave stuck.  There is no busy flag.  After the
 * first use has created the store, lookup and insert never raise an ERROR:
 * memory comes from MCXT_ALLOC_NO_OOM allocations and a hash table whose
 * allocator returns NULL (HASH_ENTER_NULL), crypto returns status codes,
 * and every list or table change is a complete step.  So callbacks that run
 * on abort (coherence.c's) or an assign hook never meet a half-done
 * operation.  The assign hooks do only what the handler does (wipe keys)
 * and leave the freeing of entries to the next operation.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>
#include <time.h>

#include "access/xact.h"
#include "lib/ilist.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "port/atomics.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timeout.h"

#include "cache/cache.h"
#include "crypto/se_crypto.h"
#include "keys/aead_engine.h"
#include "pg_compat.h"
#include "se_messages.h"
#include "utility_hook_chain.h"

#define NUM_KEY_SLOTS 2

/* GUC variables */
static int	cache_ttl = 60;
static int	cache_max_entries = 1000;

typedef struct CacheKey
{
	Oid			userid;			/* whose read filled it */
	char		name[SE_CACHE_MAX_NAME_LEN + 1];	/* NUL-padded */
} CacheKey;

typedef struct CacheEntry
{
	CacheKey	key;			/* hash key; also the AAD */
	dlist_node	lru_node;		/* most recently used at the head */
	dlist_node	fill_node;		/* fill order = key order */
	int			slot;			/* key slot that sealed it ... */
	uint64		key_serial;		/* ... while it held this key */
	uint8_t    *sealed;			/* nonce || ciphertext || tag */
	size_t		sealed_len;
	uint8		secret_id[SE_CACHE_ID_LEN];	/* the row's id, for the audit */
	int32		version;		/* the row's version, for the audit; 0: not known */
} CacheEntry;

typedef struct BucketKeys
{
	uint8_t		key[NUM_KEY_SLOTS][SE_KEY_LEN];
} BucketKeys;

typedef struct CacheCounters
{
	uint64		hits;
	uint64		misses;
	uint64		evictions;
	uint64		expirations;
	uint64		invalidations;
} CacheCounters;

static MemoryContext cache_context = NULL;
static HTAB *cache_table = NULL;
static dlist_head lru_list = DLIST_STATIC_INIT(lru_list);
static dlist_head fill_list = DLIST_STATIC_INIT(fill_list);
static int	num_entries = 0;

/*
 * Key slots.  bucket_keys (secure memory) and slot_live are shared with the
 * timeout handlers; the rest is written by ordinary code only.
 */
static BucketKeys *bucket_keys = NULL;
static int	bucket_keys_locked = 0;
static volatile sig_atomic_t slot_live[NUM_KEY_SLOTS];
static uint64 slot_serial[NUM_KEY_SLOTS];
static int64 slot_bucket[NUM_KEY_SLOTS];
static int64 slot_end_us[NUM_KEY_SLOTS];	/* monotonic end of the key */
static int64 slot_bucket_us[NUM_KEY_SLOTS]; /* bucket length it was made for */
static TimeoutId slot_timeout[NUM_KEY_SLOTS] = {MAX_TIMEOUTS, MAX_TIMEOUTS};
static uint64 next_serial = 1;

static CacheCounters counters;
static volatile uint64 timer_purges = 0;	/* keys wiped by the handler */

/* Set by the assign hooks: free every entry at the next operation. */
static bool settings_changed = false;

static ProcessUtility_hook_type prev_ProcessUtility = NULL;

static int64
monotonic_us(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
		elog(ERROR, "clock_gettime(CLOCK_MONOTONIC) failed: %m");
	return (int64) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64
bucket_len_us(void)
{
	return (int64) cache_ttl * 1000000 / 2;
}

/*
 * Wipe a key: overwrite it, then mark the slot dead.  Safe in the handler
 * and against it (both only ever write the same zeroes and false).
 */
static void
wipe_slot_key(int slot)
{
	se_wipe(bucket_keys->key[slot], SE_KEY_LEN);
	pg_compiler_barrier();
	slot_live[slot] = false;
}

/* Timeout handlers: signal context, so wipe and count, nothing else. */
static void
purge_slot(int slot)
{
	if (bucket_keys == NULL || !slot_live[slot])
		return;
	wipe_slot_key(slot);
	timer_purges++;
}

static void
purge_slot0(void)
{
	purge_slot(0);
}

static void
purge_slot1(void)
{
	purge_slot(1);
}

/* Ordinary code: wipe a key with its timeout disarmed first. */
static void
retire_slot(int slot)
{
	if (slot_timeout[slot] != MAX_TIMEOUTS && get_timeout_active(slot_timeout[slot]))
		disable_timeout(slot_timeout[slot], false);
	if (slot_live[slot])
		wipe_slot_key(slot);
}

/*
 * Arm the timeout of every live key whose timeout is not active, and wipe
 * keys already past their end.  PostgreSQL's error recovery cancels all
 * timeouts (disable_all_timeouts), so this runs on every cache operation,
 * at transaction abort, and after every transaction control statement (the
 * ROLLBACK that ends a failed transaction block): an error never leaves a
 * key alive past its end in an idle backend.
 */
static void
rearm_timers(int64 now)
{
	for (int i = 0; i < NUM_KEY_SLOTS; i++)
	{
		if (!slot_live[i] || slot_timeout[i] == MAX_TIMEOUTS ||
			get_timeout_active(slot_timeout[i]))
			continue;
		if (slot_end_us[i] <= now)
			wipe_slot_key(i);
		else
			enable_timeout_after(slot_timeout[i],
								 (int) ((slot_end_us[i] - now + 999) / 1000));
	}
}

static bool
entry_readable(CacheEntry *entry)
{
	return slot_live[entry->slot] && slot_serial[entry->slot] == entry->key_serial;
}

/* Release an entry: its ciphertext is wiped, then its memory freed. */
static void
remove_entry(CacheEntry *entry)
{
	se_wipe(entry->sealed, entry->sealed_len);
	pfree(entry->sealed);
	dlist_delete(&entry->lru_node);
	dlist_delete(&entry->fill_node);
	hash_search(cache_table, &entry->key, HASH_REMOVE, NULL);
	num_entries--;
}

static void
remove_all_entries(void)
{
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &fill_list)
		remove_entry(dlist_container(CacheEntry, fill_node, iter.cur));
}

/*
 * Bring the store up to date with time and settings: retire keys past
 * their end (the timer may be late, or not fired yet), then free the
 * entries under dead keys.  Those are at the head of the fill list: keys
 * are made in fill order and die in that order.
 */
static void
maintain(int64 now)
{
	if (settings_changed)
	{
		settings_changed = false;
		for (int i = 0; i < NUM_KEY_SLOTS; i++)
			retire_slot(i);
	}
	for (int i = 0; i < NUM_KEY_SLOTS; i++)
		if (slot_live[i] && slot_end_us[i] <= now)
			retire_slot(i);
	rearm_timers(now);

	while (!dlist_is_empty(&fill_list))
	{
		CacheEntry *entry = dlist_container(CacheEntry, fill_node,
											dlist_head_node(&fill_list));

		if (entry_readable(entry))
			break;
		remove_entry(entry);
		counters.expirations++;
	}
}

static int
live_key_count(void)
{
	int			n = 0;

	for (int i = 0; i < NUM_KEY_SLOTS; i++)
		if (slot_live[i])
			n++;
	return n;
}

static void *
cache_hash_alloc(HASH_ALLOC_PARAMS_COMPAT)
{
	return MemoryContextAllocExtended(cache_context, size, MCXT_ALLOC_NO_OOM);
}

/*
 * Create the store on first use.  This may raise an ERROR (out of memory);
 * each piece is made once, so a failed attempt is simply retried.
 */
static void
ensure_cache(void)
{
	if (cache_context == NULL)
		cache_context = AllocSetContextCreate(TopMemoryContext,
											  "secretenv credential cache",
											  ALLOCSET_DEFAULT_SIZES);
	if (bucket_keys == NULL)
	{
		bucket_keys = se_secure_alloc(sizeof(BucketKeys), &bucket_keys_locked);
		if (bucket_keys == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("could not allocate secure memory for the credential cache")));
	}
	/* Timeouts are per backend: InitPostgres resets them after fork. */
	if (slot_timeout[0] == MAX_TIMEOUTS)
		slot_timeout[0] = RegisterTimeout(USER_TIMEOUT, purge_slot0);
	if (slot_timeout[1] == MAX_TIMEOUTS)
		slot_timeout[1] = RegisterTimeout(USER_TIMEOUT, purge_slot1);
	if (cache_table == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(CacheKey);
		ctl.entrysize = sizeof(CacheEntry);
		ctl.hcxt = cache_context;
		ctl.alloc = cache_hash_alloc;
		cache_table = hash_create("secretenv cache entries", 256, &ctl,
								  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT | HASH_ALLOC);
	}
}

static void
make_key(Oid userid, const char *name, int namelen, CacheKey *key)
{
	memset(key, 0, sizeof(CacheKey));
	key->userid = userid;
	memcpy(key->name, name, namelen);
}

bool
se_cache_enabled(void)
{
	return cache_max_entries > 0;
}

/*
 * Look a (user, name) up.  On a hit returns the plaintext as a text datum
 * allocated in the caller's memory context, and the id and version stored
 * with it in secret_id and version; NULL on a miss.
 */
text *
se_cache_lookup(Oid userid, const char *name, int namelen, uint8 *secret_id,
				int32 *version)
{
	CacheKey	key;
	CacheEntry *entry;
	text	   *result;
	size_t		ptlen;
	int			slot;

	if (cache_table == NULL || !se_cache_enabled() || namelen > SE_CACHE_MAX_NAME_LEN)
	{
		counters.misses++;
		return NULL;
	}
	maintain(monotonic_us());

	make_key(userid, name, namelen, &key);
	entry = hash_search(cache_table, &key, HASH_FIND, NULL);
	if (entry != NULL && !entry_readable(entry))
	{
		/* Its key died after maintain() ran. */
		remove_entry(entry);
		counters.expirations++;
		entry = NULL;
	}
	if (entry == NULL)
	{
		counters.misses++;
		return NULL;
	}

	slot = entry->slot;
	ptlen = entry->sealed_len - SE_SEAL_OVERHEAD;
	result = MemoryContextAllocExtended(CurrentMemoryContext, VARHDRSZ + ptlen,
										MCXT_ALLOC_NO_OOM);
	if (result == NULL)
	{
		counters.misses++;
		return NULL;
	}
	if (se_aead_open(se_engine(), bucket_keys->key[slot],
					 (const uint8_t *) &key, sizeof(CacheKey),
					 entry->sealed, entry->sealed_len,
					 (uint8_t *) VARDATA(result)) != SE_OK)
	{
		/* The timer wiped its key during the open: the entry is dead. */
		pfree(result);
		remove_entry(entry);
		counters.expirations++;
		counters.misses++;
		return NULL;
	}
	SET_VARSIZE(result, VARHDRSZ + ptlen);
	memcpy(secret_id, entry->secret_id, SE_CACHE_ID_LEN);
	*version = entry->version;
	dlist_move_head(&lru_list, &entry->lru_node);
	counters.hits++;
	return result;
}

/*
 * Slot of the current bucket's key, made if needed; -1 when no key can be
 * had (CSPRNG failure).  A slot is refilled only with its timeout disarmed
 * (retire_slot), and armed again once the new key is complete and live.
 */
static int
key_slot_for_fill(int64 now)
{
	int64		len = bucket_len_us();
	int64		bucket = now / len;
	int			slot = -1;

	for (int i = 0; i < NUM_KEY_SLOTS; i++)
		if (slot_live[i] && slot_bucket[i] == bucket && slot_bucket_us[i] == len)
			return i;

	/* maintain() retired keys past their end: a free slot exists. */
	for (int i = 0; i < NUM_KEY_SLOTS; i++)
		if (!slot_live[i])
		{
			slot = i;
			break;
		}
	if (slot < 0)
	{
		/* Both keys are of buckets older than the current one: keep the newer. */
		slot = slot_bucket[0] < slot_bucket[1] ? 0 : 1;
	}
	retire_slot(slot);
	if (se_random_bytes(bucket_keys->key[slot], SE_KEY_LEN) != SE_OK)
	{
		se_wipe(bucket_keys->key[slot], SE_KEY_LEN);
		return -1;
	}
	slot_serial[slot] = next_serial++;
	slot_bucket[slot] = bucket;
	slot_bucket_us[slot] = len;
	slot_end_us[slot] = (bucket + 2) * len;
	pg_compiler_barrier();
	slot_live[slot] = true;
	enable_timeout_after(slot_timeout[slot],
						 (int) ((slot_end_us[slot] - now + 999) / 1000));
	return slot;
}

/*
 * Store a plaintext under (user, name), with the secret's id and version
 * (not secrets; kept in clear).  Failing to store (no memory, no key, name too
 * long, key wiped meanwhile) is silent: the cache is an optimisation.
 */
void
se_cache_insert(Oid userid, const char *name, int namelen, const uint8 *secret_id,
				int32 version, const char *pt, size_t ptlen)
{
	CacheKey	key;
	CacheEntry *entry;
	bool		found;
	int64		now;
	int			slot;
	uint64		serial;
	uint8_t    *sealed;
	size_t		sealed_len = ptlen + SE_SEAL_OVERHEAD;

	if (!se_cache_enabled() || namelen > SE_CACHE_MAX_NAME_LEN)
		return;
	ensure_cache();
	now = monotonic_us();
	maintain(now);

	slot = key_slot_for_fill(now);
	if (slot < 0)
		return;
	serial = slot_serial[slot];

	sealed = MemoryContextAllocExtended(cache_context, sealed_len, MCXT_ALLOC_NO_OOM);
	if (sealed == NULL)
		return;
	make_key(userid, name, namelen, &key);
	if (se_aead_seal(se_engine(), bucket_keys->key[slot],
					 (const uint8_t *) &key, sizeof(CacheKey),
					 (const uint8_t *) pt, ptlen, sealed) != SE_OK)
	{
		se_wipe(sealed, sealed_len);
		pfree(sealed);
		return;
	}
	pg_compiler_barrier();
	if (!slot_live[slot] || slot_serial[slot] != serial)
	{
		/* The timer wiped the key while we sealed: nothing to keep. */
		se_wipe(sealed, sealed_len);
		pfree(sealed);
		return;
	}

	entry = hash_search(cache_table, &key, HASH_FIND, NULL);
	if (entry != NULL)
		remove_entry(entry);
	while (num_entries >= cache_max_entries && !dlist_is_empty(&lru_list))
	{
		remove_entry(dlist_container(CacheEntry, lru_node, dlist_tail_node(&lru_list)));
		counters.evictions++;
	}

	entry = hash_search(cache_table, &key, HASH_ENTER_NULL, &found);
	if (entry == NULL)
	{
		se_wipe(sealed, sealed_len);
		pfree(sealed);
		return;
	}
	entry->slot = slot;
	entry->key_serial = serial;
	entry->sealed = sealed;
	entry->sealed_len = sealed_len;
	memcpy(entry->secret_id, secret_id, SE_CACHE_ID_LEN);
	entry->version = version;
	dlist_push_head(&lru_list, &entry->lru_node);
	dlist_push_tail(&fill_list, &entry->fill_node);
	num_entries++;
}

/* Drop every entry and key of this backend's cache. */
void
se_cache_clear_all(void)
{
	if (cache_table == NULL)
		return;
	remove_all_entries();
	for (int i = 0; i < NUM_KEY_SLOTS; i++)
		retire_slot(i);
}

/* The same, counted as an invalidation when there was something to drop. */
void
se_cache_invalidate(void)
{
	if (cache_table == NULL)
		return;
	if (num_entries > 0)
		counters.invalidations++;
	se_cache_clear_all();
}

static bool
check_cache_ttl(int *newval, void **extra, GucSource source)
{
	if (*newval < 10 || *newval > 300)
	{
		GUC_check_errdetail("secretenv.cache_ttl must be between 10 and 300 seconds: "
							"shorter makes nearly every secret_get decrypt from the table, "
							"longer keeps each decrypted secret in backend memory for longer.");
		return false;
	}
	return true;
}

/*
 * A TTL or size change: entries sealed under the old TTL's buckets are not
 * kept.  Only the keys are wiped here (what the timer handler does, safe at
 * any point); the entries, unreadable from now on, are freed by the next
 * operation.
 */
static void
assign_cache_settings(int newval, void *extra)
{
	if (bucket_keys == NULL)
		return;
	for (int i = 0; i < NUM_KEY_SLOTS; i++)
		if (slot_live[i])
			wipe_slot_key(i);
	settings_changed = true;
}

static void
cache_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT && bucket_keys != NULL)
		rearm_timers(monotonic_us());
}

static void
cache_ProcessUtility(PlannedStmt *pstmt, const char *queryString,
					 bool readOnlyTree, ProcessUtilityContext context,
					 ParamListInfo params, QueryEnvironment *queryEnv,
					 DestReceiver *dest, QueryCompletion *qc)
{
	se_next_process_utility(prev_ProcessUtility, pstmt, queryString, readOnlyTree,
							context, params, queryEnv, dest, qc);
	if (IsA(pstmt->utilityStmt, TransactionStmt) && bucket_keys != NULL)
		rearm_timers(monotonic_us());
}

void
se_cache_init(void)
{
	DefineCustomIntVariable("secretenv.cache_ttl",
							"Seconds a decrypted secret stays at most in a backend's credential cache.",
							"Between 10 and 300.",
							&cache_ttl,
							60, 0, INT_MAX,
							PGC_SUSET,
							GUC_UNIT_S,
							check_cache_ttl, assign_cache_settings, NULL);

	DefineCustomIntVariable("secretenv.cache_max_entries",
							"Maximum number of secrets in a backend's credential cache; 0 disables it.",
							NULL,
							&cache_max_entries,
							1000, 0, 1000000,
							PGC_SUSET,
							0,
							NULL, assign_cache_settings, NULL);

	RegisterXactCallback(cache_xact_callback, NULL);
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = cache_ProcessUtility;
}

/* Wipe every entry and bucket key of this backend's cache. */
PG_FUNCTION_INFO_V1(secret_cache_clear);
Datum
secret_cache_clear(PG_FUNCTION_ARGS)
{
	se_cache_clear_all();
	PG_RETURN_VOID();
}

/* Return the cache's settings and counters as jsonb. */
PG_FUNCTION_INFO_V1(secret_cache_stats);
Datum
secret_cache_stats(PG_FUNCTION_ARGS)
{
	char	   *json;

	/* Entries under keys the timer wiped are gone: free and count them. */
	if (cache_table != NULL)
		maintain(monotonic_us());
	json = psprintf("{\"ttl_seconds\": %d, \"max_entries\": %d, "
					"\"hits\": " UINT64_FORMAT ", \"misses\": " UINT64_FORMAT ", "
					"\"evictions\": " UINT64_FORMAT ", \"expirations\": " UINT64_FORMAT ", "
					"\"timer_purges\": " UINT64_FORMAT ", \"invalidations\": " UINT64_FORMAT ", "
					"\"live_entries\": %d, \"live_bucket_keys\": %d}",
					cache_ttl, cache_max_entries,
					counters.hits, counters.misses, counters.evictions,
					counters.expirations, (uint64) timer_purges,
					counters.invalidations, num_entries, live_key_count());
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
}
