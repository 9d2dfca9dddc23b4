
# Copyright (c) secretenv contributors
#
# Parallel query (issue 11, DESIGN §7a): passphrase bytes are never copied
# into a parallel query's shared memory, and a parallel worker never runs
# the passphrase command nor PBKDF2.
#
# Preloaded node, KEK from a passphrase command that appends a line to a
# counter file each time it runs:
#  - a table of 3 000 rows decrypted with secret_decrypt under forced
#    parallel plans (two workers, leader not participating, so the workers
#    do every decrypt) gives the same count and checksum as a serial plan;
#    EXPLAIN ANALYZE shows 2 workers launched and rows in each; the counter
#    file did not grow (the command ran once, in the postmaster, at start)
#    and the leader derived nothing;
#  - then the same with the passphrase given as a setting: the workers find
#    the KEK they inherited by its placeholder.  While a slow parallel query
#    runs, every dynamic shared memory segment of the server
#    (/dev/shm/PostgreSQL.*, dynamic_shared_memory_type = posix) is read:
#    one holds the serialized setting secretenv.kek_passphrase and a
#    placeholder, none holds the passphrase.
# Node without preload: the leader runs the command once (its first use);
# a parallel worker refuses with 55000 and the hint to preload, and the
# command did not run in it.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep);
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;

my $pass1 = 'parallel-test-passphrase-v1-6b1f0d8e2a4c9e7f3a5d';
my $tmp = PostgreSQL::Test::Utils::tempdir;
my $counter = "$tmp/command_runs";
my $command = write_script($tmp, 'passphrase.sh', qq{echo "run for version \$1" >> '$counter'
echo '$pass1'});

sub command_runs
{
	return 0 unless -e $counter;
	my @lines = split /\n/, slurp_file($counter);
	return scalar @lines;
}

# Settings that force parallel plans whose workers do all the row work.
my $parallel = q{
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
SET parallel_leader_participation = off;
};
my $serial = "SET max_parallel_workers_per_gather = 0;\n";

# Count, decrypts equal to the expected value, and an order-free checksum.
my $decrypt = 'secretenv.secret_decrypt(ev, wd, v, id::text, name)';
my $summary = qq{SELECT count(*) || ' ' || count(*) FILTER (WHERE $decrypt = 'value-' || id)
  || ' ' || sum(('x' || substr(md5($decrypt), 1, 15))::bit(60)::bigint) FROM t};

sub make_node
{
	my ($name, $preload) = @_;
	my $node = new_secretenv_node($name, preload => $preload, conf => qq{
secretenv.kek_passphrase_command = '$command %v'
secretenv.kek_version = 1
max_worker_processes = 8
max_parallel_workers = 8
dynamic_shared_memory_type = posix
});
	$node->start;
	return $node;
}

sub fill_table
{
	my ($node) = @_;
	$node->safe_psql(
		'postgres', q{
CREATE EXTENSION secretenv;
CREATE TABLE t (id int, ev bytea, wd bytea, v int4, name text);
INSERT INTO t SELECT i, (e).encrypted_value, (e).wrapped_dek, (e).kek_version, 'n' || i
  FROM (SELECT i, secretenv.secret_encrypt('value-' || i, i::text, 'n' || i) AS e
        FROM generate_series(1, 3000) i) s;
ALTER TABLE t SET (parallel_workers = 2);
VACUUM ANALYZE t;
});
}

