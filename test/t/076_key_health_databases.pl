
# Copyright (c) secretenv contributors
#
# Key health is per database, and writes fail closed (issue 11, DESIGN §7a).
#
#  - db_b's rows were written under another passphrase than the one the
#    server now runs with; db_a's under the current one.  A connection to
#    db_a reads without any warning; db_b warns, naming version 1, and
#    refuses every write under the current KEK (22S02), changing nothing.
#  - The background worker's inventory (key_inventory(), status()) lists
#    both databases with their rows and the state of their KEK.
#  - Rows restored into a third database that had none are noticed: the
#    worker re-checks it after the commit, and a session that was already
#    open there warns at its next call.
#  - Back on the passphrase that wrote db_b: every row of db_b decrypts to
#    its original value and none was added; nothing was lost.
#  - Without preload, the same refusal holds in a backend of its own.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SecretenvTest;
use Test::More;

my $pass_a = 'health-db-a-passphrase-0c2e4a6b8d1f3e5a7c9b';
my $pass_b = 'health-db-b-passphrase-9f7d5b3a1e8c6a4f2d0b';
my $warning = qr/WARNING:  22S02: the configured KEK of version 1 does not open existing secrets/;

my $node = new_secretenv_node('dbs', conf => "secretenv.kek_version = 1\n");

sub use_passphrase
{
	my ($pass) = @_;
	$node->append_conf('postgresql.conf', "secretenv.kek_passphrase = '$pass'\n");
	$node->restart;
}

