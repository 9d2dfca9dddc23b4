# Copyright (c) secretenv contributors
#
# CALL secretenv.rotate_table(tbl, wrapped_dek_column, kek_version_column,
# batch_size) on an application table that uses the primitives (issue 14,
# DESIGN §7d): rotated in batches with a reader and a writer running; killed
# half way (kill -9) and resumed; two runs at once rotate each row once; it
# runs with the caller's rights on the table and refuses what it cannot
# rotate, saying why.
use strict;
use warnings;

use FindBin;
use IPC::Run;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use LifecycleTest;
use SecretenvTest;
use Test::More;

my $rows = 100000;

my $node = new_secretenv_node('rotate_table', conf => "restart_after_crash = on\n");
$node->start;
set_keys($node, 1, 0);
$node->safe_psql('postgres', qq{
CREATE EXTENSION secretenv;
CREATE ROLE app_rotator LOGIN;
GRANT secretenv_admin TO app_rotator;
CREATE ROLE other_admin LOGIN;
GRANT secretenv_admin TO other_admin;
CREATE SCHEMA app AUTHORIZATION app_rotator;
SET ROLE app_rotator;
CREATE TABLE app.creds (id uuid PRIMARY KEY, name text NOT NULL,
						ciphertext bytea NOT NULL, dek bytea NOT NULL, key_version int4 NOT NULL);
RESET ROLE;
INSERT INTO app.creds
SELECT id, 'cred-' || i, (e).encrypted_value, (e).wrapped_dek, (e).kek_version
FROM (SELECT id, i, secretenv.secret_encrypt('value-' || i, id, 'cred-' || i) e
	  FROM (SELECT gen_random_uuid() id, i FROM generate_series(1, $rows) i) x OFFSET 0) y;
VACUUM ANALYZE app.creds;
CREATE TABLE app.t_stop (stop boolean);
INSERT INTO app.t_stop VALUES (false);
CREATE TABLE app.t_writes (name text PRIMARY KEY, value text);
CREATE TABLE app.t_results (what text, n int);
});

# "rows|rows on version $v|rows that decrypt to their expected value"
sub creds_state
{
	my ($v) = @_;
	my ($out, $err) = ('', '');
	$node->psql('postgres', qq{
SELECT count(*) || '|' || count(*) FILTER (WHERE c.key_version = $v) || '|'
	|| count(*) FILTER (WHERE secretenv.secret_decrypt(c.ciphertext, c.dek, c.key_version, c.id, c.name)
						= COALESCE((SELECT w.value FROM app.t_writes w WHERE w.name = c.name),
								   'value-' || substr(c.name, 6)))
FROM app.creds c}, stdout => \$out, stderr => \$err);
	return $err eq '' ? $out : "error: $err";
}

my $call = "CALL secretenv.rotate_table('app.creds', 'dek', 'key_version', %d)";
my $as_rotator = " user=app_rotator";

sub run_as_rotator
{
	my ($sql) = @_;
	my %run = (out => '', err => '');
	$run{h} = IPC::Run::start(
		[
			$node->installed_command('psql'), '-XAtq', '-v', 'ON_ERROR_STOP=1',
			'-d', $node->connstr('postgres') . $as_rotator, '-c', $sql
		],
		'<', \undef, '>', \$run{out}, '2>', \$run{err});
	return \%run;
}

# --- With a reader and a writer ------------------------------------------------
set_keys($node, 2, 1);
my $reader = start_sql($node, 'postgres', qq{
DO \$\$
DECLARE
	reads int := 0;
	failures int := 0;
	i int;
	v text;
BEGIN
	WHILE NOT (SELECT stop FROM app.t_stop) LOOP
		i := 201 + floor(random() * ($rows - 200))::int;
		BEGIN
			SELECT secretenv.secret_decrypt(c.ciphertext, c.dek, c.key_version, c.id, c.name) INTO v
			FROM app.creds c WHERE c.name = 'cred-' || i;
			IF v IS DISTINCT FROM 'value-' || i THEN failures := failures + 1; END IF;
		EXCEPTION WHEN OTHERS THEN
			failures := failures + 1;
		END;
		reads := reads + 1;
		PERFORM pg_sleep(0.002);
	END LOOP;
	INSERT INTO app.t_results VALUES ('reads', reads), ('failures', failures);
END
\$\$;});
my $writer = start_sql($node, 'postgres', q{
DO $$
DECLARE
	k int := 0;
	e secretenv.envelope;
	target record;
BEGIN
	WHILE NOT (SELECT stop FROM app.t_stop) LOOP
		k := k + 1;
		SELECT c.id, c.name INTO target FROM app.creds c WHERE c.name = 'cred-' || (1 + k % 200) FOR UPDATE;
		e := secretenv.secret_encrypt('written-' || k, target.id, target.name);
		UPDATE app.creds SET ciphertext = e.encrypted_value, dek = e.wrapped_dek, key_version = e.kek_version
		WHERE id = target.id;
		INSERT INTO app.t_writes VALUES (target.name, 'written-' || k)
			ON CONFLICT (name) DO UPDATE SET value = excluded.value;
		COMMIT;
		PERFORM pg_sleep(0.005);
	END LOOP;
	INSERT INTO app.t_results VALUES ('writes', k);
END
$$;});
my ($rc, $out, $err) = finish_sql(run_as_rotator(sprintf($call, 5000)));
$node->safe_psql('postgres', 'UPDATE app.t_stop SET stop = true');
finish_sql($reader);
finish_sql($writer);
is($rc, 0, 'rotate_table succeeded, run by the table owner') or diag $err;
like($err, qr/NOTICE:  batch \d+: \d+ rows re-wrapped/, 'a NOTICE per batch');
is($node->safe_psql('postgres', "SELECT n FROM app.t_results WHERE what = 'failures'"), '0',
	'no read failed while the table was rotated');