# Workers launched and rows per worker, from EXPLAIN ANALYZE VERBOSE of a
# count of the rows that decrypt to their values.  One row in 30 also
# sleeps 20 ms, so the scan lasts about two seconds: a worker that starts
# late on a loaded machine still finds blocks left to scan, where 3 000
# bare decrypts are over before it starts.
sub explain_workers
{
	my ($node) = @_;
	my $paced = "SELECT count(*) FROM t WHERE $decrypt = 'value-' || id"
	  . " AND (id % 30 <> 0 OR length(pg_sleep(0.02)::text) = 0)";
	my $plan = $node->safe_psql('postgres',
		$parallel . "EXPLAIN (ANALYZE, VERBOSE, COSTS OFF, TIMING OFF) $paced");
	my ($launched) = $plan =~ /Workers Launched: (\d+)/;
	my @worker_rows = $plan =~ /Worker \d+:\s+actual rows=(\d+)/g;
	return ($launched // 0, \@worker_rows, $plan);
}

# explain_workers, tried up to five times until every launched worker got
# rows: even paced, a worker may be starved of CPU for the whole scan.
sub explain_busy_workers
{
	my ($node) = @_;
	my @result;
	for (1 .. 5)
	{
		@result = explain_workers($node);
		my ($launched, $rows) = @result;
		last if $launched > 0 && @$rows == $launched && !grep { $_ == 0 } @$rows;
	}
	return @result;
}

###########################################################################
# Preloaded, passphrase command
###########################################################################
my $node = make_node('parallel', 1);
is(command_runs(), 1, 'preloaded: the postmaster ran the command once, at start');
fill_table($node);

my $expected = $node->safe_psql('postgres', $serial . $summary);
like($expected, qr/^3000 3000 -?\d+$/, 'serial plan: 3 000 rows decrypt to their values');
my $runs_before = command_runs();

is($node->safe_psql('postgres', $parallel . $summary),
	$expected, 'command: the parallel plan gives the serial result');
my ($launched, $worker_rows, $plan) = explain_busy_workers($node);
is($launched, 2, 'command: EXPLAIN ANALYZE shows 2 workers launched');
is(scalar(@$worker_rows) > 0 && (grep { $_ > 0 } @$worker_rows) == @$worker_rows
	  ? 'yes' : "no\n$plan",
	'yes', 'command: every worker processed rows (the leader does not participate)');
is(command_runs(), $runs_before,
	'command: the command ran 0 times during the parallel queries');
is( $node->safe_psql('postgres',
		$parallel
		  . "SELECT count(*) FROM t WHERE $decrypt IS NOT NULL;\n"
		  . "SELECT secretenv.key_config()->>'kek_derivations_in_this_process'"),
	"3000\n0", 'command: a session running a parallel query derived no KEK itself');

###########################################################################
# Preloaded, passphrase setting: placeholders
###########################################################################
$node->append_conf(
	'postgresql.conf', qq{
secretenv.kek_passphrase_command = ''
secretenv.kek_passphrase = '$pass1'
});
$node->reload;
$node->poll_query_until('postgres',
	"SELECT $decrypt = 'value-1' FROM t WHERE id = 1")
  or die 'the reload did not take effect';
$runs_before = command_runs();

is($node->safe_psql('postgres', $parallel . $summary),
	$expected, 'setting: the parallel plan gives the serial result');
($launched, $worker_rows, $plan) = explain_busy_workers($node);
is($launched, 2, 'setting: EXPLAIN ANALYZE shows 2 workers launched');
is(scalar(@$worker_rows) > 0 && (grep { $_ > 0 } @$worker_rows) == @$worker_rows
	  ? 'yes' : "no\n$plan",
	'yes', 'setting: every worker processed rows');
is(command_runs(), $runs_before, 'setting: no command ran');

# A slow parallel query keeps its shared memory alive while /dev/shm is read.
my ($out, $err) = ('', '');
my $slow = IPC::Run::start(
	[
		'psql', '-X', '-A', '-t', '-d', $node->connstr('postgres'),
		'-c', $parallel
		  . "SELECT count(*) FROM t WHERE $decrypt IS NOT NULL AND (id % 30 <> 0 OR length(pg_sleep(0.03)::text) = 0)"
	],
	'>', \$out, '2>', \$err);
my ($guc_segment, $placeholder, $pass_found, $segments) = (0, '', 0, 0);
for (my $i = 0; $i < 200 && !$guc_segment; $i++)
{
	opendir(my $dh, '/dev/shm') or die "opendir /dev/shm: $!";
	my @files = grep { /^PostgreSQL\./ } readdir $dh;
	closedir $dh;
	for my $f (@files)
	{
		my $bytes = eval { slurp_file("/dev/shm/$f") } // next;
		$segments++;
		$pass_found++ if index($bytes, $pass1) >= 0;
		if ($bytes =~ /secretenv\.kek_passphrase\0(secretenv-placeholder:[0-9a-f]{32})\0/)
		{
			$guc_segment = 1;
			$placeholder = $1;
		}
	}
	usleep(50_000) unless $guc_segment;
}
$slow->finish;
like($out, qr/^3000$/m, 'the slow parallel query completed');
ok($guc_segment,
	"a parallel query's shared memory holds the serialized secretenv.kek_passphrase ($segments segment reads)");
like($placeholder, qr/^secretenv-placeholder:[0-9a-f]{32}$/,
	'... whose value is a placeholder');
is($pass_found, 0, 'no shared memory segment holds the passphrase');

###########################################################################
# Not preloaded: workers refuse rather than derive
###########################################################################
$node->stop;
unlink $counter;
my $lazy = make_node('lazy', 0);
$lazy->safe_psql('postgres',
	'CREATE EXTENSION secretenv; CREATE TABLE t (id int, ev bytea, wd bytea, v int4, name text)');
$lazy->safe_psql(
	'postgres', q{
INSERT INTO t SELECT i, (e).encrypted_value, (e).wrapped_dek, (e).kek_version, 'n' || i
  FROM (SELECT i, secretenv.secret_encrypt('value-' || i, i::text, 'n' || i) AS e
        FROM generate_series(1, 3000) i) s;
ALTER TABLE t SET (parallel_workers = 2);
VACUUM ANALYZE t;
});
my $runs_lazy = command_runs();
my ($rc, $stdout, $stderr) = $lazy->psql(
	'postgres',
	"\\set VERBOSITY verbose\n"
	  . "SELECT count(*) FROM t WHERE secretenv.secret_decrypt(ev, wd, v, id::text, name) IS NOT NULL;\n"
	  . $parallel
	  . "SELECT count(*) FROM t WHERE secretenv.secret_decrypt(ev, wd, v, id::text, name) IS NOT NULL;");
is($stdout, '3000', 'not preloaded: the serial query decrypts in the leader');
like($stderr, qr/ERROR:  55000: parallel worker has no KEK of version 1/,
	'not preloaded: a parallel worker refuses with 55000');
like($stderr, qr/HINT:  Add secretenv to shared_preload_libraries/,
	'... with the hint to preload');
is(command_runs() - $runs_lazy, 1,
	'not preloaded: the command ran once, in the leader, never in a worker');
$lazy->stop;

done_testing();
