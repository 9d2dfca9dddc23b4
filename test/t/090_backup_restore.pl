
# The backup and restore runbook (docs/runbooks/backup-restore.md), followed literally:
#   - the key configuration lives in its own file, apart from the data;
#   - pg_dumpall --roles-only, then pg_dump -Fc of the database;
#   - a new cluster with the same key settings (the same file), roles
#     restored first, createdb, pg_restore --exit-on-error;
#   - every secret decrypts, verify_secrets() is empty, the application's
#     roles, grants and triggers work as before.
# Also: without the roles the same pg_restore fails (why roles come first),
# and pg_restore --clean into the restored database is refused by the drop
# guard, changing nothing.

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;
use Test::More;

my $pass1 = 'backup-runbook-passphrase-v1-0123456789abcdef';
my $pass2 = 'backup-runbook-passphrase-v2-ghijklmnopqrstuv';
my $nsecrets = 30;
my $ntokens = 20;

# The key configuration, in a file of its own (the runbook's "kept apart").
my $keydir = PostgreSQL::Test::Utils::tempdir;
my $keyfile = "$keydir/secretenv-keys.conf";
sub write_keys
{
	my ($text) = @_;
	open(my $fh, '>', $keyfile) or die "could not write $keyfile: $!";
	print $fh $text;
	close($fh);
	chmod(0600, $keyfile);
	return;
}
write_keys("secretenv.kek_passphrase = '$pass1'\nsecretenv.kek_version = 1\n");
my $conf = "include '$keyfile'\n";

###########################################################################
# The source: an application with its own roles, secrets under two KEKs.
my $src = new_secretenv_node('source', conf => $conf);
$src->start;
$src->safe_psql(
	'postgres', q{
CREATE ROLE app_owner NOLOGIN;
CREATE ROLE app_rw LOGIN;
CREATE ROLE app_ro LOGIN;
CREATE DATABASE appdb OWNER app_owner;
});
$src->safe_psql(
	'appdb', q{
CREATE EXTENSION secretenv;
GRANT secretenv_reader, secretenv_writer TO app_rw;
GRANT secretenv_reader TO app_ro;
CREATE SCHEMA app AUTHORIZATION app_owner;
SET ROLE app_owner;
CREATE TABLE app.tokens (id uuid PRIMARY KEY, name text NOT NULL, encrypted_value bytea NOT NULL,
						 wrapped_dek bytea NOT NULL, kek_version int4 NOT NULL);
RESET ROLE;
CREATE TRIGGER tokens_check BEFORE INSERT OR UPDATE ON app.tokens FOR EACH ROW
	EXECUTE FUNCTION secretenv.check_envelope('encrypted_value', 'wrapped_dek', 'kek_version', 'id', 'name');
CREATE TRIGGER tokens_identity BEFORE UPDATE ON app.tokens FOR EACH ROW
	EXECUTE FUNCTION secretenv.forbid_identity_change('id', 'name');
GRANT USAGE ON SCHEMA app TO app_rw, app_ro;
GRANT SELECT, INSERT, UPDATE ON app.tokens TO app_rw;
GRANT SELECT ON app.tokens TO app_ro;
});

my $value_sql = q{CASE WHEN i % 5 = 0 THEN jsonb_build_object('user', 'svc-' || i, 'password', md5('pw' || i))::text
	ELSE 'backup-value-' || md5(i::text) || repeat(chr(1046), i % 3) END};
sub create_secrets
{
	my ($from, $to) = @_;
	$src->safe_psql(
		'appdb', qq{
SET ROLE app_rw;
SELECT CASE WHEN i % 5 = 0
			THEN secretenv.secret_create('bk-' || i, ($value_sql)::jsonb, 'provider-' || (i % 3))
			ELSE secretenv.secret_create('bk-' || i, $value_sql, 'provider-' || (i % 3)) END
FROM generate_series($from, $to) i;
INSERT INTO app.tokens
SELECT s.id, s.name, e.*
FROM (SELECT gen_random_uuid() AS id, 'token ' || i AS name, 'token-value-' || i AS v
	  FROM generate_series($from, $to) i WHERE i <= $ntokens) s,
	 LATERAL secretenv.secret_encrypt(s.v, s.id, s.name) e;
});
	return;
}
create_secrets(1, $nsecrets / 2);

