
# Crash safety of secret_rotate_all(): the rotation is one UPDATE, so a
# backend killed with SIGKILL, or a server stopped with -m immediate, in the
# middle of it must leave every row decryptable and every row at one KEK
# version (all old, or all new if it had committed), with the wrapped DEKs
# exactly as before.  Then the rotation runs to completion.
#
# Crash points are placed by WAL progress: a calibration run (rolled back)
# measures the WAL one rotation writes, and each crash fires once the
# rotation has written the given fraction of it.
#
# SECRETENV_CRASH_ROWS sets the table size (default 200 000).

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;
use Time::HiRes qw(usleep time);

my $rows = $ENV{SECRETENV_CRASH_ROWS} // 200000;
my $pass1 = 'crash-safety-passphrase-version-1-0123456789';
my $pass2 = 'crash-safety-passphrase-version-2-abcdefghij';
my $t0 = time;

my $node = new_secretenv_node('crash', conf => qq{
secretenv.kek_passphrase = '$pass1'
secretenv.kek_version = 1
restart_after_crash = on
max_wal_size = 2GB
checkpoint_timeout = 1h
autovacuum = off
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION secretenv');

# Every row its own id, name and value, encrypted once under its own DEK.
$node->safe_psql(
	'postgres', qq{
INSERT INTO secretenv.secrets (secret_id, secret_name, encrypted_value, wrapped_dek,
							   kek_version, masked_value)
SELECT u.id, 'crash-' || i, e.encrypted_value, e.wrapped_dek, e.kek_version,
	   to_jsonb(secretenv.secret_mask('value-' || md5(i::text)))
FROM generate_series(1, $rows) i,
	 LATERAL (SELECT md5('crash-id-' || i)::uuid AS id) u,
	 LATERAL secretenv.secret_encrypt('value-' || md5(i::text), u.id, 'crash-' || i) e;
VACUUM ANALYZE secretenv.secrets;
});
is($node->safe_psql('postgres',
		'SELECT count(*), count(DISTINCT wrapped_dek), min(kek_version), max(kek_version) FROM secretenv.secrets'),
	"$rows|$rows|1|1", "$rows secrets written under KEK version 1, each with its own DEK");
diag(sprintf('%d rows written in %.1f s', $rows, time - $t0));

# Fingerprint of every stored envelope before any rotation.
my $fingerprint_sql =
  q{SELECT md5(string_agg(secret_id::text || encode(wrapped_dek, 'hex') || kek_version, ',' ORDER BY secret_id))
	FROM secretenv.secrets};
my $before = $node->safe_psql('postgres', $fingerprint_sql);

# KEK version 2 current, version 1 previous.
ok(configure_rotation_keys($node, $pass2, $pass1),
	'configuration reloaded: current KEK version 2, previous 1');

# Calibration: WAL written by one full rotation (rolled back).
$node->safe_psql('postgres', 'CHECKPOINT');
my $t_cal = time;
my $cal = $node->safe_psql(
	'postgres', q{
BEGIN;
SELECT pg_current_wal_insert_lsn() AS start \gset
SELECT secretenv.secret_rotate_all();
SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), :'start')::bigint;
ROLLBACK;
});
my ($cal_count, $rotation_wal) = split /\n/, $cal;
my $rotation_secs = time - $t_cal;
is($cal_count, $rows, 'calibration rotation re-wraps every row (rolled back)');
diag(sprintf('one rotation of %d rows: %.1f s, %.1f MB of WAL',
	$rows, $rotation_secs, $rotation_wal / 1048576));
$node->safe_psql('postgres', 'VACUUM secretenv.secrets');

my $crash_points = 0;
my $mid_rotation = 0;
my $rows_verified = 0;

# Every row decrypts to its own value; returns "undecryptable|wrong|total|versions|minver".
sub check_rows
{
	my ($label, $expect_version) = @_;
	my $failed = $node->safe_psql('postgres',
		'SELECT count(*) FROM secretenv.verify_secrets()');
	is($failed, '0', "$label: verify_secrets() finds no failing row");
	is( $node->safe_psql(
			'postgres',
			q{SELECT count(*) FILTER (WHERE value = 'value-' || md5(substr(secret_name, 7))), count(*)
			  FROM secretenv.decrypted_secrets}),
		"$rows|$rows",
		"$label: all $rows rows decrypt to their own value");
	is( $node->safe_psql(
			'postgres',
			'SELECT count(DISTINCT kek_version), min(kek_version) FROM secretenv.secrets'),
		"1|$expect_version",
		"$label: all rows at one KEK version ($expect_version)");
	$rows_verified += $rows;
}

# Crash recoveries the server log reports so far.
sub recoveries
{
	my $n = () = slurp_file($node->logfile) =~ /automatic recovery in progress/g;
	return $n;
}

