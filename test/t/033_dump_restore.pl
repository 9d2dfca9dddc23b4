
# pg_dump of a database using secretenv (the managed table, which the
# extension marks for dumping, and an application table built on the
# primitives), restored:
#   - into a fresh cluster with the same KEK configuration (custom format,
#     pg_restore): every secret decrypts, the identity triggers are in force;
#   - into a cluster with another passphrase (plain format, psql): the
#     restore succeeds, every read fails with a clear 22S02, verify_secrets()
#     and status() name the problem, masked_secrets still lists every row,
#     and a rotation refuses rather than rewriting anything.

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;
use Time::HiRes qw(time);

my $t0 = time;
my $pass1 = 'dump-restore-passphrase-v1-0123456789abcdef';
my $pass2 = 'dump-restore-passphrase-v2-ghijklmnopqrstuv';
my $wrong = 'a-different-passphrase-entirely-0123456789';
my $nsecrets = 40;

# A started node with secretenv preloaded and $conf.
sub new_node
{
	my ($name, $conf) = @_;
	my $node = new_secretenv_node($name, conf => $conf);
	$node->start;
	return $node;
}

# Source: secrets under KEK version 1, then version 2 current with 1 as
# previous and more secrets, not rotated: the dump holds both versions.
my $src = new_node('source', kek_settings($pass1, 1));
$src->safe_psql('postgres', 'CREATE DATABASE appdb');
$src->safe_psql(
	'appdb', qq{
CREATE EXTENSION secretenv;
SELECT secretenv.secret_create('dump-' || i, 'dump-' || md5('dump-' || i) || repeat(chr(1046), i % 5),
							   'provider-' || (i % 3), 'description ' || i)
FROM generate_series(1, $nsecrets / 2) i;
-- an application table on the primitives, with its own identity trigger
CREATE SCHEMA app;
CREATE TABLE app.tokens (id text PRIMARY KEY, name text NOT NULL, env secretenv.envelope NOT NULL);
CREATE TRIGGER tokens_identity BEFORE UPDATE ON app.tokens
	FOR EACH ROW EXECUTE FUNCTION secretenv.forbid_identity_change('id', 'name');
INSERT INTO app.tokens
SELECT 'tok-' || i, 'token ' || i, secretenv.secret_encrypt('token-value-' || i, 'tok-' || i, 'token ' || i)
FROM generate_series(1, 5) i;
});
$src->append_conf('postgresql.conf', kek_settings($pass2, 2, $pass1, 1));
$src->reload;
ok($src->poll_query_until('appdb', 'SELECT secretenv.current_kek_version()', '2'),
	'source reloaded: current KEK version 2, previous 1');
$src->safe_psql(
	'appdb', qq{
SELECT secretenv.secret_create('dump-' || i, 'dump-' || md5('dump-' || i) || repeat(chr(1046), i % 5),
							   'provider-' || (i % 3), 'description ' || i)
FROM generate_series($nsecrets / 2 + 1, $nsecrets - 1) i;
SELECT secretenv.secret_create('dump-json', jsonb_build_object('user', 'svc', 'password', 'pw-' || md5('json')));
});
is($src->safe_psql('appdb',
		'SELECT kek_version, count(*) FROM secretenv.secrets GROUP BY 1 ORDER BY 1'),
	sprintf("1|%d\n2|%d", $nsecrets / 2, $nsecrets / 2),
	'source holds secrets under KEK versions 1 and 2');

my $expected_sql =
  q{CASE WHEN secret_name = 'dump-json'
		THEN jsonb_build_object('user', 'svc', 'password', 'pw-' || md5('json'))::text
		ELSE 'dump-' || md5(secret_name) || repeat(chr(1046), substr(secret_name, 6)::int % 5) END};
is(secrets_decrypt_counts($src, 'appdb', $expected_sql), "$nsecrets|$nsecrets|$nsecrets",
	'source: every secret decrypts to its value');

my $rows_sql = q{SELECT md5(string_agg(concat_ws('|', secret_id, secret_name, encode(encrypted_value, 'hex'),
	encode(wrapped_dek, 'hex'), kek_version, masked_value, provider, description, created_at,
	created_by, last_updated_at, last_updated_by, value_encrypted_at), ',' ORDER BY secret_id)) FROM secretenv.secrets};