# Rotation step 1: version 2 becomes current, version 1 stays as previous.
write_keys("secretenv.kek_passphrase = '$pass2'\nsecretenv.kek_version = 2\n"
	  . "secretenv.kek_previous_passphrase = '$pass1'\nsecretenv.kek_previous_version = 1\n");
$src->reload;
ok($src->poll_query_until('appdb', 'SELECT secretenv.current_kek_version()', '2'),
	'source: key file changed to version 2 (previous 1) and reloaded');
create_secrets($nsecrets / 2 + 1, $nsecrets);
is($src->safe_psql('appdb', 'SELECT kek_version, count(*) FROM secretenv.secrets GROUP BY 1 ORDER BY 1'),
	sprintf("1|%d\n2|%d", $nsecrets / 2, $nsecrets / 2),
	'source: secrets under KEK versions 1 and 2');

my $check_secrets = qq{
SELECT count(*) FILTER (WHERE secretenv.secret_get(secret_name) = v.expected), count(*)
FROM secretenv.masked_secrets m,
	 LATERAL (SELECT substr(m.secret_name, 4)::int AS i) n,
	 LATERAL (SELECT $value_sql AS expected FROM (SELECT n.i AS i) x) v};
my $check_tokens = q{
SELECT count(*) FILTER (WHERE secretenv.secret_decrypt(encrypted_value, wrapped_dek, kek_version, id, name)
						= 'token-value-' || substr(name, 7)), count(*)
FROM app.tokens};
my $rows_sql = q{
SELECT md5(string_agg(concat_ws('|', secret_id, secret_name, encode(encrypted_value, 'hex'),
	encode(wrapped_dek, 'hex'), kek_version, masked_value, provider, created_at, created_by,
	last_updated_at, last_updated_by), ',' ORDER BY secret_id)) FROM secretenv.secrets};
is($src->safe_psql('appdb', "SET ROLE app_rw; $check_secrets"), "$nsecrets|$nsecrets",
	'source: every secret decrypts for the application role');
is($src->safe_psql('appdb', "SET ROLE app_ro; $check_tokens"), "$ntokens|$ntokens",
	'source: every application token decrypts for the read-only role');
my $src_rows = $src->safe_psql('appdb', $rows_sql);

###########################################################################
# Backup: roles, then the database.  The key file is not part of either.
my $backup = PostgreSQL::Test::Utils::tempdir;
$src->command_ok([ 'pg_dumpall', '--roles-only', '-d', $src->connstr('postgres'), '-f', "$backup/roles.sql" ],
	'backup: pg_dumpall --roles-only');
$src->command_ok([ 'pg_dump', '-Fc', '-d', $src->connstr('appdb'), '-f', "$backup/appdb.dump" ],
	'backup: pg_dump -Fc');
my $roles = slurp_file("$backup/roles.sql");
like($roles, qr/CREATE ROLE app_rw;/, 'the roles file creates the application roles');
like($roles, qr/GRANT secretenv_reader TO app_ro/, 'the roles file keeps the secretenv memberships');
my $all_backup = $roles;
{
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'pg_restore', '-f', '-', "$backup/appdb.dump" ], '>', \$out, '2>', \$err)
	  or die "pg_restore -f - failed: $err";
	$all_backup .= $out;
}
unlike($all_backup, qr/\Q$pass1\E|\Q$pass2\E/, 'no passphrase in the backup');
unlike($all_backup, qr/backup-value-|token-value-/, 'no plaintext in the backup');

###########################################################################
# Why roles come first: the same restore without them fails.
my $noroles = new_secretenv_node('no_roles', conf => $conf);
$noroles->start;
$noroles->command_ok([ 'createdb', '-h', $noroles->host, '-p', $noroles->port, '-E', 'UTF8', 'appdb' ],
	'without roles: createdb');
my ($out, $err) = ('', '');
my $ok = IPC::Run::run([ 'pg_restore', '--exit-on-error', '-d', $noroles->connstr('appdb'), "$backup/appdb.dump" ],
	'>', \$out, '2>', \$err);
ok(!$ok, 'without roles: pg_restore --exit-on-error fails');
like($err, qr/role "app_\w+" does not exist/, 'without roles: ... because an application role is missing');
$noroles->stop;

