
# Copyright (c) secretenv contributors
#
# Access audit across a crash restart (DESIGN §8b): a backend killed with
# SIGKILL makes the postmaster throw away PostgreSQL's shared memory, but
# the audit queue is kept apart from it, so
#  - the records of a reader killed right after its reads, queued while no
#    writer runs (the launcher SIGSTOPped), are kept (the log says how many)
#    and written once the server is back, each exactly once;
#  - records a writer had taken but not inserted (it waits for a table lock
#    when it is killed) are written once;
#  - records a writer had inserted and committed (its commit waits for a
#    synchronous standby that does not exist when it is killed) are not
#    written a second time;
#  - a strict reader that died waiting gave no plaintext, and its record
#    says failed;
# and after each the chain verifies and every read has one record.  A fast
# or immediate shutdown with records queued (the writer waiting for a
# table lock) saves them to secretenv_audit_queue in the data directory,
# and the next start queues them again and removes the file; a damaged
# file is set aside with a WARNING.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SecretenvTest;
use Test::More;

# allows_streaming: a commit waits for synchronous standbys only with WAL senders.
my $node = new_secretenv_node('audit_crash', allows_streaming => 1,
	conf => kek_settings('audit-crash-test-passphrase-0123456789', 1)
	  . "restart_after_crash = on\n");
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION secretenv;
SELECT secretenv.secret_create('stripe', 'sk-stripe-crash-0123456789');
SELECT secretenv.secret_create('openai', 'sk-openai-crash-0123456789');
});

# Reads recorded so far, as "application_name:outcome" in seq order.
sub reads_of
{
	my ($app) = @_;
	return $node->safe_psql('postgres', qq{SELECT count(*) || ' ' || coalesce(string_agg(DISTINCT outcome, ','), '')
		FROM secretenv.audit_log WHERE operation = 'read' AND application_name = '$app'});
}

sub wait_reads
{
	my ($app, $n) = @_;
	$node->poll_query_until('postgres', qq{SELECT count(*) >= $n FROM secretenv.audit_log
		WHERE operation = 'read' AND application_name = '$app'})
	  or die "timed out waiting for $n records of $app";
	# A second written by mistake would come right after.
	$node->safe_psql('postgres', 'SELECT pg_sleep(1.5)');
	return reads_of($app);
}

sub verify
{
	return $node->safe_psql('postgres',
		q{SELECT concat_ws('|', intact, problem) FROM secretenv.audit_verify()});
}

sub backend_of
{
	my ($type) = @_;
	return $node->safe_psql('postgres', qq{SELECT pid FROM pg_stat_activity WHERE backend_type = '$type'});
}

# A session named $app: its pid.
sub session
{
	my ($app) = @_;
	my $s = $node->background_psql('postgres', on_error_stop => 0);
	$s->query_safe("SET application_name = '$app'");
	return ($s, $s->query_safe('SELECT pg_backend_pid()'));
}

# --- a reader killed right after its reads, no writer running ---
$node->poll_query_until('postgres', q{SELECT count(*) = 0 FROM pg_stat_activity
	WHERE backend_type = 'secretenv audit writer'}) or die 'a writer stays';
my $launcher = backend_of('secretenv audit launcher');
kill 'STOP', $launcher or die "could not stop the launcher $launcher";
my ($s, $pid) = session('killed-reader');
is( $s->query_safe(q{SELECT secretenv.secret_get('stripe') || ' ' || secretenv.secret_get('openai')
		|| ' ' || secretenv.secret_get('stripe')}),
	'sk-stripe-crash-0123456789 sk-openai-crash-0123456789 sk-stripe-crash-0123456789',
	'three values read, their records queued (no writer runs)');
my $log_offset = -s $node->logfile;
kill 'KILL', $pid;
ok(wait_for_crash_recovery($node, 'postgres', $log_offset), 'the server is back after the crash');
eval { $s->quit };
ok($node->log_contains(qr/secretenv kept 3 queued audit records across the restart/, $log_offset),
	'the log says the three queued records were kept');
