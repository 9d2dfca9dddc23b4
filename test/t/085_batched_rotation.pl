# Copyright (c) secretenv contributors
#
# CALL secretenv.secret_rotate(batch_size) (issue 14, DESIGN §7d).
#
# 1. 1 000 000 secrets rotated by secret_rotate(10000) while a reader and a
#    writer run throughout: no read fails, no update is lost, every row ends
#    on the new KEK and decrypts to its value; a NOTICE per batch.
# 2. On a table of 100 000 secrets, a run stopped half way (a row held
#    locked mid-table) is killed: by kill -9 of its backend, then by an
#    immediate shutdown.  Every row is on the old or the new KEK and
#    decrypts; status() shows both; calling secret_rotate again finishes.
# 3. Two runs at once rotate every row exactly once between them.
#
# SECRETENV_ROTATION_ROWS overrides the size of the first table.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use LifecycleTest;
use SecretenvTest;
use Test::More;
use Time::HiRes qw(time);

my $big = $ENV{SECRETENV_ROTATION_ROWS} // 1000000;
my $small = 100000;

my $node = new_secretenv_node('batched_rotation',
	conf => "max_wal_size = 4GB\ncheckpoint_timeout = 30min\nrestart_after_crash = on\n");
$node->start;
set_keys($node, 1, 0);
$node->safe_psql('postgres', 'CREATE DATABASE big; CREATE DATABASE small;');
for my $db ('big', 'small')
{
	$node->safe_psql($db, 'CREATE EXTENSION secretenv');
}

# --- 1. A million rows, with a reader and a writer -------------------------
my $t0 = time;
generate_secrets($node, 'big', $big);
note sprintf('generated %d secrets in %.1f s', $big, time - $t0);

$node->safe_psql('big', q{
CREATE TABLE t_stop (stop boolean);
INSERT INTO t_stop VALUES (false);
CREATE TABLE t_reads (reads int, failures int);
CREATE TABLE t_writes (secret_name text PRIMARY KEY, value text);
CREATE TABLE t_write_count (writes int);
});
set_keys($node, 2, 1, db => 'big');

# The reader checks secret_get and secret_decrypt of rows the writer never
# touches; the writer updates 200 rows over and over, committing each
# update with its log entry.
my $reader = start_sql($node, 'big', qq{
DO \$\$
DECLARE
	reads int := 0;
	failures int := 0;
	i int;
	v text;
BEGIN
	WHILE NOT (SELECT stop FROM t_stop) LOOP
		i := 201 + floor(random() * ($big - 200))::int;
		BEGIN
			v := secretenv.secret_get('name-' || i);
			IF v IS DISTINCT FROM 'value-' || i THEN failures := failures + 1; END IF;
			SELECT secretenv.secret_decrypt(s.encrypted_value, s.wrapped_dek, s.kek_version,
											s.secret_id, s.secret_name) INTO v
			FROM secretenv.secrets s WHERE s.secret_name = 'name-' || i;
			IF v IS DISTINCT FROM 'value-' || i THEN failures := failures + 1; END IF;
		EXCEPTION WHEN OTHERS THEN
			failures := failures + 1;
		END;
		reads := reads + 2;
		PERFORM pg_sleep(0.002);
	END LOOP;
	INSERT INTO t_reads VALUES (reads, failures);
END
\$\$;});
my $writer = start_sql($node, 'big', q{
DO $$
DECLARE
	k int := 0;
BEGIN
	WHILE NOT (SELECT stop FROM t_stop) LOOP
		k := k + 1;
		PERFORM secretenv.secret_update('name-' || (1 + k % 200), 'written-' || k);
		INSERT INTO t_writes VALUES ('name-' || (1 + k % 200), 'written-' || k)
			ON CONFLICT (secret_name) DO UPDATE SET value = excluded.value;
		COMMIT;
		PERFORM pg_sleep(0.005);
	END LOOP;
	INSERT INTO t_write_count VALUES (k);
END
$$;});