cmp_ok($node->safe_psql('postgres', "SELECT n FROM app.t_results WHERE what = 'reads'"), '>', 0,
	'the reader read throughout');
cmp_ok($node->safe_psql('postgres', "SELECT n FROM app.t_results WHERE what = 'writes'"), '>', 0,
	'the writer wrote throughout');
is(creds_state(2), "$rows|$rows|$rows",
	'every row is on the new KEK and decrypts to its value: no update was lost');

# --- Killed half way, then resumed ---------------------------------------------
set_keys($node, 3, 2);
my $lock = hold_row_lock($node, 'postgres', 'app.creds');
my $run = run_as_rotator(sprintf($call, 1000));
my $pid = wait_for_lock_waiter($node, 'postgres', 'CALL secretenv.rotate_table%');
kill 'KILL', $pid;
finish_sql($run);
eval { $lock->quit; };
$node->poll_query_until('postgres', 'SELECT true') or die 'no recovery';
my ($all, $on_new, $decrypt) = split /\|/, creds_state(3);
is("$all|$decrypt", "$rows|$rows", 'after kill -9: every row decrypts (no row is half rotated)');
ok($on_new > 0 && $on_new < $rows, "after kill -9: the committed batches stay rotated ($on_new rows)");
($rc, $out, $err) = finish_sql(run_as_rotator(sprintf($call, 1000)));
is($rc, 0, 'after kill -9: rotate_table runs again');
is(finished_count($err), $rows - $on_new, 'after kill -9: the second run rotates only the rest');
is(creds_state(3), "$rows|$rows|$rows", 'after kill -9 and a second run: every row is on the new KEK');

# --- Two runs at once -------------------------------------------------------------
set_keys($node, 4, 3);
my @runs = map { run_as_rotator(sprintf($call, 2000)) } 1 .. 2;
my $total = 0;
for my $r (@runs)
{
	($rc, $out, $err) = finish_sql($r);
	is($rc, 0, 'a concurrent rotate_table succeeded');
	$total += finished_count($err);
}
is($total, $rows, 'two concurrent runs rotated every row exactly once between them');
is(creds_state(4), "$rows|$rows|$rows", 'after two concurrent runs every row is on the new KEK');

# --- The caller's rights, and what it refuses ---------------------------------------
set_keys($node, 5, 4);
my @refusals = (
	[ 'other_admin', "CALL secretenv.rotate_table('app.creds', 'dek', 'key_version')", '42501',
		'a member of secretenv_admin without UPDATE on the table' ],
	[ 'app_rotator', "CALL secretenv.rotate_table('app.creds', 'ciphertext', 'name')", '42804',
		'a KEK version column that is not an integer' ],
	[ 'app_rotator', "CALL secretenv.rotate_table('app.creds')", '42703',
		'the default column names, absent from this table' ],
	[ 'app_rotator', "CALL secretenv.rotate_table('app.creds', 'dek', 'key_version', 0)", '22023',
		'a batch size of 0' ]);
for my $case (@refusals)
{
	my ($role, $sql, $state, $what) = @$case;
	my ($o, $e) = run_sql($node, 'postgres', $sql,
		connstr => $node->connstr('postgres') . " user=$role");
	like($e, qr/ERROR:  $state:/, "refused with $state: $what");
}
is($node->safe_psql('postgres', 'SELECT count(*) FROM app.creds WHERE key_version = 5'), '0',
	'the refused calls changed nothing');

$node->stop;
done_testing();