is(wait_reads('killed-reader', 3), '3 ok', 'a reader killed right after its reads: each read has one record');
is(verify(), 't', 'the chain verifies');

# --- a writer killed before it inserted: its records are written once ---
my $locker = $node->background_psql('postgres');
$locker->query_safe('BEGIN; LOCK TABLE secretenv.audit_log IN SHARE ROW EXCLUSIVE MODE');
($s, $pid) = session('writer-blocked');
$s->query_safe(q{SELECT secretenv.secret_get('stripe'), secretenv.secret_get('openai')});
$node->poll_query_until('postgres', q{SELECT count(*) = 1 FROM pg_stat_activity
	WHERE backend_type = 'secretenv audit writer' AND wait_event_type = 'Lock'})
  or die 'the writer does not wait for the lock';
my $writer = backend_of('secretenv audit writer');
$log_offset = -s $node->logfile;
kill 'KILL', $writer;
ok(wait_for_crash_recovery($node, 'postgres', $log_offset), 'the server is back after the writer was killed');
eval { $s->quit };
eval { $locker->quit };
ok($node->log_contains(qr/secretenv kept 2 queued audit records across the restart/, $log_offset),
	'the two records the writer had taken were kept');
is(wait_reads('writer-blocked', 2), '2 ok', 'records a killed writer had not inserted are written once');
is(verify(), 't', 'the chain verifies');

# --- a writer killed after its commit: its records are not written again ---
$node->append_conf('postgresql.conf', "synchronous_standby_names = 'nobody'\n");
$node->reload;
$node->poll_query_until('postgres', q{SELECT current_setting('synchronous_standby_names') = 'nobody'}) or die;
($s, $pid) = session('writer-committed');
$s->query_safe(q{SELECT secretenv.secret_get('stripe'), secretenv.secret_get('openai'), secretenv.secret_get('stripe')});
$node->poll_query_until('postgres', q{SELECT count(*) = 1 FROM pg_stat_activity
	WHERE backend_type = 'secretenv audit writer' AND wait_event = 'SyncRep'})
  or die 'the writer does not wait for a synchronous standby';
$writer = backend_of('secretenv audit writer');
# Committed (in WAL and the commit log) but not yet acknowledged: the
# server restarts with the standby wait gone.
$node->adjust_conf('postgresql.conf', 'synchronous_standby_names', "''");
$log_offset = -s $node->logfile;
kill 'KILL', $writer;
ok(wait_for_crash_recovery($node, 'postgres', $log_offset), 'the server is back after the committing writer was killed');
eval { $s->quit };
$node->reload;
$node->poll_query_until('postgres', q{SELECT current_setting('synchronous_standby_names') = ''}) or die;
ok($node->log_contains(qr/secretenv kept 3 queued audit records across the restart/, $log_offset),
	'the three records the writer had committed were kept in the queue');
is(wait_reads('writer-committed', 3), '3 ok',
	'records a killed writer had committed are not written a second time');
is($node->safe_psql('postgres', q{SELECT secretenv.audit_stats()->>'pending'}), '0',
	'and their slots are free');
is(verify(), 't', 'the chain verifies');

# --- a strict reader that dies waiting: no plaintext, the record says failed ---
$node->append_conf('postgresql.conf', "secretenv.audit_strict = on\n");
$node->reload;
$node->poll_query_until('postgres', q{SELECT current_setting('secretenv.audit_strict') = 'on'}) or die;
$locker = $node->background_psql('postgres');
$locker->query_safe('BEGIN; LOCK TABLE secretenv.audit_log IN SHARE ROW EXCLUSIVE MODE');
($s, $pid) = session('strict-killed');
$s->query_until(qr/started/, qq{\\echo started
SELECT secretenv.secret_get('stripe');
});
$node->poll_query_until('postgres', qq{SELECT wait_event_type = 'Extension' FROM pg_stat_activity WHERE pid = $pid})
  or die 'the strict reader does not wait';