my $masked_sql = q{SELECT md5(string_agg(concat_ws('|', secret_id, secret_name, masked_value, kek_version,
	provider, description), ',' ORDER BY secret_id)) FROM secretenv.masked_secrets};
my $src_rows = $src->safe_psql('appdb', $rows_sql);
my $src_masked = $src->safe_psql('appdb', $masked_sql);

# Dumps: custom format and plain format.
my $tmp = PostgreSQL::Test::Utils::tempdir;
$src->command_ok([ 'pg_dump', '-Fc', '-f', "$tmp/appdb.dump", '-d', $src->connstr('appdb') ],
	'pg_dump -Fc of the database');
$src->command_ok([ 'pg_dump', '-f', "$tmp/appdb.sql", '-d', $src->connstr('appdb') ],
	'pg_dump (plain) of the database');
my $plain = slurp_file("$tmp/appdb.sql");
like($plain, qr/CREATE EXTENSION IF NOT EXISTS secretenv WITH SCHEMA secretenv;/,
	'the dump creates the extension');
like($plain, qr/COPY secretenv\.secrets \(/, 'the dump carries secretenv.secrets data');
unlike($plain, qr/dump-[0-9a-f]{32}/, 'the dump holds no plaintext');
unlike($plain, qr/\Q$pass1\E|\Q$pass2\E/, 'the dump holds no passphrase');

###########################################################################
# Restore into a fresh cluster with the same KEK configuration.
my $same = new_node('same_keys', kek_settings($pass2, 2, $pass1, 1));
$same->safe_psql('postgres', 'CREATE DATABASE appdb');
$same->command_ok([ 'pg_restore', '--exit-on-error', '-d', $same->connstr('appdb'), "$tmp/appdb.dump" ],
	'same keys: pg_restore succeeds');

is($same->safe_psql('appdb', $rows_sql), $src_rows,
	'same keys: every stored row restored byte for byte');
is(secrets_decrypt_counts($same, 'appdb', $expected_sql), "$nsecrets|$nsecrets|$nsecrets",
	'same keys: every secret decrypts (secret_get and decrypted_secrets)');
is($same->safe_psql('appdb', 'SELECT count(*) FROM secretenv.verify_secrets()'),
	'0', 'same keys: verify_secrets() finds no failing row');
is($same->safe_psql('appdb',
		q{SELECT count(*) FILTER (WHERE secretenv.secret_decrypt(env, id, name) = 'token-value-' || substr(id, 5)), count(*) FROM app.tokens}),
	'5|5', 'same keys: the application table decrypts');
is($same->safe_psql('appdb',
		q{SELECT string_agg(v->>'kek_version' || ':' || (v->>'kek_opens_sample'), ',') FROM jsonb_array_elements(secretenv.status()->'versions') v}),
	'1:true,2:true', 'same keys: status() reports both versions opening');

# The identity triggers came through the dump and are in force.
is($same->safe_psql('appdb',
		q{SELECT tgname || ':' || tgenabled::text FROM pg_trigger WHERE tgrelid = 'secretenv.secrets'::regclass AND NOT tgisinternal ORDER BY 1}),
	"secrets_audit_write:O
secrets_check_envelope:A
secrets_destroy_versions:O
secrets_destroy_versions_on_truncate:O
secrets_identity_immutable:A
secrets_invalidate_caches:A
secrets_invalidate_caches_on_apply:R
secrets_keep_versions:O
secrets_value_encrypted_at:A",
	'same keys: the extension\'s triggers exist, enabled ALWAYS (the apply-only one REPLICA, the audit and versions ones ORIGIN)');
my ($out, $err);
for my $case (
	[ 'rename', q{UPDATE secretenv.secrets SET secret_name = secret_name || '-renamed' WHERE secret_name = 'dump-1'} ],
	[ 'new id', q{UPDATE secretenv.secrets SET secret_id = gen_random_uuid() WHERE secret_name = 'dump-2'} ],
	[ 'rename under session_replication_role = replica',
		q{SET session_replication_role = replica; UPDATE secretenv.secrets SET secret_name = 'x' WHERE secret_name = 'dump-3'} ],
	[ 'rename in the application table', q{UPDATE app.tokens SET name = 'renamed' WHERE id = 'tok-1'} ])
{
	($out, $err) = run_sql($same, 'appdb', $case->[1]);
	like($err, qr/ERROR:  23S01:/, "same keys: $case->[0] refused with 23S01, as superuser");
}
is($same->safe_psql('appdb', $rows_sql), $src_rows, 'same keys: nothing was changed');
$same->safe_psql('appdb', q{SELECT secretenv.secret_update('dump-1', 'new-value-after-restore')});
is($same->safe_psql('appdb', q{SELECT secretenv.secret_get('dump-1')}),
	'new-value-after-restore', 'same keys: the restored store takes updates');
is($same->safe_psql('appdb', 'SELECT secretenv.secret_rotate_all()'),
	$nsecrets / 2, 'same keys: the restored store rotates (version-1 rows not updated since, and the version-1 value that update kept)');
is($same->safe_psql('appdb', 'SELECT count(*) FROM secretenv.verify_secrets()'),
	'0', 'same keys: verify_secrets() clean after the rotation');

###########################################################################
# Restore into a cluster with a different passphrase (plain format).
my $other = new_node('other_keys', kek_settings($wrong, 2, $pass1 . '-not', 1));
$other->safe_psql('postgres', 'CREATE DATABASE appdb');
($out, $err) = ('', '');
my $ok = IPC::Run::run(
	[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', "$tmp/appdb.sql", '-d', $other->connstr('appdb') ],
	'>', \$out, '2>', \$err);
ok($ok, 'other keys: the plain dump restores with psql');
unlike($err, qr/ERROR/, 'other keys: no error during the restore');

is($other->safe_psql('appdb', $rows_sql), $src_rows,
	'other keys: every stored row restored byte for byte');

($out, $err) = run_sql($other, 'appdb', q{SELECT secretenv.secret_get('dump-1')});
like($err, qr/WARNING:  22S02: the configured KEK of version 2 does not open existing secrets/,
	'other keys: the first call warns that the KEK of version 2 does not open the rows');
like($err, qr/WARNING:  22S02: the configured KEK of version 1 does not open existing secrets/,
	'other keys: ... and that the KEK of version 1 does not either');
like($err, qr/ERROR:  22S02: could not decrypt secret: wrong KEK or corrupted wrapped DEK/,
	'other keys: secret_get fails with 22S02 and a clear message');
like($err, qr/HINT:  .*secretenv\.kek_passphrase/, 'other keys: the hint names the setting to check');
is($out, '', 'other keys: secret_get returns nothing');
unlike($err, qr/\Q$wrong\E|\Q$pass1\E|dump-[0-9a-f]{32}/, 'other keys: no passphrase or plaintext in the error');

# Every read path fails the same way; none returns anything.
my $failures = 0;
for my $name ('dump-2', 'dump-' . ($nsecrets - 1), 'dump-json')
{
	($out, $err) = run_sql($other, 'appdb', qq{SELECT secretenv.secret_get('$name')});
	$failures++ if $err =~ /ERROR:  22S02:/ && $out eq '';
}
is($failures, 3, 'other keys: secret_get of rows of both versions and of a JSON secret fails with 22S02');
($out, $err) = run_sql($other, 'appdb', q{SELECT count(value) FROM secretenv.decrypted_secrets});
like($err, qr/ERROR:  22S02:/, 'other keys: decrypted_secrets fails with 22S02');
($out, $err) = run_sql($other, 'appdb', q{SELECT secretenv.secret_decrypt(env, id, name) FROM app.tokens});
like($err, qr/ERROR:  22S02:/, 'other keys: the application table fails with 22S02');

is($other->safe_psql('appdb',
		q{SELECT count(*), count(*) FILTER (WHERE failed_check = 'wrong KEK or corrupted wrapped DEK'), count(DISTINCT secret_id)
		  FROM secretenv.verify_secrets()}),
	"$nsecrets|$nsecrets|$nsecrets",
	'other keys: verify_secrets() lists every row as wrong KEK or corrupted wrapped DEK');
is($other->safe_psql('appdb',
		q{SELECT string_agg(concat_ws(':', v->>'kek_version', v->>'rows', v->>'kek_configured', v->>'kek_opens_sample'), ',')
		  FROM jsonb_array_elements(secretenv.status()->'versions') v}),
	sprintf('1:%d:true:false,2:%d:true:false', $nsecrets / 2, $nsecrets / 2),
	'other keys: status() shows kek_opens_sample false for both versions');
is($other->safe_psql('appdb', q{SELECT count(*), count(masked_value) FROM secretenv.masked_secrets}),
	"$nsecrets|$nsecrets", 'other keys: masked_secrets lists every row with its mask');
is($other->safe_psql('appdb', $masked_sql), $src_masked,
	'other keys: masked_secrets shows exactly what the source showed');

# A rotation with the wrong keys refuses and changes nothing.
$other->append_conf('postgresql.conf', "secretenv.kek_version = 3\nsecretenv.kek_previous_version = 2\nsecretenv.kek_previous_passphrase = '$wrong'\n");
$other->reload;
ok($other->poll_query_until('appdb', 'SELECT secretenv.current_kek_version()', '3'),
	'other keys: reconfigured with current version 3');
($out, $err) = run_sql($other, 'appdb', 'SELECT secretenv.secret_rotate_all()');
like($err, qr/ERROR:  22S04: .*version 1\b/, 'other keys: rotation refuses (22S04), naming version 1 which has no KEK');
$other->append_conf('postgresql.conf', "secretenv.kek_previous_version = 1\nsecretenv.kek_previous_passphrase = '$wrong'\n");
$other->safe_psql('appdb', q{DELETE FROM secretenv.secrets WHERE kek_version = 2});
$other->reload;
ok($other->poll_query_until('appdb', q{SELECT secretenv.kek_is_configured(1)}, 't'),
	'other keys: reconfigured with a (wrong) previous KEK for version 1');
my $before = $other->safe_psql('appdb', $rows_sql);
($out, $err) = run_sql($other, 'appdb', 'SELECT secretenv.secret_rotate_all()');
like($err, qr/ERROR:  22S02:/, 'other keys: rotation under a wrong previous KEK fails with 22S02');
is($other->safe_psql('appdb', $rows_sql), $before, 'other keys: the failed rotation changed nothing');

# Restored with no passphrase at all: not configured (22S04), no
# development key by default.
my $nokeys = new_node('no_keys', '');
$nokeys->safe_psql('postgres', 'CREATE DATABASE appdb');
$nokeys->command_ok([ 'pg_restore', '--exit-on-error', '-d', $nokeys->connstr('appdb'), "$tmp/appdb.dump" ],
	'no keys: pg_restore succeeds');
($out, $err) = run_sql($nokeys, 'appdb', q{SELECT secretenv.secret_get('dump-1')});
like($err, qr/ERROR:  22S0[24]:/, 'no keys: secret_get fails with 22S02 or 22S04');
($out, $err) = run_sql($nokeys, 'appdb',
	q{SELECT secretenv.secret_decrypt(encrypted_value, wrapped_dek, kek_version, secret_id, secret_name) FROM secretenv.secrets WHERE kek_version = 1 LIMIT 1});
like($err, qr/ERROR:  22S04: no KEK is configured for version 1\n(.*\n)*HINT:  .*secretenv\.kek_passphrase_command/,
	'no keys: a version-1 row fails with 22S04 and the hint naming the settings');
is($nokeys->safe_psql('appdb', q{SELECT count(*) FROM secretenv.masked_secrets}),
	$nsecrets, 'no keys: masked_secrets lists every row');

for my $node ($src, $same, $other, $nokeys)
{
	unlike(slurp_file($node->logfile), qr/terminated by signal/, $node->name . ': no crash');
}
diag(sprintf('dump/restore: %d secrets, 4 clusters, %.0f s', $nsecrets, time - $t0));

$_->stop for ($src, $same, $other, $nokeys);
done_testing();