###########################################################################
# Restore, step by step.
# 1. A new cluster with the same key configuration (the same key file).
my $new = new_secretenv_node('restored', conf => $conf);
$new->start;
# 2. Roles first; only the bootstrap superuser already exists.
($out, $err) = ('', '');
$ok = IPC::Run::run([ 'psql', '-X', '-d', $new->connstr('postgres'), '-f', "$backup/roles.sql" ],
	'>', \$out, '2>', \$err);
ok($ok, 'restore: psql -f roles.sql');
my @errors = grep { /ERROR/ } split /\n/, $err;
is(scalar(@errors), 1, 'restore: roles.sql gives exactly one error ...');
like($errors[0] // '', qr/role "\Q${\ $new->safe_psql('postgres', 'SELECT current_user')}\E" already exists/,
	'... the bootstrap superuser, which already exists');
# 3. createdb, then pg_restore.
$new->command_ok([ 'createdb', '-h', $new->host, '-p', $new->port, '-E', 'UTF8', 'appdb' ],
	'restore: createdb -E UTF8 appdb');
$new->command_ok([ 'pg_restore', '--exit-on-error', '-d', $new->connstr('appdb'), "$backup/appdb.dump" ],
	'restore: pg_restore --exit-on-error');
# 4. Check.
is($new->safe_psql('appdb', 'SELECT count(*) FROM secretenv.verify_secrets()'), '0',
	'restored: verify_secrets() returns no row');
is($new->safe_psql('appdb',
		q{SELECT string_agg(concat_ws(':', v->>'kek_version', v->>'rows', v->>'kek_opens_sample'), ',')
		  FROM jsonb_array_elements(secretenv.status()->'versions') v}),
	sprintf('1:%d:true,2:%d:true', $nsecrets / 2, $nsecrets / 2),
	'restored: status() shows both versions opening');
is($new->safe_psql('appdb', $rows_sql), $src_rows, 'restored: every stored row byte for byte');
is($new->safe_psql('appdb', "SET ROLE app_rw; $check_secrets"), "$nsecrets|$nsecrets",
	'restored: every secret decrypts for the application role');
is($new->safe_psql('appdb', "SET ROLE app_ro; $check_tokens"), "$ntokens|$ntokens",
	'restored: every application token decrypts for the read-only role');
is($new->safe_psql('appdb', 'SELECT count(*) FROM secretenv.decrypted_secrets', extra_params => [ '-U', 'app_rw' ]),
	$nsecrets, 'restored: the application role logs in and reads decrypted_secrets');
is($new->safe_psql('appdb',
		q{SELECT string_agg(tgname, ',' ORDER BY tgname) FROM pg_trigger WHERE tgrelid = 'app.tokens'::regclass}),
	'tokens_check,tokens_identity', 'restored: the application table keeps its triggers');
($out, $err) = run_sql($new, 'appdb',
	q{SET ROLE app_rw; UPDATE app.tokens SET encrypted_value = (SELECT encrypted_value FROM app.tokens WHERE name = 'token 2') WHERE name = 'token 1'});
like($err, qr/ERROR:  22S03:/, 'restored: check_envelope still refuses a swapped value');
is($new->safe_psql('appdb', q{SET ROLE app_rw; SELECT secretenv.secret_create('after-restore', 'new-value-0123') IS NOT NULL; SELECT secretenv.secret_get('after-restore')}),
	"t\nnew-value-0123", 'restored: the application writes and reads new secrets');

# pg_restore --clean into a database that holds secrets is refused, and
# changes nothing (in one transaction).
my $before = $new->safe_psql('appdb', $rows_sql);
($out, $err) = ('', '');
$ok = IPC::Run::run([ 'pg_restore', '--clean', '--single-transaction', '--exit-on-error',
		'-d', $new->connstr('appdb'), "$backup/appdb.dump" ], '>', \$out, '2>', \$err);
ok(!$ok, 'pg_restore --clean over stored secrets fails');
like($err, qr/cannot drop secretenv while secretenv\.secrets holds secrets/, '... refused by the drop guard');
is($new->safe_psql('appdb', $rows_sql), $before, '... and nothing changed');
is($new->safe_psql('appdb', "SET ROLE app_ro; $check_tokens"), "$ntokens|$ntokens",
	'... the application table is still there');

for my $node ($src, $new)
{
	unlike(slurp_file($node->logfile), qr/terminated by signal/, $node->name . ': no crash');
}
$_->stop for ($src, $new);
done_testing();
