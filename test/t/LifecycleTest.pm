# Helpers of the key-lifecycle TAP tests (085-089): key settings by version,
# procedures run in the background, rows held locked mid-table, and the
# checks of a table's envelopes.
package LifecycleTest;

use strict;
use warnings;
use Exporter 'import';
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

our @EXPORT = qw(passphrase set_keys start_sql finish_sql wait_for_lock_waiter
  hold_row_lock generate_secrets secrets_state finished_count);

# The passphrase of KEK version $v in these tests.
sub passphrase
{
	my ($v) = @_;
	return "lifecycle-passphrase-$v-0123456789abcdefghijklmnop";
}

# Make $cur the current KEK and $prev (0: none) the previous one, in
# postgresql.conf; reload unless told not to, and wait until new
# connections to $db see it.
sub set_keys
{
	my ($node, $cur, $prev, %opt) = @_;
	my $conf = "secretenv.kek_passphrase = '" . passphrase($cur) . "'\nsecretenv.kek_version = $cur\n";
	$conf .= $prev
	  ? "secretenv.kek_previous_passphrase = '" . passphrase($prev) . "'\nsecretenv.kek_previous_version = $prev\n"
	  : "secretenv.kek_previous_version = 0\n";
	$node->append_conf('postgresql.conf', $conf);
	return 1 if $opt{no_reload};
	$node->reload;
	return $node->poll_query_until($opt{db} // 'postgres',
		"SELECT current_setting('secretenv.kek_version')", $cur);
}

# Run SQL through psql in the background; finish_sql() waits for it and
# returns (exit status, stdout, stderr).  NOTICEs arrive on stderr.
sub start_sql
{
	my ($node, $db, $sql) = @_;
	my %run = (out => '', err => '');
	$run{h} = IPC::Run::start(
		[
			$node->installed_command('psql'), '-XAtq', '-v', 'ON_ERROR_STOP=1',
			'-d', $node->connstr($db), '-c', $sql
		],
		'<', \undef, '>', \$run{out}, '2>', \$run{err});
	return \%run;
}

sub finish_sql
{
	my ($run) = @_;
	eval { $run->{h}->finish; };
	return ($run->{h}->result(0), $run->{out}, $run->{err});
}

# The pid of the backend running a statement that matches $like, once it
# waits for a row lock.
sub wait_for_lock_waiter
{
	my ($node, $db, $like) = @_;
	$node->poll_query_until($db, qq{
SELECT count(*) > 0 FROM pg_stat_activity
WHERE query LIKE '$like' AND wait_event_type = 'Lock'})
	  or die "no backend running $like waits for a lock";
	return $node->safe_psql($db, qq{
SELECT pid FROM pg_stat_activity WHERE query LIKE '$like' AND wait_event_type = 'Lock'});
}

# Lock the middle row of $table in physical order, in an open transaction
# (a background session); a batched run stops there, half done.
sub hold_row_lock
{
	my ($node, $db, $table) = @_;
	my $session = $node->background_psql($db);
	$session->query_safe('BEGIN');
	# Found first, locked by its ctid alone: FOR UPDATE in the query that
	# skips the first half would lock every row it skips.
	my $ctid = $node->safe_psql($db,
		"SELECT ctid FROM $table ORDER BY ctid OFFSET (SELECT count(*) / 2 FROM $table) LIMIT 1");
	my $locked = $session->query_safe(
		"SELECT count(*) FROM (SELECT 1 FROM $table WHERE ctid = '$ctid' FOR UPDATE) l");
	die "no row locked in $table" unless $locked eq '1';
	return $session;
}

# $n secrets name-1 .. name-$n with values value-1 .. value-$n, under the
# current KEK, in one INSERT ... SELECT.
sub generate_secrets
{
	my ($node, $db, $n) = @_;
	$node->safe_psql($db, qq{
INSERT INTO secretenv.secrets (secret_id, secret_name, encrypted_value, wrapped_dek, kek_version, masked_value)
SELECT id, 'name-' || i, (e).encrypted_value, (e).wrapped_dek, (e).kek_version, '"***"'
FROM (SELECT id, i, secretenv.secret_encrypt('value-' || i, id, 'name-' || i) e
	  FROM (SELECT gen_random_uuid() id, i FROM generate_series(1, $n) i) x OFFSET 0) y;
VACUUM ANALYZE secretenv.secrets;});
	return;
}

# "rows|rows on version $v|rows that decrypt to their expected value":
# value-<i>, or the value $log_table (secret_name, value) says was written
# last.  A row that does not open makes the query fail.
sub secrets_state
{
	my ($node, $db, $v, $log_table) = @_;
	my $expected = $log_table
	  ? "COALESCE((SELECT w.value FROM $log_table w WHERE w.secret_name = s.secret_name), 'value-' || substr(s.secret_name, 6))"
	  : "'value-' || substr(s.secret_name, 6)";
	my ($out, $err) = ('', '');
	my $ret = $node->psql($db, qq{
SELECT count(*) || '|' || count(*) FILTER (WHERE s.kek_version = $v) || '|'
	|| count(*) FILTER (WHERE secretenv.secret_decrypt(s.encrypted_value, s.wrapped_dek, s.kek_version,
														s.secret_id, s.secret_name) = $expected)
FROM secretenv.secrets s}, stdout => \$out, stderr => \$err);
	return $ret == 0 ? $out : "error: $err";
}

# The row count of a run's final NOTICE, or -1 without one.
sub finished_count
{
	my ($stderr) = @_;
	return $stderr =~ /NOTICE:  finished: (\d+) rows/ ? $1 : -1;
}

1;
