/*-------------------------------------------------------------------------
 *
 * cache.c
 *	  Per-backend credential cache behind secret_get().
 *
 * Entries map a secret name to its plaintext, sealed with AES-256-GCM
 * (AAD = the name) under a time-bucket key.  Time is cut into buckets of
 * secretenv.cache_ttl seconds; a bucket key is drawn from the CSPRNG when
 * its bucket first needs one, never derived from anything, and at most two
 * exist: the current bucket's and the previous bucket's.  An entry lives at
 * most cache_ttl seconds, so once a bucket is two buckets old none of its
 * entries is alive and its key is wiped: from then on its entries cannot be
 * decrypted even from a full memory dump.
 *
 * Idle purge.  A periodic timer (SIGALRM) wipes expired entries and keys
 * even when the backend runs no query.  The timer handler runs in signal
 * context, so it only overwrites memory and counters, never allocates or
 * frees, and does nothing if it interrupted the cache itself (cache_busy);
 * then the pending purge runs when the interrupted operation ends.  Memory
 * of purged entries is released on the next ordinary cache operation.
 *
 * Invalidation.  A statement trigger on secretenv.secrets queues a relcache
 * invalidation of the table; every backend's relcache callback clears its
 * cache when the change commits.  A key configuration change (reload) or a
 * TTL change also clears it, and so does the abort of a transaction that
 * filled entries.  Which values may be cached at all is secret_get.c's
 * decision (only the latest committed version of a row).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>
#include <signal.h>

#include "access/xact.h"
#include "lib/ilist.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/fmgrprotos.h"
#include "utils/memutils.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include "secretenv.h"

#define NUM_BUCKET_KEYS 2

/* GUC variables */
static int	cache_ttl = 60;
static int	cache_max_entries = 1000;

typedef struct CacheEntry
{
	char		name[SE_CACHE_MAX_NAME_LEN + 1];	/* hash key, NUL-padded */
	dlist_node	lru_node;		/* most recently used at the head */
	dlist_node	fill_node;		/* fill order = expiry order */
	TimestampTz expires_at;
	int64		bucket;			/* bucket whose key sealed the value */
	bool		purged;			/* wiped by the timer; memory not yet freed */
	uint8_t    *sealed;			/* nonce || ciphertext || tag */
	size_t		sealed_len;
} CacheEntry;

typedef struct BucketKeys
{
	uint8_t		key[NUM_BUCKET_KEYS][SE_KEY_LEN];
} BucketKeys;

typedef struct CacheCounters
{
	uint64		hits;
	uint64		misses;
	uint64		evictions;
	uint64		expirations;
	uint64		timer_purges;
	uint64		invalidations;
} CacheCounters;

static MemoryContext cache_context = NULL;
static HTAB *cache_table = NULL;
static dlist_head lru_list = DLIST_STATIC_INIT(lru_list);
static dlist_head fill_list = DLIST_STATIC_INIT(fill_list);

/* Bucket keys live in secure memory; slot i serves bucket key_bucket[i]. */
static BucketKeys *bucket_keys = NULL;
static int	bucket_keys_locked = 0;
static int64 key_bucket[NUM_BUCKET_KEYS] = {-1, -1};
static volatile int live_keys = 0;
static volatile int live_entries = 0;
static volatile int purged_entries = 0;	/* wiped, memory not yet freed */

static CacheCounters counters;
static volatile sig_atomic_t cache_busy = false;
static volatile sig_atomic_t purge_pending = false;
static TimeoutId purge_timeout = MAX_TIMEOUTS;

static uint64 seen_key_generation = 0;
static bool filled_in_xact = false;

static int64
bucket_of(TimestampTz t)
{
	return (int64) (t / ((int64) cache_ttl * USECS_PER_SEC));
}

static int
key_slot_of(int64 bucket)
{
	for (int i = 0; i < NUM_BUCKET_KEYS; i++)
		if (key_bucket[i] == bucket)
			return i;
	return -1;
}

static void
wipe_key_slot(int slot)
{
	if (key_bucket[slot] < 0)
		return;
	se_wipe(bucket_keys->key[slot], SE_KEY_LEN);
	key_bucket[slot] = -1;
	live_keys--;
}