# db_b is written under passphrase B.
$node->append_conf('postgresql.conf', "secretenv.kek_passphrase = '$pass_b'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE db_b');
$node->safe_psql('db_b', q{
CREATE EXTENSION secretenv;
SELECT secretenv.secret_create('b_' || i, 'value-b-' || i) FROM generate_series(1, 3) i;
});
my $b_before = $node->safe_psql('db_b',
	'SELECT string_agg(secret_name || encode(encrypted_value, \'hex\') || encode(wrapped_dek, \'hex\'), \',\' ORDER BY secret_name) FROM secretenv.secrets');

# The server now runs with passphrase A; db_a is written under it.
use_passphrase($pass_a);
$node->safe_psql('postgres', 'CREATE DATABASE db_a');
$node->safe_psql('db_a', q{
CREATE EXTENSION secretenv;
SELECT secretenv.secret_create('a_' || i, 'value-a-' || i) FROM generate_series(1, 3) i;
});

my ($out, $err) = run_sql($node, 'db_a', "SELECT secretenv.secret_get('a_1')");
is($out, 'value-a-1', 'db_a: reads under its own KEK');
is($err, '', 'db_a: no warning although db_b\'s rows do not open');

($out, $err) = run_sql($node, 'db_b', "SELECT secretenv.secret_get('b_1')");
like($err, $warning, 'db_b: the first call warns, naming version 1');
like($err, qr/ERROR:  22S02: could not decrypt secret/, 'db_b: the read fails with 22S02');

# Fail closed: no write under the current KEK in db_b.
for my $write (
	[ 'secret_create', "SELECT secretenv.secret_create('b_new', 'value-b-new')" ],
	[ 'secret_update', "SELECT secretenv.secret_update('b_1', 'value-b-changed')" ],
	[ 'secret_encrypt', "SELECT secretenv.secret_encrypt('x', gen_random_uuid(), 'n')" ],
	[ 'secret_rewrap', "SELECT secretenv.secret_rewrap(wrapped_dek, 1) FROM secretenv.secrets LIMIT 1" ])
{
	($out, $err) = run_sql($node, 'db_b', $write->[1]);
	like($err, qr/ERROR:  22S02: refusing to encrypt under the KEK of version 1/,
		"db_b: $write->[0] is refused with 22S02");
	like($err, qr/HINT:  Restore the passphrase/, "db_b: $write->[0]'s refusal says what to do");
}
is($node->safe_psql('db_b',
	'SELECT string_agg(secret_name || encode(encrypted_value, \'hex\') || encode(wrapped_dek, \'hex\'), \',\' ORDER BY secret_name) FROM secretenv.secrets'),
	$b_before, 'db_b: the refused writes changed nothing');

($out, $err) = run_sql($node, 'db_a', "SELECT secretenv.secret_create('a_new', 'value-a-new') IS NOT NULL");
is($out, 't', 'db_a: writes still work');
is($err, '', 'db_a: ... without warning');

# The worker's inventory covers both databases.
ok( $node->poll_query_until('db_a',
		"SELECT string_agg(format('%s:%s:%s:%s', database, kek_version, rows, kek_state), ',' ORDER BY database) FROM secretenv.key_inventory() WHERE counted",
		'db_a:1:4:opens,db_b:1:3:does not open'),
	'key_inventory(): rows and KEK state of every database, as counted by the worker');
is($node->safe_psql('db_a',
		"SELECT string_agg(format('%s:%s:%s', d->>'database', d->>'rows', d->>'kek_state'), ',') FROM jsonb_array_elements(secretenv.status()->'databases') d"),
	'db_a:4:opens,db_b:3:does not open', 'status() lists both databases');

# status() counts its own database now, not as of the worker's last visit.
$node->safe_psql('db_a', q{
SELECT secretenv.secret_create('a_fresh', 'value-a-fresh');
SELECT string_agg(format('%s:%s', d->>'database', d->>'rows'), ',')
FROM jsonb_array_elements(secretenv.status()->'databases') d});
like($node->safe_psql('db_a', q{
BEGIN;
SELECT secretenv.secret_create('a_in_xact', 'value-a-in-xact');
SELECT string_agg(format('%s:%s', d->>'database', d->>'rows'), ',')
FROM jsonb_array_elements(secretenv.status()->'databases') d;
ROLLBACK;}),
	qr/^db_a:6,db_b:3$/m, 'status(): this database\'s rows are counted at the call (6, the worker cannot have seen them)');
is($node->safe_psql('db_b', "SELECT secretenv.status()->>'rotation_complete'"),
	'false', 'db_b: status() does not call the rotation complete while version 1 does not open');
is($node->safe_psql('db_a', "SELECT secretenv.status()->>'rotation_complete'"),
	'true', 'db_a: status() calls it complete');
like(slurp_file($node->logfile),
	qr/WARNING:  the configured KEK of version 1 does not open existing secrets in database "db_b"/,
	'the worker logged the unhealthy database by name');

# Rows restored into a database that had none.
$node->safe_psql('postgres', 'CREATE DATABASE db_c');
$node->safe_psql('db_c', 'CREATE EXTENSION secretenv');
my $c_session = $node->background_psql('db_c', on_error_stop => 0);
$c_session->{stderr} = '';
$c_session->query("SELECT secretenv.current_kek_version()");
$c_session->query("SELECT secretenv.secret_decrypt('\\x00'::bytea, '\\x00'::bytea, 1, 'i', 'n')");
unlike($c_session->{stderr}, qr/does not open existing secrets/, 'db_c: no warning while it holds no rows');

my $rows = $node->safe_psql('db_b',
	"SELECT string_agg(format('(%L::uuid, %L, decode(%L, ''hex''), decode(%L, ''hex''), %s)', secret_id, secret_name, encode(encrypted_value, 'hex'), encode(wrapped_dek, 'hex'), kek_version), ',') FROM secretenv.secrets");
$node->safe_psql('db_c',
	"INSERT INTO secretenv.secrets (secret_id, secret_name, encrypted_value, wrapped_dek, kek_version) VALUES $rows");
# (Polled from db_a: poll_query_until wants no warning on stderr.)
ok( $node->poll_query_until('db_a',
		"SELECT kek_state FROM secretenv.key_inventory() WHERE database = 'db_c' AND counted",
		'does not open'),
	'db_c: the worker re-checked it after the restore');
$c_session->{stderr} = '';
$c_session->query("SELECT 1 FROM secretenv.masked_secrets LIMIT 0");
$c_session->query("SELECT secretenv.secret_decrypt('\\x00'::bytea, '\\x00'::bytea, 1, 'i', 'n')");
like($c_session->{stderr}, qr/WARNING:  the configured KEK of version 1 does not open existing secrets/,
	'db_c: the session that was already open warns at its next call');
$c_session->quit;

# Back on passphrase B: nothing in db_b was lost or added.
use_passphrase($pass_b);
($out, $err) = run_sql($node, 'db_b',
	"SELECT string_agg(secretenv.secret_get(secret_name), ',' ORDER BY secret_name) FROM secretenv.secrets");
is($out, 'value-b-1,value-b-2,value-b-3', 'db_b: every row decrypts to its value under the right passphrase');
is($err, '', 'db_b: no warning under the right passphrase');
is($node->safe_psql('db_b', 'SELECT count(*) FROM secretenv.verify_secrets()'), '0',
	'db_b: verify_secrets() is empty');
is($node->safe_psql('db_b', 'SELECT count(*) FROM secretenv.secrets'), '3', 'db_b: no row was added');

# Without preload, a backend runs the check itself and refuses as well.
# (Without preload a written passphrase is refused: the command prints it.)
$node->append_conf('postgresql.conf', "shared_preload_libraries = ''\n"
	  . "secretenv.kek_passphrase = ''\n" . kek_command_settings($pass_a, 1));
$node->restart;
($out, $err) = run_sql($node, 'db_b', "SELECT secretenv.secret_create('b_new', 'value-b-new')");
like($err, $warning, 'without preload: db_b warns');
like($err, qr/ERROR:  22S02: refusing to encrypt under the KEK of version 1/,
	'without preload: db_b refuses the write');
($out, $err) = run_sql($node, 'db_a', "SELECT secretenv.secret_get('a_2')");
is($out, 'value-a-2', 'without preload: db_a reads');
unlike($err, qr/does not open existing secrets/, 'without preload: db_a does not warn');
is($node->safe_psql('db_b', 'SELECT count(*) FROM secretenv.secrets'), '3',
	'without preload: db_b still holds its 3 rows only');

$node->stop;
done_testing();
