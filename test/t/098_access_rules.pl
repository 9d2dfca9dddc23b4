
# Copyright (c) secretenv contributors
#
# Per-application access rules (issue 27, DESIGN §8f):
#  - with no rule and no hand-written policy, access is as in 1.1: every
#    reader reads every secret, the admin sees every mask;
#  - two applications with rules (grant_secrets): each reads and writes only
#    its own secrets on every path (secret_get missed and cached, both views,
#    secret_decrypt over the table, secret_update, secret_delete,
#    secret_create); a 'read' rule does not let a role write; a role without
#    rules is not restricted; LIKE escapes work as documented;
#  - bad input: NULLs (22004), an unknown privilege or empty pattern (22023),
#    a pattern ending in the escape character (22025), a superuser, BYPASSRLS
#    role or the table's owner (22023), an unknown role (42704), a pattern
#    matching nothing (a NOTICE), a non-admin caller (42501); a dropped
#    role's rules are inert, shown with role_exists = false, not dumped, and
#    removed by the next grant_secrets;
#  - hand-written policies beside the rules: both apply;
#  - isolation lost (row-level security disabled, a rule policy dropped or
#    changed by a superuser): every read of a role subject to row-level
#    security refuses with 55S01, cache hits included, until
#    enforce_access_rules(); superusers still read;
#  - the backup and restore runbook (docs/runbooks/backup-restore.md) followed literally: after
#    pg_restore the applications are isolated on their first connection,
#    with no manual step;
#  - 1.1 -> 1.2 upgrade with hand-written policies: they keep working, and
#    rules then add to them; with policies but row-level security disabled
#    the update refuses (55000).
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SecretenvTest;
use Test::More;

my $passphrase = 'access-rules-test-passphrase-0123456789abcdef';
my $keydir = PostgreSQL::Test::Utils::tempdir;
my $keyfile = "$keydir/secretenv-keys.conf";
open(my $kf, '>', $keyfile) or die "could not write $keyfile: $!";
print $kf kek_settings($passphrase, 1);
close($kf);

my $node = new_secretenv_node('rules', conf => "include '$keyfile'\n");
$node->start;

my %value = (
	'app_a/db'  => 'value-of-app-a-db-0123456789',
	'app_a/api' => 'value-of-app-a-api-0123456789',
	'app_b/db'  => 'value-of-app-b-db-0123456789',
	'appXa/db'  => 'value-of-appXa-db-0123456789',
	'shared/x'  => 'value-of-shared-x-0123456789');
my @all = sort keys %value;

$node->safe_psql('postgres', q{
CREATE ROLE app_a LOGIN;
CREATE ROLE app_b LOGIN;
CREATE ROLE plain LOGIN;
CREATE ROLE ops LOGIN;
CREATE ROLE bypasser LOGIN BYPASSRLS;
CREATE ROLE doomed LOGIN;
CREATE DATABASE appdb;
});
$node->safe_psql('appdb',
	"CREATE EXTENSION secretenv;\n"
	  . join('', map { "SELECT secretenv.secret_create('$_', '$value{$_}');\n" } @all)
	  . q{
GRANT secretenv_reader, secretenv_writer TO app_a, app_b, doomed;
GRANT secretenv_reader TO plain;
GRANT secretenv_admin TO ops;
});

# Run SQL as a login role in a new session of appdb (or $db); returns
# (stdout, stderr) with verbose errors.
sub as_role
{
	my ($role, $sql, $db) = @_;
	return run_sql($node, $db // 'appdb', $sql, on_error_stop => 0,
		extra_params => [ '-U', $role, '-v', 'VERBOSITY=verbose' ]);
}

my ($out, $err);
my $absent = qq{ERROR:  P0002: secret "<name>" does not exist};