/*
 * Wipe everything expired at time now: entry ciphertexts past their expiry
 * and keys of buckets no live entry can use.  Overwrites only, so it is
 * safe in the timer's signal handler; returns the number of entries wiped.
 */
static int
wipe_expired(TimestampTz now)
{
	dlist_iter	iter;
	int			wiped = 0;
	int64		current = bucket_of(now);
	bool		key_in_use[NUM_BUCKET_KEYS] = {false, false};

	dlist_foreach(iter, &fill_list)
	{
		CacheEntry *entry = dlist_container(CacheEntry, fill_node, iter.cur);
		int			slot;

		if (entry->purged)
			continue;
		if (entry->expires_at <= now)
		{
			se_wipe(entry->sealed, entry->sealed_len);
			entry->purged = true;
			live_entries--;
			purged_entries++;
			wiped++;
			continue;
		}
		slot = key_slot_of(entry->bucket);
		if (slot >= 0)
			key_in_use[slot] = true;
	}

	for (int i = 0; i < NUM_BUCKET_KEYS; i++)
		if (key_bucket[i] >= 0 &&
			(key_bucket[i] < current - 1 || (!key_in_use[i] && key_bucket[i] != current)))
			wipe_key_slot(i);
	return wiped;
}

static void
purge_timer_handler(void)
{
	int			wiped;

	if (cache_busy)
	{
		purge_pending = true;
		return;
	}
	wiped = wipe_expired(GetCurrentTimestamp());
	counters.expirations += wiped;
	if (wiped > 0)
		counters.timer_purges++;
}

/* Release the memory of an entry; its ciphertext is wiped first. */
static void
remove_entry(CacheEntry *entry)
{
	if (entry->purged)
		purged_entries--;
	else
	{
		se_wipe(entry->sealed, entry->sealed_len);
		live_entries--;
	}
	pfree(entry->sealed);
	dlist_delete(&entry->lru_node);
	dlist_delete(&entry->fill_node);
	hash_search(cache_table, entry->name, HASH_REMOVE, NULL);
}

/*
 * Free the memory of entries the timer already wiped.  Expiry follows fill
 * order, so they are at the head of the fill list.
 */
static void
sweep_purged(void)
{
	while (purged_entries > 0 && !dlist_is_empty(&fill_list))
	{
		CacheEntry *entry = dlist_container(CacheEntry, fill_node,
											dlist_head_node(&fill_list));

		if (!entry->purged)
			break;
		remove_entry(entry);
	}
}

static void
clear_all(void)
{
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &fill_list)
		remove_entry(dlist_container(CacheEntry, fill_node, iter.cur));
	for (int i = 0; i < NUM_BUCKET_KEYS; i++)
		wipe_key_slot(i);
}

static void
begin_operation(void)
{
	cache_busy = true;
}

static void
end_operation(void)
{
	cache_busy = false;
	if (purge_pending)
	{
		purge_pending = false;
		purge_timer_handler();
	}
}

static void
stop_timer_if_empty(void)
{
	if (live_entries == 0 && live_keys == 0 && purge_timeout != MAX_TIMEOUTS &&
		get_timeout_active(purge_timeout))
		disable_timeout(purge_timeout, false);
}

void
se_cache_clear_all(void)
{
	if (cache_table == NULL)
		return;
	begin_operation();
	clear_all();
	end_operation();
	stop_timer_if_empty();
}

/* Clear when the key configuration changed since the cache was filled. */
static void
check_key_generation(void)
{
	uint64		generation = se_keyring_generation();

	if (generation != seen_key_generation)
	{
		seen_key_generation = generation;
		if (live_entries > 0)
			counters.invalidations++;
		clear_all();
	}
}

