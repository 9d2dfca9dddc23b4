-- The credential cache of this backend: hits, invalidation, LRU bound, TTL.
\set SHOW_CONTEXT never
SELECT secretenv.secret_create('cache-a', 'sk-cache-a-0123456789') IS NOT NULL AS created;
SELECT secretenv.cache_clear();
SELECT secretenv.secret_get('cache-a'), secretenv.secret_get('cache-a');
SELECT s->'hits' AS hits, s->'misses' AS misses, s->'live_entries' AS live, s->'live_bucket_keys' AS keys
FROM secretenv.cache_stats() s;

-- A committed change clears the cache; the next read sees the new value.
SELECT secretenv.secret_update('cache-a', 'sk-cache-a-changed-0001');
SELECT secretenv.secret_get('cache-a');
SELECT (s->>'invalidations')::int > 0 AS invalidated FROM secretenv.cache_stats() s;

-- An aborted update leaves no trace.
BEGIN;
SELECT secretenv.secret_update('cache-a', 'sk-cache-a-aborted-0002');
SELECT secretenv.secret_get('cache-a');
ROLLBACK;
SELECT secretenv.secret_get('cache-a');

-- So does a rolled-back savepoint.
BEGIN;
SAVEPOINT s1;
SELECT secretenv.secret_update('cache-a', 'sk-cache-a-savepoint-0003');
SELECT secretenv.secret_get('cache-a');
ROLLBACK TO SAVEPOINT s1;
SELECT secretenv.secret_get('cache-a');
COMMIT;

-- cache_clear wipes every entry and key.
SELECT secretenv.cache_clear();
SELECT s->'live_entries' AS live, s->'live_bucket_keys' AS keys FROM secretenv.cache_stats() s;

-- LRU bound: 50 names through a cache of 5.
SELECT count(secretenv.secret_create('lru-' || i, 'lru-value-' || i || '-0123456789')) FROM generate_series(1, 50) i;
SET secretenv.cache_max_entries = 5;
SELECT count(*) FILTER (WHERE secretenv.secret_get('lru-' || i) = 'lru-value-' || i || '-0123456789') AS correct
FROM generate_series(1, 50) i;
SELECT s->'live_entries' AS live, (s->>'evictions')::int >= 45 AS evicted FROM secretenv.cache_stats() s;

-- Disabled cache: values still correct, nothing kept.
SET secretenv.cache_max_entries = 0;
SELECT secretenv.secret_get('lru-7'), secretenv.secret_get('lru-7');
SELECT s->'live_entries' AS live FROM secretenv.cache_stats() s;
RESET secretenv.cache_max_entries;

-- TTL bounds, with the trade-off explained.
SET secretenv.cache_ttl = 5;
SET secretenv.cache_ttl = 301;
SET secretenv.cache_ttl = 10;
SHOW secretenv.cache_ttl;
RESET secretenv.cache_ttl;

-- Names longer than 127 bytes are served, uncached.
SELECT secretenv.secret_create(repeat('n', 200), 'long-name-value-0123') IS NOT NULL AS created;
SELECT secretenv.cache_clear();
SELECT secretenv.secret_get(repeat('n', 200));
SELECT s->'live_entries' AS live FROM secretenv.cache_stats() s;

DELETE FROM secretenv.secrets WHERE secret_name LIKE 'lru-%' OR secret_name LIKE 'cache-%' OR secret_name = repeat('n', 200);