###########################################################################
# No rules, no hand-written policies: 1.1 access.
is($node->safe_psql('appdb', q{
SELECT c.relrowsecurity, (SELECT string_agg(polname || ':' || polcmd::text || ':' || polpermissive, ',' ORDER BY polname)
						  FROM pg_policy WHERE polrelid = c.oid)
FROM pg_class c WHERE c.oid = 'secretenv.secrets'::regclass}),
	't|secretenv_default:*:true,secretenv_rules_delete:d:false,secretenv_rules_insert:a:false,secretenv_rules_select:r:false,secretenv_rules_update:w:false',
	'CREATE EXTENSION enables row-level security and creates the default and the four rule policies');
for my $role ('app_a', 'plain')
{
	($out, $err) = as_role($role, join('', map { "SELECT secretenv.secret_get('$_');\n" } @all));
	is($out, join("\n", map { $value{$_} } @all), "no rules: $role reads every secret with secret_get");
	($out, $err) = as_role($role, q{SELECT string_agg(secret_name || '=' || value, ',' ORDER BY secret_name) FROM secretenv.decrypted_secrets});
	is($out, join(',', map { "$_=$value{$_}" } @all), "no rules: $role reads every secret in decrypted_secrets");
}
($out, $err) = as_role('ops', q{SELECT count(*) FROM secretenv.masked_secrets});
is($out, scalar(@all), 'no rules: the admin sees every mask');
($out, $err) = as_role('app_b', q{SELECT secretenv.secret_update('app_a/api', 'updated-by-b-0123456789'); SELECT secretenv.secret_update('app_a/api', 'value-of-app-a-api-0123456789')});
is($err, '', 'no rules: a writer updates any secret');

###########################################################################
# Rules for two applications.
($out, $err) = as_role('ops', q{
SELECT secretenv.grant_secrets('app_a', 'app\_a/%', 'write');
SELECT secretenv.grant_secrets('app_b', 'app\_b/%', 'write');
SELECT secretenv.grant_secrets('app_b', 'shared/%', 'read');
SELECT secretenv.grant_secrets('app_b', 'shared/%', 'read');
SELECT role || ' ' || name_pattern || ' ' || privilege || ' ' || role_exists || ' ' || matching_secrets
FROM secretenv.access_rules ORDER BY 1});
is($err, '', 'the admin grants rules (granting one twice is harmless)');
is($out, "\n\n\n\napp_a app\\_a/% write true 2\napp_b app\\_b/% write true 1\napp_b shared/% read true 1",
	'access_rules lists each rule once, with the secrets it matches');