static void
ensure_cache(void)
{
	HASHCTL		ctl;

	if (cache_table != NULL)
		return;

	cache_context = AllocSetContextCreate(TopMemoryContext,
										  "secretenv credential cache",
										  ALLOCSET_DEFAULT_SIZES);
	ctl.keysize = SE_CACHE_MAX_NAME_LEN + 1;
	ctl.entrysize = sizeof(CacheEntry);
	ctl.hcxt = cache_context;
	cache_table = hash_create("secretenv cache entries", 256, &ctl,
							  HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);

	bucket_keys = se_secure_alloc(sizeof(BucketKeys), &bucket_keys_locked);
	if (bucket_keys == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not allocate secure memory for the credential cache")));

	/* Timeouts are per backend: InitPostgres resets them after fork. */
	purge_timeout = RegisterTimeout(USER_TIMEOUT, purge_timer_handler);
	seen_key_generation = se_keyring_generation();
}

static void
ensure_timer(TimestampTz now)
{
	int			period_ms = Max(1000, cache_ttl * 100);

	if (!get_timeout_active(purge_timeout))
		enable_timeout_every(purge_timeout,
							 TimestampTzPlusMilliseconds(now, period_ms),
							 period_ms);
}

static void
name_key(const char *name, int namelen, char *key)
{
	memset(key, 0, SE_CACHE_MAX_NAME_LEN + 1);
	memcpy(key, name, namelen);
}

bool
se_cache_enabled(void)
{
	return cache_max_entries > 0;
}

/*
 * Look a name up.  On a hit returns the plaintext as a text datum
 * allocated in the caller's memory context.
 */
text *
se_cache_lookup(const char *name, int namelen)
{
	char		key[SE_CACHE_MAX_NAME_LEN + 1];
	CacheEntry *entry;
	TimestampTz now;
	text	   *result = NULL;
	int			slot;
	se_status	status;

	if (!se_cache_enabled() || namelen > SE_CACHE_MAX_NAME_LEN)
		return NULL;
	ensure_cache();
	now = GetCurrentTimestamp();

	begin_operation();
	check_key_generation();
	sweep_purged();
	name_key(name, namelen, key);
	entry = hash_search(cache_table, key, HASH_FIND, NULL);
	if (entry != NULL && entry->expires_at <= now)
	{
		remove_entry(entry);
		counters.expirations++;
		entry = NULL;
	}
	if (entry != NULL && (slot = key_slot_of(entry->bucket)) < 0)
	{
		/* Its bucket key is already gone: the entry is unreadable. */
		remove_entry(entry);
		counters.expirations++;
		entry = NULL;
	}
	if (entry != NULL)
	{
		size_t		ptlen = entry->sealed_len - SE_SEAL_OVERHEAD;

		result = (text *) palloc(VARHDRSZ + ptlen);
		status = se_aead_open(se_engine(), bucket_keys->key[slot],
							  (const uint8_t *) key, namelen,
							  entry->sealed, entry->sealed_len,
							  (uint8_t *) VARDATA(result));
		if (status == SE_OK)
		{
			SET_VARSIZE(result, VARHDRSZ + ptlen);
			dlist_move_head(&lru_list, &entry->lru_node);
			counters.hits++;
		}
		else
		{
			/* Cannot happen unless memory was corrupted: drop the entry. */
			pfree(result);
			result = NULL;
			remove_entry(entry);
		}
	}
	if (result == NULL)
		counters.misses++;
	end_operation();
	return result;
}

/* Key slot for sealing at time now, creating the bucket key if needed. */
static int
key_slot_for_fill(TimestampTz now)
{
	int64		current = bucket_of(now);
	int			slot = key_slot_of(current);

	if (slot >= 0)
		return slot;

	/* Drop keys older than the previous bucket, then take a free slot. */
	for (int i = 0; i < NUM_BUCKET_KEYS; i++)
		if (key_bucket[i] >= 0 && key_bucket[i] < current - 1)
			wipe_key_slot(i);
	for (int i = 0; i < NUM_BUCKET_KEYS; i++)
		if (key_bucket[i] < 0)
		{
			if (se_random_bytes(bucket_keys->key[i], SE_KEY_LEN) != SE_OK)
				return -1;
			key_bucket[i] = current;
			live_keys++;
			return i;
		}
	return -1;
}

/*
 * Cache a plaintext under a name.  Failure to cache (no key, name too long)
 * is silent: the cache is an optimisation.
 */
void
se_cache_insert(const char *name, int namelen, const char *pt, size_t ptlen)
{
	char		key[SE_CACHE_MAX_NAME_LEN + 1];
	CacheEntry *entry;
	bool		found;
	TimestampTz now;
	int			slot;
	uint8_t    *sealed;

	if (!se_cache_enabled() || namelen > SE_CACHE_MAX_NAME_LEN)
		return;
	ensure_cache();
	now = GetCurrentTimestamp();

	begin_operation();
	check_key_generation();
	slot = key_slot_for_fill(now);
	if (slot < 0)
	{
		end_operation();
		return;
	}

	sealed = MemoryContextAlloc(cache_context, ptlen + SE_SEAL_OVERHEAD);
	name_key(name, namelen, key);
	if (se_aead_seal(se_engine(), bucket_keys->key[slot], (const uint8_t *) key,
					 namelen, (const uint8_t *) pt, ptlen, sealed) != SE_OK)
	{
		pfree(sealed);
		end_operation();
		return;
	}

	entry = hash_search(cache_table, key, HASH_FIND, NULL);
	if (entry != NULL)
		remove_entry(entry);
	while (live_entries >= cache_max_entries && !dlist_is_empty(&lru_list))
	{
		remove_entry(dlist_container(CacheEntry, lru_node, dlist_tail_node(&lru_list)));
		counters.evictions++;
	}

	entry = hash_search(cache_table, key, HASH_ENTER, &found);
	entry->expires_at = now + (TimestampTz) cache_ttl * USECS_PER_SEC;
	entry->bucket = bucket_of(now);
	entry->purged = false;
	entry->sealed = sealed;
	entry->sealed_len = ptlen + SE_SEAL_OVERHEAD;
	dlist_push_head(&lru_list, &entry->lru_node);
	dlist_push_tail(&fill_list, &entry->fill_node);
	live_entries++;
	filled_in_xact = true;
	end_operation();

	ensure_timer(now);
}

/* Relcache callback: a committed change to secretenv.secrets, or a reset. */
static void
relcache_changed(Datum arg, Oid relid)
{
	if (relid != InvalidOid && relid != se_secrets_relid_cached())
		return;
	se_forget_secrets_relid();
	if (cache_table == NULL)
		return;
	if (live_entries > 0)
		counters.invalidations++;
	begin_operation();
	clear_all();
	end_operation();
}

/* Entries filled by a transaction that aborts may hold its uncommitted data. */
static void
xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
	{
		if (filled_in_xact)
			se_cache_clear_all();
		filled_in_xact = false;
	}
	else if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
		filled_in_xact = false;
}