# Start the rotation in another session, let it write $fraction of its WAL,
# then crash it with $how ('kill9' the backend, or 'immediate' stop).
sub crash_rotation
{
	my ($how, $fraction) = @_;
	my $label = sprintf('%s at %d%% of the rotation', $how, $fraction * 100);

	$node->safe_psql('postgres', 'CHECKPOINT');
	my $recoveries = recoveries();
	my $start_lsn = $node->safe_psql('postgres', 'SELECT pg_current_wal_insert_lsn()');
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[
			'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d',
			$node->connstr('postgres') . ' application_name=rotator',
			'-c', 'SELECT secretenv.secret_rotate_all()'
		],
		'>', \$out, '2>', \$err);

	# Wait for the rotation to be running and to have written enough WAL.
	my $target = int($rotation_wal * $fraction);
	my ($pid, $written) = (undef, 0);
	my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
	while (time < $deadline)
	{
		my $state = $node->safe_psql(
			'postgres', qq{
SELECT pid, pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '$start_lsn')::bigint
FROM pg_stat_activity
WHERE application_name = 'rotator' AND state = 'active'
  AND query LIKE '%secret_rotate_all%'});
		if ($state ne '')
		{
			($pid, $written) = split /\|/, $state;
			last if $written >= $target;
		}
		last if !$h->pumpable;	# finished already
		usleep(20_000);
	}
	ok(defined $pid, "$label: rotation seen running (backend $pid, "
		  . sprintf('%.1f MB of WAL written)', $written / 1048576));

	my $log_offset = -s $node->logfile;
	if ($how eq 'kill9')
	{
		ok(kill('KILL', $pid), "$label: SIGKILL sent to backend $pid");
	}
	else
	{
		$node->stop('immediate');
		ok(!-f $node->data_dir . '/postmaster.pid',
			"$label: server stopped with -m immediate (no postmaster.pid left)");
	}
	$h->finish;
	$crash_points++;

	# A committed rotation (psql printed its count) is all new; otherwise
	# all rows must be as before.
	my $committed = $out =~ /^\d+$/m;
	$mid_rotation++ unless $committed;
	diag("$label: rotation " . ($committed ? 'had committed' : 'was interrupted'));

	if ($how eq 'kill9')
	{
		ok(wait_for_crash_recovery($node, 'postgres', $log_offset), "$label: server back after crash recovery");
		ok($node->log_contains(qr/(?:server process|client backend) \(PID $pid\) was terminated by signal 9/),
			"$label: the log shows backend $pid killed by signal 9");
	}
	else
	{
		$node->start;
		ok( $node->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()'),
			"$label: server back after restart and recovery");
	}

	is(recoveries(), $recoveries + 1, "$label: the server ran crash recovery");
	ok($committed || $err =~ /terminat|connection|closed/i,
		"$label: the rotating client lost its connection");
	check_rows($label, $committed ? 2 : 1);
	if ($committed)
	{
		# Move back to the pre-rotation state is not possible; the remaining
		# points then have nothing to interrupt.
		return 0;
	}
	is($node->safe_psql('postgres', $fingerprint_sql), $before,
		"$label: every wrapped DEK and version exactly as before the rotation");
	$node->safe_psql('postgres', 'VACUUM secretenv.secrets');
	return 1;
}

# The latest points last: a rotation that commits before the crash lands
# leaves nothing for the points after it.
my @points = (
	[ 'kill9', 0.05 ], [ 'immediate', 0.15 ], [ 'kill9', 0.30 ], [ 'immediate', 0.50 ],
	[ 'kill9', 0.60 ], [ 'immediate', 0.75 ], [ 'kill9', 0.90 ], [ 'kill9', 0.97 ]);
for my $p (@points)
{
	last unless crash_rotation(@$p);
}
cmp_ok($mid_rotation, '>=', scalar(@points) - 1,
	'all crashes but possibly the last hit the rotation before it committed');

# Now the rotation runs to completion, and is idempotent.
my $old_rows = $node->safe_psql('postgres',
	'SELECT count(*) FROM secretenv.secrets WHERE kek_version = 1');
is($node->safe_psql('postgres', 'SELECT secretenv.secret_rotate_all()'),
	$old_rows, "the rotation completes after recovery, re-wrapping the $old_rows version-1 rows");
check_rows('after the completed rotation', 2);
is($node->safe_psql('postgres', 'SELECT secretenv.secret_rotate_all()'),
	'0', 'a second rotation has nothing to do');

# And survives a crash after commit: the committed rotation is durable.
$node->stop('immediate');
$node->start;
check_rows('after an immediate stop following the completed rotation', 2);
$crash_points++;

diag(sprintf('crash points tried: %d (%d mid-rotation); rows verified: %d; total %.0f s',
	$crash_points, $mid_rotation, $rows_verified, time - $t0));

$node->stop;
done_testing();