my %own = ('app_a' => [ 'app_a/api', 'app_a/db' ], 'app_b' => [ 'app_b/db', 'shared/x' ]);
for my $pair ([ 'app_a', 'app_b' ], [ 'app_b', 'app_a' ])
{
	my ($me, $other) = @$pair;
	my @mine = @{ $own{$me} };
	my @hidden = grep { my $n = $_; !grep { $_ eq $n } @mine } @all;

	($out, $err) = as_role($me, join('', map { "SELECT secretenv.secret_get('$_');\n" } @mine));
	is($out, join("\n", map { $value{$_} } @mine), "$me: secret_get returns its own secrets");
	for my $name (@hidden)
	{
		($out, $err) = as_role($me, "SELECT secretenv.secret_get('$name')");
		is($out . error_lines($err, $name), $absent, "$me: secret_get of $name fails as for an absent secret");
	}
	($out, $err) = as_role($me, q{SELECT string_agg(secret_name || '=' || value, ',' ORDER BY secret_name) FROM secretenv.decrypted_secrets});
	is($out, join(',', map { "$_=$value{$_}" } @mine), "$me: decrypted_secrets shows its own secrets only");
	($out, $err) = as_role($me, q{SELECT string_agg(secret_name, ',' ORDER BY secret_name) FROM secretenv.masked_secrets});
	is($out, join(',', @mine), "$me: masked_secrets shows its own secrets only");
	($out, $err) = as_role($me, q{SELECT string_agg(secret_name || '=' || secretenv.secret_decrypt(encrypted_value, wrapped_dek, kek_version, secret_id, secret_name), ',' ORDER BY secret_name) FROM secretenv.secrets});
	is($out, join(',', map { "$_=$value{$_}" } @mine), "$me: secret_decrypt over secretenv.secrets sees its own rows only");

	($out, $err) = as_role($me, "SELECT secretenv.secret_update('$me/db', 'updated-by-$me-0123456789')");
	is($err, '', "$me: secret_update of its own secret succeeds");
	$value{"$me/db"} = "updated-by-$me-0123456789";
	($out, $err) = as_role($me, "SELECT secretenv.secret_update('$other/db', 'overwritten-by-$me')");
	is(error_lines($err, "$other/db"), $absent, "$me: secret_update of $other/db fails as for an absent secret");
	($out, $err) = as_role($me, "SELECT secretenv.secret_delete('$other/db'); SELECT secretenv.secret_delete('appXa/db')");
	is($out, "f\nf", "$me: secret_delete of hidden secrets returns false");
	($out, $err) = as_role($me, "SELECT secretenv.secret_create('$other/planted', 'planted-by-$me-0123456789')");
	like($err, qr/ERROR:  42501: new row violates row-level security policy "secretenv_rules_insert" for table "secrets"/,
		"$me: secret_create outside its rules fails with 42501");
	($out, $err) = as_role($me, "SELECT secretenv.secret_create('$me/temp', 'temporary-$me-0123456789') IS NOT NULL; SELECT secretenv.secret_get('$me/temp'); SELECT secretenv.secret_delete('$me/temp')");
	is($out, "t\ntemporary-$me-0123456789\nt", "$me: creates, reads and deletes a secret its rules match");
	($out, $err) = as_role($me, "WITH u AS (UPDATE secretenv.secrets SET masked_value = '\"x\"' WHERE secret_name = '$other/db' RETURNING 1) SELECT count(*) FROM u");
	is($out, '0', "$me: a direct UPDATE of $other/db changes no row");
}

# A 'read' rule reads but does not write.
($out, $err) = as_role('app_b', q{SELECT secretenv.secret_update('shared/x', 'overwritten-by-b')});
is(error_lines($err, 'shared/x'), $absent, "app_b: a 'read' rule does not let it update shared/x (P0002)");
($out, $err) = as_role('app_b', q{SELECT secretenv.secret_delete('shared/x')});
is($out, 'f', "app_b: ... nor delete it");
($out, $err) = as_role('app_b', q{SELECT secretenv.secret_create('shared/new', 'new-shared-0123456789')});
like($err, qr/ERROR:  42501: new row violates row-level security policy "secretenv_rules_insert"/,
	"app_b: ... nor create a secret it matches");

# Roles without rules are not restricted by them.
($out, $err) = as_role('plain', q{SELECT count(*) FROM secretenv.decrypted_secrets});
is($out, scalar(@all), 'plain (a reader without rules) still reads every secret');
($out, $err) = as_role('ops', q{SELECT count(*) FROM secretenv.masked_secrets});
is($out, scalar(@all), 'the admin (no rules) still sees every mask');

# The credential cache: on one connection, app_a's second read is a hit,
# and app_b, right after, is not served that entry.
($out, $err) = run_sql($node, 'appdb', q{
SET ROLE app_a;
SELECT secretenv.secret_get('app_a/api');
SELECT secretenv.secret_get('app_a/api');
RESET ROLE;
SELECT (secretenv.cache_stats()->>'hits')::int > 0;
SET ROLE app_b;
SELECT secretenv.secret_get('app_a/api');
}, on_error_stop => 0);
is($out, "$value{'app_a/api'}\n$value{'app_a/api'}\nt", 'cache: app_a reads app_a/api twice, the second time from the cache');
is(error_lines($err, 'app_a/api'), $absent, 'cache: app_b on the same connection gets P0002, not the cached value');