static void
subxact_callback(SubXactEvent event, SubTransactionId mySubid,
				 SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB && filled_in_xact)
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

static void
assign_cache_settings(int newval, void *extra)
{
	/* Entries sealed under the old TTL's buckets are not worth keeping. */
	if (cache_table != NULL && !cache_busy)
		clear_all();
}

void
se_cache_init(void)
{
	DefineCustomIntVariable("secretenv.cache_ttl",
							"Seconds a decrypted secret stays in a backend's credential cache.",
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

	CacheRegisterRelcacheCallback(relcache_changed, (Datum) 0);
	RegisterXactCallback(xact_callback, NULL);
	RegisterSubXactCallback(subxact_callback, NULL);
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

	if (cache_table != NULL)
	{
		begin_operation();
		sweep_purged();
		end_operation();
	}
	json = psprintf("{\"ttl_seconds\": %d, \"max_entries\": %d, "
					"\"hits\": " UINT64_FORMAT ", \"misses\": " UINT64_FORMAT ", "
					"\"evictions\": " UINT64_FORMAT ", \"expirations\": " UINT64_FORMAT ", "
					"\"timer_purges\": " UINT64_FORMAT ", \"invalidations\": " UINT64_FORMAT ", "
					"\"live_entries\": %d, \"live_bucket_keys\": %d}",
					cache_ttl, cache_max_entries,
					counters.hits, counters.misses, counters.evictions,
					counters.expirations, counters.timer_purges,
					counters.invalidations, live_entries, live_keys);
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
}