$log_offset = -s $node->logfile;
kill 'KILL', $pid;
ok(wait_for_crash_recovery($node, 'postgres', $log_offset), 'the server is back after the strict reader was killed');
my $stdout = $s->{stdout};
eval { $s->quit };
eval { $locker->quit };
unlike($stdout, qr/sk-stripe/, 'the strict reader received no plaintext');
is(wait_reads('strict-killed', 1), '1 failed', 'its record is written once and says the read failed');
is(verify(), 't', 'the chain verifies');

$node->append_conf('postgresql.conf', "secretenv.audit_strict = off\n");
$node->reload;
$node->poll_query_until('postgres', q{SELECT current_setting('secretenv.audit_strict') = 'off'}) or die;

# --- a shutdown with records queued: saved, queued again at the next start ---
# Records the writer has taken while it waits for a table lock when the
# server stops.
sub stop_with_queued_reads
{
	my ($app, $mode) = @_;
	my $locker = $node->background_psql('postgres');
	$locker->query_safe('BEGIN; LOCK TABLE secretenv.audit_log IN SHARE ROW EXCLUSIVE MODE');
	my ($s) = session($app);
	$s->query_safe(q{SELECT secretenv.secret_get('stripe'), secretenv.secret_get('openai')});
	$node->poll_query_until('postgres', q{SELECT count(*) = 1 FROM pg_stat_activity
		WHERE backend_type = 'secretenv audit writer' AND wait_event_type = 'Lock'})
	  or die 'the writer does not wait for the lock';
	my $offset = -s $node->logfile;
	$node->stop($mode);
	eval { $s->quit };
	eval { $locker->quit };
	return $offset;
}

my $queue_file = $node->data_dir . '/secretenv_audit_queue';
for my $mode ('fast', 'immediate')
{
	$log_offset = stop_with_queued_reads("stopped-$mode", $mode);
	ok($node->log_contains(qr/secretenv saved 2 queued audit records for the next start/, $log_offset),
		"$mode shutdown: the postmaster saved the two queued records");
	ok(-f $queue_file, "$mode shutdown: in the data directory");
	is(sprintf('%04o', (stat $queue_file)[2] & 07777), '0600', "$mode shutdown: the file is mode 0600");
	unlike(slurp_file($queue_file), qr/sk-(?:stripe|openai)-crash/, "$mode shutdown: it holds no value");
	like(slurp_file($queue_file), qr/stopped-$mode/, "$mode shutdown: it holds the records (their application_name)");
	$log_offset = -s $node->logfile;
	$node->start;
	ok($node->log_contains(qr/secretenv queued 2 audit records saved when the server last stopped/, $log_offset),
		"$mode shutdown: the next start queued them again");
	ok(!-e $queue_file, "$mode shutdown: and removed the file");
	is(wait_reads("stopped-$mode", 2), '2 ok', "$mode shutdown: each read has one record");
	is(verify(), 't', "$mode shutdown: the chain verifies");
}

# A damaged file is set aside with a WARNING; the server starts.
stop_with_queued_reads('damaged-file', 'fast');
open(my $fh, '+<', $queue_file) or die "open $queue_file: $!";
binmode $fh;
seek($fh, 100, 0);
my $byte;
read($fh, $byte, 1);
seek($fh, 100, 0);
print $fh chr(ord($byte) ^ 1);
close $fh;
$log_offset = -s $node->logfile;
$node->start;
ok( $node->log_contains(
		qr/WARNING:  ignoring the audit records queued when the server last stopped: file "secretenv_audit_queue" is damaged/,
		$log_offset),
	'a damaged file: a WARNING at start');
ok(!-e $queue_file && -f "$queue_file.damaged", 'a damaged file: set aside as secretenv_audit_queue.damaged');
$node->safe_psql('postgres', 'SELECT pg_sleep(2)');
is(reads_of('damaged-file'), '0 ', 'a damaged file: none of its records is written');
is($node->safe_psql('postgres', q{SELECT secretenv.secret_get('stripe')}), 'sk-stripe-crash-0123456789',
	'a damaged file: the server reads secrets');
is(verify(), 't', 'a damaged file: the chain verifies');

$node->stop;
done_testing();