# A revoked rule applies at the next statement of an open session (a
# cached entry included), and the last rule gone, the role is unrestricted.
my $session = $node->background_psql('appdb', on_error_stop => 0);
session_query($session, "\\set VERBOSITY verbose\nSET ROLE app_b");
is(scalar(session_query($session, q{SELECT secretenv.secret_get('shared/x')})), $value{'shared/x'},
	'session of app_b: reads shared/x');
is(scalar(session_query($session, q{SELECT secretenv.secret_get('shared/x')})), $value{'shared/x'},
	'session of app_b: ... again (a cache hit)');
($out, $err) = as_role('ops', q{SELECT secretenv.revoke_secrets('app_b', 'shared/%', 'read'); SELECT secretenv.revoke_secrets('app_b', 'shared/%', 'read')});
is($out, "t\nf", 'revoke_secrets returns true, then false for a rule that does not exist');
($out, $err) = session_query($session, q{SELECT secretenv.secret_get('shared/x')});
is($out . error_lines($err, 'shared/x'), $absent, 'session of app_b: the revoked rule no longer lets it read shared/x');
($out, $err) = as_role('ops', q{SELECT secretenv.grant_secrets('app_b', 'shared/%', 'read')});
is(scalar(session_query($session, q{SELECT secretenv.secret_get('shared/x')})), $value{'shared/x'},
	'session of app_b: granted again, it reads shared/x at its next statement');
$session->quit;

###########################################################################
# Bad input.
my @bad = (
	[ q{SELECT secretenv.grant_secrets(NULL, 'x%', 'read')}, qr/ERROR:  22004: role, name pattern and privilege must not be null/, 'a NULL role' ],
	[ q{SELECT secretenv.grant_secrets('app_a', NULL, 'read')}, qr/ERROR:  22004:/, 'a NULL pattern' ],
	[ q{SELECT secretenv.revoke_secrets('app_a', 'x%', NULL)}, qr/ERROR:  22004:/, 'a NULL privilege (revoke)' ],
	[ q{SELECT secretenv.grant_secrets('app_a', 'x%', 'admin')}, qr/ERROR:  22023: unrecognized secret privilege "admin"/, 'an unknown privilege' ],
	[ q{SELECT secretenv.grant_secrets('app_a', '', 'read')}, qr/ERROR:  22023: name pattern must be between 1 and 1024 bytes/, 'an empty pattern' ],
	[ q{SELECT secretenv.grant_secrets('app_a', 'x\\', 'read')}, qr/ERROR:  22025: LIKE pattern must not end with escape character/, 'a pattern ending in the escape character' ],
	[ q{SELECT secretenv.grant_secrets(current_user::regrole, 'x%', 'read')}, qr/ERROR:  22023: role "\w+" bypasses row-level security/, 'a superuser (the table\'s owner)' ],
	[ q{SELECT secretenv.grant_secrets('bypasser', 'x%', 'read')}, qr/ERROR:  22023: role "bypasser" bypasses row-level security/, 'a role with BYPASSRLS' ],
	[ q{SELECT secretenv.grant_secrets('nosuch', 'x%', 'read')}, qr/ERROR:  42704: role "nosuch" does not exist/, 'an unknown role' ],
	[ q{SELECT secretenv.grant_secrets('424242'::regrole, 'x%', 'read')}, qr/ERROR:  42704: role with OID 424242 does not exist/, 'an unknown role OID' ]);
for my $case (@bad)
{
	my ($sql, $re, $label) = @$case;
	($out, $err) = run_sql($node, 'appdb', $sql);
	like($err, $re, "grant_secrets refuses $label");
}
($out, $err) = as_role('app_a', q{SELECT secretenv.grant_secrets('app_a', '%', 'write')});
like($err, qr/ERROR:  42501: permission denied for function grant_secrets/, 'an application may not grant itself rules');
($out, $err) = as_role('app_a', q{SELECT count(*) FROM secretenv.access_grants});
like($err, qr/ERROR:  42501: permission denied for table access_grants/, '... nor read or change the rules table');
is($node->safe_psql('appdb', 'SELECT count(*) FROM secretenv.access_grants'), '3', 'nothing was granted by the refused calls');

