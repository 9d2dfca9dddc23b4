# Helpers of the key-lifecycle TAP tests (085-089): key settings by version,
# procedures run in the background, a reader and a writer running beside
# them, rows held locked mid-table, and the checks of a table's envelopes.
package LifecycleTest;

use strict;
use warnings;
use Exporter 'import';
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SecretenvTest qw(wait_for_crash_recovery);
use Test::More;

our @EXPORT = qw(passphrase set_keys start_sql finish_sql start_load stop_load
  wait_for_lock_waiter hold_row_lock start_half_way interrupt_half_way
  check_resumed_run check_concurrent_runs generate_secrets secrets_state finished_count);

# The passphrase of KEK version $v in these tests.
sub passphrase
{
	my ($v) = @_;
	return "lifecycle-passphrase-$v-0123456789abcdefghijklmnop";
}

# Make $cur the current KEK and $prev (0: none) the previous one, in
# postgresql.conf; reload unless told not to, and wait until new
# connections to $db see it.  With command => 1, through a passphrase
# command that prints passphrase(%v) (a cluster without preload refuses a
# written passphrase).
sub set_keys
{
	my ($node, $cur, $prev, %opt) = @_;
	my $conf;
	if ($opt{command})
	{
		$conf = "secretenv.kek_passphrase_command = 'echo " . passphrase('%v') . "'\n"
		  . "secretenv.kek_version = $cur\nsecretenv.kek_previous_version = $prev\n";
	}
	else
	{
		$conf = "secretenv.kek_passphrase = '" . passphrase($cur) . "'\nsecretenv.kek_version = $cur\n";
		$conf .= $prev
		  ? "secretenv.kek_previous_passphrase = '" . passphrase($prev) . "'\nsecretenv.kek_previous_version = $prev\n"
		  : "secretenv.kek_previous_version = 0\n";
	}
	$node->append_conf('postgresql.conf', $conf);
	return 1 if $opt{no_reload};
	$node->reload;
	return $node->poll_query_until($opt{db} // 'postgres',
		"SELECT current_setting('secretenv.kek_version')", $cur);
}