$t0 = time;
my $main = start_sql($node, 'big', 'CALL secretenv.secret_rotate(10000)');
my ($rc, $out, $err) = finish_sql($main);
my $rotate_seconds = time - $t0;
$node->safe_psql('big', 'UPDATE t_stop SET stop = true');
finish_sql($reader);
finish_sql($writer);
note sprintf('secret_rotate(10000) of %d rows took %.1f s', $big, $rotate_seconds);
note(($err =~ /(NOTICE:  finished: .*)/)[0] // 'no final NOTICE');

is($rc, 0, 'secret_rotate(10000) succeeded');
my @batches = $err =~ /NOTICE:  batch \d+: \d+ rows re-wrapped/g;
cmp_ok(scalar(@batches), '>=', $big / 10000 / 2, 'a NOTICE per batch');
cmp_ok(finished_count($err), '>', 0, 'the final NOTICE counts the rotated rows');
my ($reads, $failures) = split /\|/, $node->safe_psql('big', 'SELECT reads, failures FROM t_reads');
cmp_ok($reads, '>', 0, "the reader read throughout ($reads reads)");
is($failures, '0', 'no read failed while the rotation ran');
cmp_ok($node->safe_psql('big', 'SELECT writes FROM t_write_count'), '>', 0, 'the writer wrote throughout');
is(secrets_state($node, 'big', 2, 't_writes'), "$big|$big|$big",
	'every row is on the new KEK and decrypts to its value: no update was lost');
is($node->safe_psql('big', "SELECT secretenv.status()->>'rotation_complete'"), 'true',
	'status() says the rotation is complete');
$node->safe_psql('postgres', 'DROP DATABASE big');

# --- 2. Killed half way, then resumed ----------------------------------------
generate_secrets($node, 'small', $small);    # under KEK 2

for my $case ([ 'kill -9 of the backend', 3, 2 ], [ 'an immediate shutdown', 4, 3 ])
{
	my ($how, $new, $old) = @$case;
	set_keys($node, $new, $old, db => 'small');
	my $lock = hold_row_lock($node, 'small', 'secretenv.secrets');
	my $run = start_sql($node, 'small', 'CALL secretenv.secret_rotate(1000)');
	my $pid = wait_for_lock_waiter($node, 'small', 'CALL secretenv.secret_rotate%');

	# Half done: status() shows the progress, rows per version.
	my $progress = $node->safe_psql('small', q{
SELECT string_agg((v->>'kek_version') || ':' || (v->>'rows'), ',' ORDER BY v->>'kek_version')
FROM jsonb_array_elements(secretenv.status()->'versions') v});
	like($progress, qr/^$old:\d+,$new:\d+$/, "status() shows the run's progress ($progress)");

	if ($how =~ /kill/)
	{
		kill 'KILL', $pid;
		finish_sql($run);
		eval { $lock->quit; };
		$node->poll_query_until('small', 'SELECT true') or die 'no recovery';
	}
	else
	{
		$node->stop('immediate');
		finish_sql($run);
		eval { $lock->quit; };
		$node->start;
	}

	my ($rows, $on_new, $decrypt) = split /\|/, secrets_state($node, 'small', $new);
	is("$rows|$decrypt", "$small|$small", "after $how: every row decrypts (no row is half rotated)");
	ok($on_new > 0 && $on_new < $small, "after $how: the committed batches stay rotated ($on_new rows)");

	($rc, $out, $err) = finish_sql(start_sql($node, 'small', 'CALL secretenv.secret_rotate(1000)'));
	is($rc, 0, "after $how: secret_rotate runs again");
	is(finished_count($err), $small - $on_new, "after $how: the second run rotates only the rest");
	is(secrets_state($node, 'small', $new), "$small|$small|$small",
		"after $how: every row is on the new KEK and decrypts");
}

# --- 3. Two runs at once ------------------------------------------------------
set_keys($node, 5, 4, db => 'small');
my @runs = map { start_sql($node, 'small', 'CALL secretenv.secret_rotate(2000)') } 1 .. 2;
my $total = 0;
for my $run (@runs)
{
	($rc, $out, $err) = finish_sql($run);
	is($rc, 0, 'a concurrent run succeeded');
	$total += finished_count($err);
}
is($total, $small, 'two concurrent runs rotated every row exactly once between them');
is(secrets_state($node, 'small', 5), "$small|$small|$small",
	'after two concurrent runs every row is on the new KEK and decrypts');

$node->stop;
done_testing();