# A pattern that matches nothing: granted with a NOTICE; the role sees nothing.
($out, $err) = run_sql($node, 'appdb', q{SELECT secretenv.grant_secrets('doomed', 'nothing/%', 'write')});
like($err, qr/NOTICE:  00000: name pattern "nothing\/%" matches no stored secret yet/, 'a pattern matching nothing: NOTICE');
($out, $err) = as_role('doomed', q{SELECT count(*) FROM secretenv.decrypted_secrets});
is($out, '0', '... and its role sees no secret');

# A dropped role: its rule stays, inert, shown with role_exists = false,
# left out of dumps, and removed by the next grant_secrets.
$node->safe_psql('appdb', 'REVOKE secretenv_reader, secretenv_writer FROM doomed');
$node->safe_psql('postgres', 'DROP ROLE doomed');
is($node->safe_psql('appdb', q{SELECT name_pattern, role_exists FROM secretenv.access_rules WHERE NOT role_exists}),
	'nothing/%|f', 'DROP ROLE leaves its rule, shown with role_exists = false');
my ($dump, $dump_err) = ('', '');
IPC::Run::run([ 'pg_dump', '-d', $node->connstr('appdb'), '--data-only', '-t', 'secretenv.access_grants' ],
	'>', \$dump, '2>', \$dump_err);
my @dumped = grep { /\t(read|write)\t/ } split /\n/, $dump;
is(scalar(@dumped), 3, 'pg_dump carries the three rules of existing roles, not the dropped role\'s');
$node->safe_psql('appdb', q{SELECT secretenv.grant_secrets('app_b', 'shared/%', 'read')});
is($node->safe_psql('appdb', q{SELECT count(*) FROM secretenv.access_grants}), '3',
	'the next grant_secrets removes the dropped role\'s rule');

###########################################################################
# Hand-written policies beside the rules: both apply.  Once a permissive
# policy of one's own exists, the permissive policies decide as in 1.1
# (secretenv_default closes), and the rules still restrict.
$node->safe_psql('appdb', q{
CREATE POLICY dbs_only ON secretenv.secrets TO app_a USING (secret_name LIKE '%/db');
CREATE POLICY readers ON secretenv.secrets TO plain USING (true);
});
($out, $err) = as_role('app_a', q{SELECT string_agg(secret_name, ',' ORDER BY secret_name) FROM secretenv.decrypted_secrets});
is($out, 'app_a/db', 'hand-written policy and rule: app_a sees what both allow (app_a/db)');
($out, $err) = as_role('app_a', q{SELECT secretenv.secret_get('app_a/api')});
is(error_lines($err, 'app_a/api'), $absent, '... secret_get of app_a/api (rule yes, policy no) fails with P0002');
($out, $err) = as_role('app_b', q{SELECT count(*) FROM secretenv.decrypted_secrets});
is($out, '0', '... app_b, with no permissive policy of its own, sees nothing (as in 1.1)');
($out, $err) = as_role('plain', q{SELECT count(*) FROM secretenv.decrypted_secrets});
is($out, scalar(@all), '... plain, with a policy of its own and no rules, sees every secret');
$node->safe_psql('appdb', q{CREATE POLICY no_api ON secretenv.secrets AS RESTRICTIVE TO plain USING (secret_name NOT LIKE '%/api')});
($out, $err) = as_role('plain', q{SELECT string_agg(secret_name, ',' ORDER BY secret_name) FROM secretenv.decrypted_secrets});
is($out, join(',', grep { !/api/ } @all), '... and a restrictive policy of one\'s own applies on top');
$node->safe_psql('appdb', q{DROP POLICY dbs_only ON secretenv.secrets; DROP POLICY readers ON secretenv.secrets; DROP POLICY no_api ON secretenv.secrets});
($out, $err) = as_role('app_b', q{SELECT string_agg(secret_name, ',' ORDER BY secret_name) FROM secretenv.decrypted_secrets});
is($out, 'app_b/db,shared/x', 'hand-written policies dropped: app_b sees its rules\' secrets again');