# Run SQL through psql in the background, as $user if given; finish_sql()
# waits for it and returns (exit status, stdout, stderr).  NOTICEs arrive on
# stderr.
sub start_sql
{
	my ($node, $db, $sql, $user) = @_;
	my %run = (out => '', err => '');
	my $connstr = $node->connstr($db) . (defined $user ? " user=$user" : '');
	$run{h} = IPC::Run::start(
		[
			$node->installed_command('psql'), '-XAtq', '-v', 'ON_ERROR_STOP=1',
			'-d', $connstr, '-c', $sql
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

# A reader and a writer in database $db, run in the background while a
# rotation runs, as PL/pgSQL loops that end when stop_load() says so.
# Rows are named $opt{prefix}1 .. $opt{prefix}$opt{rows}, row i holding
# 'value-' || i until the writer writes it.
#   reads => [ statements that set v to what row i reads as ]: the reader
#            takes random rows 201 .. rows, which the writer never touches,
#            and counts a failure for each read that is not 'value-' || i
#            or raises an error;
#   write => statements that write w_value to the row named w_name: the
#            writer writes 'written-' || k to rows 1 .. 200 in turn, and
#            commits each write with its entry in table load_writes (name,
#            value), for secrets_state().
sub start_load
{
	my ($node, $db, %opt) = @_;
	$node->safe_psql($db, q{
CREATE TABLE load_stop (stop boolean);
INSERT INTO load_stop VALUES (false);
CREATE TABLE load_writes (name text PRIMARY KEY, value text);
CREATE TABLE load_results (what text, n int);
});
	my $checks = join('',
		map { "\t\t\t$_;\n\t\t\tIF v IS DISTINCT FROM 'value-' || i THEN failures := failures + 1; END IF;\n" }
		  @{ $opt{reads} });
	my $reads_per_pass = scalar @{ $opt{reads} };
	my $reader = start_sql($node, $db, qq{
DO \$\$
DECLARE
	reads int := 0;
	failures int := 0;
	i int;
	v text;
BEGIN
	WHILE NOT (SELECT stop FROM load_stop) LOOP
		i := 201 + floor(random() * ($opt{rows} - 200))::int;
		BEGIN
$checks		EXCEPTION WHEN OTHERS THEN
			failures := failures + 1;
		END;
		reads := reads + $reads_per_pass;
		PERFORM pg_sleep(0.002);
	END LOOP;
	INSERT INTO load_results VALUES ('reads', reads), ('failures', failures);
END
\$\$;});
	my $writer = start_sql($node, $db, qq{
DO \$\$
DECLARE
	k int := 0;
	w_name text;
	w_value text;
BEGIN
	WHILE NOT (SELECT stop FROM load_stop) LOOP
		k := k + 1;
		w_name := '$opt{prefix}' || (1 + k % 200);
		w_value := 'written-' || k;
		$opt{write};
		INSERT INTO load_writes VALUES (w_name, w_value)
			ON CONFLICT (name) DO UPDATE SET value = excluded.value;
		COMMIT;
		PERFORM pg_sleep(0.005);
	END LOOP;
	INSERT INTO load_results VALUES ('writes', k);
END
\$\$;});
	return { node => $node, db => $db, reader => $reader, writer => $writer };
}

# End the reader and the writer of start_load(); returns their counts as
# { reads => , failures => , writes => }.
sub stop_load
{
	my ($load) = @_;
	my ($node, $db) = @$load{qw(node db)};
	$node->safe_psql($db, 'UPDATE load_stop SET stop = true');
	finish_sql($load->{reader});
	finish_sql($load->{writer});
	return { map { split /\|/ } split /\n/, $node->safe_psql($db, 'SELECT what, n FROM load_results') };
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

# Start a batched run that stops half way, at the middle row of $table,
# which a session holds locked: $start->() starts the run (a start_sql()
# handle) and its statement matches $like.  Returns the run, its backend's
# pid and the session, once the run waits for the lock.
sub start_half_way
{
	my ($node, $db, $table, $like, $start) = @_;
	my $lock = hold_row_lock($node, $db, $table);
	my $run = $start->();
	return { run => $run, pid => wait_for_lock_waiter($node, $db, $like), lock => $lock };
}

# End a run of start_half_way() as $how says: a kill -9 of its backend
# ($how mentions "kill"; the server restarts, restart_after_crash must be
# on), or else an immediate shutdown, then start the server again.
sub interrupt_half_way
{
	my ($node, $db, $half, $how) = @_;
	my $kill = $how =~ /kill/;

	my $log_offset = -s $node->logfile;
	if ($kill)
	{
		kill 'KILL', $half->{pid};
	}
	else
	{
		$node->stop('immediate');
	}
	finish_sql($half->{run});
	eval { $half->{lock}->quit; };
	if ($kill)
	{
		wait_for_crash_recovery($node, $db, $log_offset) or die 'no recovery';
	}
	else
	{
		$node->start;
	}
	return;
}

# After a run was interrupted ($how): the rows committed batches rotated
# stay rotated, none is half rotated, and a second run ($start->() starts
# it) rotates only the rest.  $state->() is "rows|rows on the new
# version|rows that decrypt" of the $n rows.
sub check_resumed_run
{
	my ($how, $n, $state, $start) = @_;
	my ($rows, $on_new, $decrypt) = split /\|/, $state->();
	is("$rows|$decrypt", "$n|$n", "after $how: every row decrypts (no row is half rotated)");
	ok($on_new > 0 && $on_new < $n, "after $how: the committed batches stay rotated ($on_new rows)");

	my ($rc, $out, $err) = finish_sql($start->());
	is($rc, 0, "after $how: the run goes again");
	is(finished_count($err), $n - $on_new, "after $how: the second run rotates only the rest");
	is($state->(), "$n|$n|$n", "after $how and a second run: every row is on the new KEK and decrypts");
	return;
}

# Two runs at once ($start->() starts one) both succeed and rotate each of
# the $n rows exactly once between them; $state as for check_resumed_run.
sub check_concurrent_runs
{
	my ($n, $state, $start) = @_;
	my @runs = map { $start->() } 1 .. 2;
	my $total = 0;
	for my $run (@runs)
	{
		my ($rc, $out, $err) = finish_sql($run);
		is($rc, 0, 'a concurrent run succeeded');
		$total += finished_count($err);
	}
	is($total, $n, 'two concurrent runs rotated every row exactly once between them');
	is($state->(), "$n|$n|$n", 'after two concurrent runs every row is on the new KEK and decrypts');
	return;
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
# value-<i>, or the value $log_table (name, value) says was written last.  A row that does not open makes the query fail.
sub secrets_state
{
	my ($node, $db, $v, $log_table) = @_;
	my $expected = $log_table
	  ? "COALESCE((SELECT w.value FROM $log_table w WHERE w.name = s.secret_name), 'value-' || substr(s.secret_name, 6))"
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
