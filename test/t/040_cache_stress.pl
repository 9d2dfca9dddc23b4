# Credential cache under concurrency (DESIGN 7b): no secret_get ever returns
# a value older than the newest one whose commit finished before the call
# began.
#
# Writers own disjoint keys and write values carrying a sequence number
# that only grows per key; after each commit returns, the writer records
# that number as the key's floor (stress.marks).  Readers (PL/pgSQL, so that
# each statement takes a fresh snapshot and no client round trip slows
# them) read a key's floor, then call secret_get on it: the floor's commit
# finished before the floor was read, so the value must carry at least that
# number.  Meanwhile a churn session runs ANALYZE, VACUUM and
# pg_reload_conf() (each sends relcache invalidations of the table or
# reloads settings), and readers clear their own cache now and then, so
# misses, fills and invalidations interleave all the time.
#
# Bounded: the load runs STRESS_SECS seconds (default 40).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;
use IPC::Run;

my $secs = $ENV{STRESS_SECS} // 40;
my $keys = 20;
my $writers = 2;
my $readers = 6;
my $batch = 500;

my $node = new_secretenv_node('stress', conf => qq{
secretenv.kek_passphrase = 'stress-test-passphrase-0123456789-abcdefgh'
autovacuum = off
fsync = off
max_connections = 30
});
$node->start;
$node->safe_psql('postgres', qq{
	CREATE EXTENSION secretenv;
	CREATE SCHEMA stress;
	CREATE TABLE stress.marks (k int PRIMARY KEY, seq bigint NOT NULL);
	CREATE TABLE stress.stale (k int, floor bigint, got bigint);
	CREATE TABLE stress.batches (reads int, hits bigint, misses bigint);
	CREATE SEQUENCE stress.seq;
	INSERT INTO stress.marks SELECT k, 0 FROM generate_series(1, $keys) k;
	SELECT count(secretenv.secret_create('st-' || k, 'st-' || k || ':0'))
	FROM generate_series(1, $keys) k;

	CREATE FUNCTION stress.read_batch(n int) RETURNS int LANGUAGE plpgsql AS \$\$
	DECLARE
		key int;
		floor_seq bigint;
		got bigint;
		stale int := 0;
		s0 jsonb := secretenv.cache_stats();
		s1 jsonb;
	BEGIN
		FOR i IN 1 .. n LOOP
			key := 1 + floor(random() * $keys)::int;
			SELECT m.seq INTO floor_seq FROM stress.marks m WHERE m.k = key;
			got := split_part(secretenv.secret_get('st-' || key), ':', 2)::bigint;
			IF got < floor_seq THEN
				stale := stale + 1;
				INSERT INTO stress.stale VALUES (key, floor_seq, got);
			END IF;
			IF random() < 0.002 THEN
				PERFORM secretenv.cache_clear();
			END IF;
		END LOOP;
		s1 := secretenv.cache_stats();
		INSERT INTO stress.batches VALUES (n, (s1->>'hits')::bigint - (s0->>'hits')::bigint,
			(s1->>'misses')::bigint - (s0->>'misses')::bigint);
		RETURN stale;
	END
	\$\$;
});

my $dir = PostgreSQL::Test::Utils::tempdir;
my $per_writer = $keys / $writers;
open(my $fh, '>', "$dir/write.sql") or die;
print $fh qq{\\set k random(1, $per_writer)
\\set key :client_id * $per_writer + :k
SELECT nextval('stress.seq') AS s \\gset
SELECT secretenv.secret_update('st-' || :key, 'st-' || :key || ':' || :s);
UPDATE stress.marks SET seq = :s WHERE k = :key;
};
close $fh;
open($fh, '>', "$dir/read.sql") or die;
print $fh "SELECT stress.read_batch($batch);\n";
close $fh;
open($fh, '>', "$dir/churn.sql") or die;
print $fh q{\set r random(1, 3)
\if :r = 1
ANALYZE secretenv.secrets;
\elif :r = 2
VACUUM secretenv.secrets;
\else
SELECT pg_reload_conf();
\endif
};
close $fh;

my @common = ('pgbench', '-n', '-T', $secs, '-h', $node->host, '-p', $node->port);
my %out;
my @runs;
for my $group ([ 'read', $readers ], [ 'write', $writers ], [ 'churn', 1 ])
{
	my ($name, $clients) = @$group;
	$out{$name} = '';
	push @runs, IPC::Run::start([ @common, '-c', $clients, '-j', $clients,
		'-f', "$dir/$name.sql", 'postgres' ], '>', \$out{$name}, '2>&1');
}
ok($_->finish, 'pgbench run completed') for @runs;

my %tx;
for my $name (keys %out)
{
	($tx{$name}) = $out{$name} =~ /number of transactions actually processed: (\d+)/;
	$tx{$name} //= 0;
	unlike($out{$name}, qr/ERROR|aborted/, "$name clients ran without errors")
		or diag($out{$name});
}
my ($reads, $hits, $misses) = split /\|/, $node->safe_psql('postgres',
	'SELECT sum(reads), sum(hits), sum(misses) FROM stress.batches');
my $updates = $node->safe_psql('postgres', q{SELECT last_value FROM stress.seq});
my $stale = $node->safe_psql('postgres', 'SELECT count(*) FROM stress.stale');
diag("$reads reads ($hits hits, $misses misses), $updates updates, "
	. "$tx{churn} churn statements, $stale stale reads in $secs s");

is($reads, $tx{read} * $batch, 'every reader batch was counted');
cmp_ok($reads, '>=', 1_000_000, 'at least a million reads');
cmp_ok($updates, '>=', 1000, 'writers committed at least 1000 updates');
cmp_ok($tx{churn}, '>=', 20, 'catalog churn ran throughout');
cmp_ok($hits, '>', $reads / 10, 'the cache served a real share of the reads');
cmp_ok($misses, '>', 1000, 'and missed often (invalidations, clears)');
is($stale, '0', 'no stale read');

$node->stop;
done_testing();