###########################################################################
# Isolation lost: every read of a role subject to row-level security refuses.
my $hint = q{HINT:  A superuser restores enforcement with: SELECT secretenv.enforce_access_rules();};
$session = $node->background_psql('appdb', on_error_stop => 0);
session_query($session, "\\set VERBOSITY verbose\nSET ROLE app_a");
is(scalar(session_query($session, q{SELECT secretenv.secret_get('app_a/api')})), $value{'app_a/api'},
	'session of app_a: reads app_a/api (now cached)');
for my $loss (
	[ 'row-level security disabled', 'ALTER TABLE secretenv.secrets DISABLE ROW LEVEL SECURITY',
		'row-level security is disabled on secretenv.secrets' ],
	[ 'the select rule policy dropped', 'DROP POLICY secretenv_rules_select ON secretenv.secrets',
		'the policy "secretenv_rules_select" that enforces them on secretenv.secrets is missing or was changed' ],
	[ 'the update rule policy widened', 'ALTER POLICY secretenv_rules_update ON secretenv.secrets USING (true)',
		'the policy "secretenv_rules_update" that enforces them on secretenv.secrets is missing or was changed' ],
	[ 'the insert rule policy given to one role', 'ALTER POLICY secretenv_rules_insert ON secretenv.secrets TO app_b',
		'the policy "secretenv_rules_insert" that enforces them on secretenv.secrets is missing or was changed' ])
{
	my ($label, $ddl, $detail) = @$loss;
	$node->safe_psql('appdb', $ddl);
	my $refusal = "ERROR:  55S01: access rules of secretenv are not enforced\nDETAIL:  secretenv.access_grants holds access rules, but $detail.\n$hint";
	($out, $err) = session_query($session, q{SELECT secretenv.secret_get('app_a/api')});
	is($out . error_lines($err, 'x'), $refusal, "$label: secret_get of a cached secret refuses (55S01)");
	for my $read (
		[ 'secret_get', q{SELECT secretenv.secret_get('app_b/db')} ],
		[ 'decrypted_secrets', q{SELECT count(*) FROM secretenv.decrypted_secrets} ],
		[ 'masked_secrets', q{SELECT count(*) FROM secretenv.masked_secrets} ],
		[ 'secret_update', q{SELECT secretenv.secret_update('app_b/db', 'overwritten-0123456789')} ],
		[ 'secret_decrypt of an application\'s envelope',
			q{SELECT secretenv.secret_decrypt(secretenv.secret_encrypt('app-value-0123456789', 'id-1', 'n'), 'id-1', 'n')} ])
	{
		my ($path, $sql) = @$read;
		($out, $err) = as_role('app_a', $sql);
		is($out . error_lines($err, 'x'), $refusal, "$label: $path as app_a refuses (55S01)");
	}
	($out, $err) = as_role('plain', q{SELECT count(*) FROM secretenv.decrypted_secrets});
	like($err, qr/ERROR:  55S01:/, "$label: a reader without rules refuses too");
	is($node->safe_psql('appdb', q{SELECT count(*) FROM secretenv.decrypted_secrets}), scalar(@all),
		"$label: a superuser still reads");
	$node->safe_psql('appdb', 'SELECT secretenv.enforce_access_rules()');
	($out, $err) = session_query($session, q{SELECT secretenv.secret_get('app_a/api'); SELECT secretenv.secret_get('app_b/db')});
	is($out . error_lines($err, 'app_b/db'), "$value{'app_a/api'}$absent",
		"$label: after enforce_access_rules() the session reads its own secret and not app_b's");
}
$session->quit;
is($node->safe_psql('appdb', q{SELECT secret_name FROM secretenv.decrypted_secrets WHERE value LIKE 'overwritten%'}), '',
	'no refused write changed anything');

