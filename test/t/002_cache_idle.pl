# The credential cache of an idle backend: with cache_ttl = 10, entries and
# bucket keys are wiped by the timer while the session runs no statement
# (live counts 0, timer purges > 0).  And the LRU bound holds, memory too,
# with ten times more names than the bound.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;
use Time::HiRes qw(sleep time);

my $node = new_secretenv_node('cache', conf => qq{
secretenv.kek_passphrase = 'cache-test-passphrase-0123456789-abcdefgh'
autovacuum = off
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION secretenv;
	SELECT count(secretenv.secret_create('idle-' || i, 'idle-value-' || i || '-0123456789'))
	FROM generate_series(1, 20) i;
	SELECT count(secretenv.secret_create('lru-' || i, repeat('v', 200) || i))
	FROM generate_series(1, 1000) i;
});

my $session = $node->background_psql('postgres');
$session->query_safe('SET secretenv.cache_ttl = 10');
is($session->query_safe(q{
	SELECT count(*) FILTER (WHERE secretenv.secret_get('idle-' || i) = 'idle-value-' || i || '-0123456789')
	FROM generate_series(1, 20) i}), '20', '20 secrets read through the cache');
my $stats = $session->query_safe(q{
	SELECT s->>'live_entries', s->>'live_bucket_keys', s->>'timer_purges' FROM secretenv.cache_stats() s});
my ($live, $keys, $purges) = split /\|/, $stats;
is($live, '20', 'the 20 values are cached');
cmp_ok($keys, '>=', 1, 'under at least one bucket key');
is($purges, '0', 'no timer purge yet');

# Idle: no statement in this session for longer than the TTL plus a tick.
my $started = time;
sleep(13);
$stats = $session->query_safe(q{
	SELECT s->>'live_entries', s->>'live_bucket_keys', s->>'timer_purges', s->>'expirations'
	FROM secretenv.cache_stats() s});
($live, $keys, $purges, my $expirations) = split /\|/, $stats;
diag(sprintf('after %.1f s idle: live entries %s, live bucket keys %s, timer purges %s, expirations %s',
	time - $started, $live, $keys, $purges, $expirations));
is($live, '0', 'an idle backend holds no live entry after the TTL');
is($keys, '0', 'and no bucket key');
cmp_ok($purges, '>', 0, 'the timer did it (timer purges > 0)');
is($expirations, '20', 'all 20 entries counted as expired');

# The values come back, decrypted again from the table.
is($session->query_safe(q{SELECT secretenv.secret_get('idle-1')}), 'idle-value-1-0123456789',
	'a later read decrypts again');

# LRU bound: 1000 names through a cache of 100, twice; memory stays flat.
$session->query_safe('SET secretenv.cache_max_entries = 100');
$session->query_safe('SET secretenv.cache_ttl = 300');
my $memory = q{
	SELECT sum(total_bytes) FROM pg_backend_memory_contexts WHERE name LIKE 'secretenv%'};
is($session->query_safe(q{
	SELECT count(*) FILTER (WHERE secretenv.secret_get('lru-' || i) = repeat('v', 200) || i)
	FROM generate_series(1, 1000) i}), '1000', '1000 names read with a bound of 100');
my $bytes_first = $session->query_safe($memory);
is($session->query_safe(q{
	SELECT count(*) FILTER (WHERE secretenv.secret_get('lru-' || i) = repeat('v', 200) || i)
	FROM generate_series(1, 1000) i}), '1000', 'and again');
my $bytes_second = $session->query_safe($memory);
$stats = $session->query_safe(q{SELECT s->>'live_entries', s->>'evictions' FROM secretenv.cache_stats() s});
my ($live_lru, $evictions) = split /\|/, $stats;
is($live_lru, '100', 'the cache holds exactly its bound');
cmp_ok($evictions, '>=', 1900, 'evicting the rest');
diag("cache context: $bytes_first bytes after 1000 names, $bytes_second after 2000");
cmp_ok($bytes_second, '<=', $bytes_first * 1.25 + 65536, 'memory stays bounded');

$session->quit;
$node->stop;
done_testing();
