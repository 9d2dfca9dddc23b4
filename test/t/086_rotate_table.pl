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
-- The writer's update of one row, under the current KEK.
CREATE FUNCTION app.write_cred(w_name text, w_value text) RETURNS void LANGUAGE plpgsql AS \$\$
DECLARE
	e secretenv.envelope;
	target record;
BEGIN
	SELECT c.id, c.name INTO target FROM app.creds c WHERE c.name = w_name FOR UPDATE;
	e := secretenv.secret_encrypt(w_value, target.id, target.name);
	UPDATE app.creds SET ciphertext = e.encrypted_value, dek = e.wrapped_dek, key_version = e.kek_version
	WHERE id = target.id;
END
\$\$;
});

# "rows|rows on version $v|rows that decrypt to their expected value"
sub creds_state
{
	my ($v) = @_;
	my ($out, $err) = ('', '');
	$node->psql('postgres', qq{
SELECT count(*) || '|' || count(*) FILTER (WHERE c.key_version = $v) || '|'
	|| count(*) FILTER (WHERE secretenv.secret_decrypt(c.ciphertext, c.dek, c.key_version, c.id, c.name)
						= COALESCE((SELECT w.value FROM load_writes w WHERE w.name = c.name),
								   'value-' || substr(c.name, 6)))
FROM app.creds c}, stdout => \$out, stderr => \$err);
	return $err eq '' ? $out : "error: $err";
}

my $call = "CALL secretenv.rotate_table('app.creds', 'dek', 'key_version', %d)";
sub run_as_rotator
{
	my ($sql) = @_;
	return start_sql($node, 'postgres', $sql, 'app_rotator');
}

# --- With a reader and a writer ------------------------------------------------
set_keys($node, 2, 1);
my $load = start_load($node, 'postgres',
	rows => $rows,
	prefix => 'cred-',
	reads => [
		"SELECT secretenv.secret_decrypt(c.ciphertext, c.dek, c.key_version, c.id, c.name) INTO v"
		  . " FROM app.creds c WHERE c.name = 'cred-' || i"
	],
	write => 'PERFORM app.write_cred(w_name, w_value)');
my ($rc, $out, $err) = finish_sql(run_as_rotator(sprintf($call, 5000)));
my $counts = stop_load($load);
is($rc, 0, 'rotate_table succeeded, run by the table owner') or diag $err;
like($err, qr/NOTICE:  batch \d+: \d+ rows re-wrapped/, 'a NOTICE per batch');
is($counts->{failures}, '0', 'no read failed while the table was rotated');
cmp_ok($counts->{reads}, '>', 0, 'the reader read throughout');
cmp_ok($counts->{writes}, '>', 0, 'the writer wrote throughout');
is(creds_state(2), "$rows|$rows|$rows",
	'every row is on the new KEK and decrypts to its value: no update was lost');

# --- Killed half way, then resumed ---------------------------------------------
set_keys($node, 3, 2);
my $half = start_half_way($node, 'postgres', 'app.creds', 'CALL secretenv.rotate_table%',
	sub { run_as_rotator(sprintf($call, 1000)) });
interrupt_half_way($node, 'postgres', $half, 'kill -9');
check_resumed_run('kill -9', $rows, sub { creds_state(3) }, sub { run_as_rotator(sprintf($call, 1000)) });

# --- Two runs at once -------------------------------------------------------------
set_keys($node, 4, 3);
check_concurrent_runs($rows, sub { creds_state(4) }, sub { run_as_rotator(sprintf($call, 2000)) });

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