###########################################################################
# Backup and restore, the runbook of docs/runbooks/backup-restore.md literally.
my $backup = PostgreSQL::Test::Utils::tempdir;
$node->command_ok([ 'pg_dumpall', '--roles-only', '-d', $node->connstr('postgres'), '-f', "$backup/roles.sql" ],
	'backup: pg_dumpall --roles-only');
$node->command_ok([ 'pg_dump', '-Fc', '-d', $node->connstr('appdb'), '-f', "$backup/appdb.dump" ],
	'backup: pg_dump -Fc');
my $script = '';
IPC::Run::run([ 'pg_restore', '-f', '-', "$backup/appdb.dump" ], '>', \$script) or die 'pg_restore -f - failed';
like($script, qr/COPY secretenv\.access_grants /, 'the dump carries the access rules as data');
unlike($script, qr/CREATE POLICY|ROW LEVEL SECURITY/, '... and no policy nor RLS switch: CREATE EXTENSION makes them');

my $new = new_secretenv_node('rules_restored', conf => "include '$keyfile'\n");
$new->start;
IPC::Run::run([ 'psql', '-X', '-d', $new->connstr('postgres'), '-f', "$backup/roles.sql" ], '>', \$out, '2>', \$err);
$new->command_ok([ 'createdb', '-h', $new->host, '-p', $new->port, '-E', 'UTF8', 'appdb' ], 'restore: createdb');
$new->command_ok([ 'pg_restore', '--exit-on-error', '-d', $new->connstr('appdb'), "$backup/appdb.dump" ],
	'restore: pg_restore --exit-on-error');
# The first connections after the restore, with nothing run in between.
for my $me ('app_a', 'app_b')
{
	($out, $err) = run_sql($new, 'appdb', q{SELECT string_agg(secret_name || '=' || value, ',' ORDER BY secret_name) FROM secretenv.decrypted_secrets},
		extra_params => [ '-U', $me, '-v', 'VERBOSITY=verbose' ]);
	is($out, join(',', map { "$_=$value{$_}" } @{ $own{$me} }), "restored: $me sees only its own secrets at once");
	my $other = $me eq 'app_a' ? 'app_b/db' : 'app_a/db';
	($out, $err) = run_sql($new, 'appdb', "SELECT secretenv.secret_get('$other')", extra_params => [ '-U', $me, '-v', 'VERBOSITY=verbose' ]);
	is(error_lines($err, $other), $absent, "restored: $me gets P0002 for $other");
}
($out, $err) = run_sql($new, 'appdb', q{SELECT count(*) FROM secretenv.decrypted_secrets}, extra_params => [ '-U', 'plain', '-v', 'VERBOSITY=verbose' ]);
is($out, scalar(@all), 'restored: plain (no rules) reads every secret, as before');
is($new->safe_psql('appdb', q{SELECT string_agg(role || ' ' || name_pattern || ' ' || privilege, ',' ORDER BY role::text, name_pattern) FROM secretenv.access_rules}),
	'app_a app\_a/% write,app_b app\_b/% write,app_b shared/% read', 'restored: the same rules');

# A rule on a group applies to the members that inherit its privileges,
# and a role whose last rule is revoked is unrestricted again.
$new->safe_psql('appdb', q{
CREATE ROLE team NOLOGIN;
CREATE ROLE app_c LOGIN IN ROLE team, secretenv_reader;
SELECT secretenv.grant_secrets('team', 'shared/%', 'read');
SELECT secretenv.revoke_secrets('app_a', 'app\_a/%', 'write');
});
($out, $err) = run_sql($new, 'appdb', q{SELECT string_agg(secret_name, ',' ORDER BY secret_name) FROM secretenv.decrypted_secrets},
	extra_params => [ '-U', 'app_c' ]);
is($out, 'shared/x', 'a rule on a group restricts a member that inherits it');
($out, $err) = run_sql($new, 'appdb', q{SELECT count(*) FROM secretenv.decrypted_secrets}, extra_params => [ '-U', 'app_a' ]);
is($out, scalar(@all), 'app_a, its last rule revoked, reads every secret again');
$new->stop;

# With no rule at all, row-level security disabled is 1.1's access.
$node->safe_psql('postgres', 'CREATE DATABASE norules');
$node->safe_psql('norules', q{
CREATE EXTENSION secretenv;
SELECT secretenv.secret_create('x/one', 'value-x-one-0123456789');
ALTER TABLE secretenv.secrets DISABLE ROW LEVEL SECURITY;
});
($out, $err) = as_role('app_a', q{SELECT secretenv.secret_get('x/one'); SELECT count(*) FROM secretenv.masked_secrets}, 'norules');
is($out . $err, "value-x-one-0123456789\n1", 'no rules, row-level security disabled: nothing refuses');

###########################################################################
# 1.1 -> 1.2 with hand-written policies (SecretenvTest's two tenants).
$node->safe_psql('postgres', 'CREATE DATABASE u11; CREATE DATABASE u11off');
$node->safe_psql('u11', q{
CREATE EXTENSION secretenv VERSION '1.1';
SELECT secretenv.secret_create('app_a/db', 'u11-app-a-db-0123456789');
SELECT secretenv.secret_create('app_b/db', 'u11-app-b-db-0123456789');
ALTER TABLE secretenv.secrets ENABLE ROW LEVEL SECURITY;
CREATE POLICY app_a ON secretenv.secrets TO app_a USING (starts_with(secret_name, 'app_a/'));
CREATE POLICY app_b ON secretenv.secrets TO app_b USING (starts_with(secret_name, 'app_b/'));
ALTER EXTENSION secretenv UPDATE TO '1.2';
});
for my $me ('app_a', 'app_b')
{
	($out, $err) = as_role($me, q{SELECT string_agg(secret_name, ',' ORDER BY secret_name) FROM secretenv.decrypted_secrets}, 'u11');
	is($out, "$me/db", "upgraded 1.1 with hand-written policies: $me sees its own secret only");
	my $other = $me eq 'app_a' ? 'app_b/db' : 'app_a/db';
	($out, $err) = as_role($me, "SELECT secretenv.secret_get('$other')", 'u11');
	is(error_lines($err, $other), $absent, "upgraded: $me gets P0002 for $other");
}
($out, $err) = as_role('plain', q{SELECT count(*) FROM secretenv.decrypted_secrets}, 'u11');
is($out, '0', 'upgraded: a reader without a policy sees nothing, as in 1.1');
$node->safe_psql('u11', q{SELECT secretenv.grant_secrets('app_a', 'nothing/%', 'read')});
($out, $err) = as_role('app_a', q{SELECT count(*) FROM secretenv.decrypted_secrets}, 'u11');
is($out, '0', 'upgraded: a rule restricts app_a further, beside its policy');

$node->safe_psql('u11off', q{
CREATE EXTENSION secretenv VERSION '1.1';
CREATE POLICY app_a ON secretenv.secrets TO app_a USING (starts_with(secret_name, 'app_a/'));
});
($out, $err) = run_sql($node, 'u11off', q{ALTER EXTENSION secretenv UPDATE TO '1.2'});
like($err, qr/ERROR:  55000: cannot update secretenv: secretenv.secrets has row-level security policies but row-level security is disabled/,
	'1.1 with policies but row-level security disabled: the update refuses (55000)');
is($node->safe_psql('u11off', q{SELECT extversion FROM pg_extension WHERE extname = 'secretenv'}), '1.1',
	'... and the database stays on 1.1');

unlike(slurp_file($node->logfile), qr/terminated by signal/, 'no crash');
$node->stop;
done_testing();
