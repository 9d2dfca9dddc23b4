
# Copyright (c) secretenv contributors
#
# Role and schema squatting (DESIGN §7a).  The roles secretenv_reader,
# secretenv_writer and secretenv_admin are cluster-wide and schema secretenv
# may exist before CREATE EXTENSION; someone may have prepared either.
#  - CREATE EXTENSION secretenv refuses with 42501, naming the role or the
#    schema and what is wrong with it, and changes nothing (no extension, no
#    schema object, no new role), when a secretenv role exists with LOGIN,
#    SUPERUSER, CREATEROLE, CREATEDB, REPLICATION or BYPASSRLS (one at a
#    time), or is a member of another role (here pg_execute_server_program,
#    which every member of the secretenv role would inherit), or when schema
#    secretenv is owned by a role that is not a superuser, grants CREATE to
#    another role or PUBLIC, or holds an object of another role.
#  - Clean pre-existing roles (members of each other, with login members)
#    are adopted, in a first and a second database; a login member uses
#    secretenv in both.  A pre-existing schema owned by the installer or by
#    another superuser is adopted.
#  - ALTER EXTENSION secretenv UPDATE from 1.0 refuses the same roles, and a
#    1.0 install inside a schema owned by another role, and changes nothing.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;

my $node = new_secretenv_node('squatting',
	conf => "secretenv.kek_passphrase = 'squatting-test-passphrase-0123456789abcdef'\n");
$node->start;
for my $db (qw(squat first second legacy legacy2))
{
	$node->safe_psql('postgres', "CREATE DATABASE $db");
}
my $installer = $node->safe_psql('postgres', 'SELECT current_user');

# Everything a refused install or upgrade could have left behind: the
# extension, schema secretenv (owner, privileges) and its objects, the
# secretenv roles, their attributes and memberships.
my $state_sql = q{
SELECT concat_ws(E'\n',
	'extension: ' || coalesce((SELECT extversion FROM pg_extension WHERE extname = 'secretenv'), 'none'),
	'schema: ' || coalesce((SELECT pg_get_userbyid(nspowner) || ' ' || coalesce(nspacl::text, 'default')
							FROM pg_namespace WHERE nspname = 'secretenv'), 'none'),
	'objects: ' || (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
					WHERE n.nspname = 'secretenv')
				|| ' ' || (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
						   WHERE n.nspname = 'secretenv')
				|| ' ' || (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
						   WHERE n.nspname = 'secretenv'),
	'roles: ' || coalesce((SELECT string_agg(concat_ws(' ', rolname, rolcanlogin, rolsuper, rolcreaterole,
											   rolcreatedb, rolreplication, rolbypassrls), ', ' ORDER BY rolname)
						   FROM pg_roles WHERE rolname LIKE 'secretenv%'), 'none'),
	'memberships: ' || coalesce((SELECT string_agg(pg_get_userbyid(member) || ' in ' || pg_get_userbyid(roleid), ', '
												   ORDER BY 1)
								 FROM pg_auth_members
								 WHERE pg_get_userbyid(member) LIKE 'secretenv%'
								    OR pg_get_userbyid(roleid) LIKE 'secretenv%'), 'none'))};

# Run $sql, expect it refused with 42501 and $message; the state of $db
# must be what it was before.
sub refused
{
	my ($db, $sql, $message, $detail, $hint, $what) = @_;
	my $before = $node->safe_psql($db, $state_sql);
	my ($out, $err) = run_sql($node, $db, $sql);
	like($err, qr/ERROR:  42501: \Q$message\E\n/, "$what: refused with 42501");
	like($err, qr/DETAIL:  [^\n]*$detail/, "$what: the detail says why");
	like($err, qr/HINT:  [^\n]*$hint/, "$what: the hint says what to do");
	is($node->safe_psql($db, $state_sql), $before, "$what: nothing changed");
	return;
}

###########################################################################
# A squatted role, one attribute at a time, each on one of the three names.
my @cases = (
	[ 'secretenv_reader', 'LOGIN' ],
	[ 'secretenv_writer', 'SUPERUSER' ],
	[ 'secretenv_admin',  'CREATEROLE' ],
	[ 'secretenv_reader', 'CREATEDB' ],
	[ 'secretenv_writer', 'REPLICATION' ],
	[ 'secretenv_admin',  'BYPASSRLS' ]);
for my $case (@cases)
{
	my ($role, $attr) = @$case;
	$node->safe_psql('postgres', "CREATE ROLE $role $attr");
	refused('squat', 'CREATE EXTENSION secretenv',
		qq{role "$role" cannot be used by secretenv},
		qr/The role has $attr; secretenv's roles must be group roles without login and without cluster-wide attributes\./,
		qr/Drop the role, or remove the attributes with ALTER ROLE $role NO$attr, and retry\./,
		"$role with $attr");
	$node->safe_psql('postgres', "DROP ROLE $role");
}
is($node->safe_psql('squat', $state_sql),
	"extension: none\nschema: none\nobjects: 0 0 0\nroles: none\nmemberships: none",
	'after the refusals: no extension, no schema, no secretenv role');

# Several attributes at once are all named.
$node->safe_psql('postgres', 'CREATE ROLE secretenv_admin LOGIN CREATEDB BYPASSRLS');
refused('squat', 'CREATE EXTENSION secretenv',
	'role "secretenv_admin" cannot be used by secretenv',
	qr/The role has LOGIN CREATEDB BYPASSRLS;/,
	qr/ALTER ROLE secretenv_admin NOLOGIN NOCREATEDB NOBYPASSRLS,/,
	'secretenv_admin with LOGIN, CREATEDB and BYPASSRLS');
$node->safe_psql('postgres', 'DROP ROLE secretenv_admin');

# A clean role that is a member of another role: everyone later granted the
# secretenv role would inherit it (here: running programs on the server).
$node->safe_psql('postgres',
	'CREATE ROLE secretenv_reader NOLOGIN; GRANT pg_execute_server_program TO secretenv_reader');
refused('squat', 'CREATE EXTENSION secretenv',
	'role "secretenv_reader" cannot be used by secretenv',
	qr/The role is a member of role "pg_execute_server_program", whose privileges every member of "secretenv_reader" would inherit\./,
	qr/Revoke the membership with REVOKE pg_execute_server_program FROM secretenv_reader, and retry\./,
	'secretenv_reader member of pg_execute_server_program');
$node->safe_psql('postgres', 'DROP ROLE secretenv_reader');

###########################################################################
# A squatted schema.
$node->safe_psql('postgres', 'CREATE ROLE squatter NOLOGIN');
$node->safe_psql('squat', 'CREATE SCHEMA secretenv AUTHORIZATION squatter');
refused('squat', 'CREATE EXTENSION secretenv',
	'schema "secretenv" cannot be used by secretenv',
	qr/The schema already exists and is owned by role "squatter", which is not a superuser\./,
	qr/Drop the schema, or give it to the installing role with ALTER SCHEMA secretenv OWNER TO $installer, and retry\./,
	'schema secretenv owned by another role');
$node->safe_psql('squat', "ALTER SCHEMA secretenv OWNER TO $installer; GRANT CREATE ON SCHEMA secretenv TO squatter");
refused('squat', 'CREATE EXTENSION secretenv',
	'schema "secretenv" cannot be used by secretenv',
	qr/Role squatter holds CREATE on the schema, so it could place objects beside secretenv's\./,
	qr/Revoke it with REVOKE CREATE ON SCHEMA secretenv FROM squatter, and retry\./,
	'schema secretenv owned by the installer, CREATE granted to another role');
$node->safe_psql('squat', 'REVOKE CREATE ON SCHEMA secretenv FROM squatter; GRANT CREATE ON SCHEMA secretenv TO PUBLIC');
refused('squat', 'CREATE EXTENSION secretenv',
	'schema "secretenv" cannot be used by secretenv',
	qr/Role PUBLIC holds CREATE on the schema/,
	qr/REVOKE CREATE ON SCHEMA secretenv FROM PUBLIC/,
	'schema secretenv owned by the installer, CREATE granted to PUBLIC');
is($node->safe_psql('squat', $state_sql),
	"extension: none\nschema: $installer {$installer=UC/$installer,=C/$installer}\nobjects: 0 0 0\nroles: none\nmemberships: none",
	'after the schema refusals: the schema as it was, empty, and no secretenv role');

# Objects another role created while it held CREATE, since revoked.
$node->safe_psql(
	'squat', q{
REVOKE CREATE ON SCHEMA secretenv FROM PUBLIC;
GRANT CREATE, USAGE ON SCHEMA secretenv TO squatter;
SET ROLE squatter;
CREATE FUNCTION secretenv.secret_get(varchar) RETURNS text LANGUAGE sql AS $$ SELECT 'squatted' $$;
RESET ROLE;
REVOKE CREATE, USAGE ON SCHEMA secretenv FROM squatter;
});
refused('squat', 'CREATE EXTENSION secretenv',
	'schema "secretenv" cannot be used by secretenv',
	qr/The schema holds function secretenv\.secret_get\(character varying\), owned by role "squatter"\./,
	qr/Drop the objects of roles that are not superusers from the schema, and retry\./,
	'schema secretenv holding a function of another role');
$node->safe_psql('squat', 'DROP FUNCTION secretenv.secret_get(varchar)');

# A schema of the installer that nobody else may create in is adopted.
my ($out, $err) = run_sql($node, 'squat', 'CREATE EXTENSION secretenv');
is($err, '', 'a pre-existing schema owned by the installer is adopted');
$node->safe_psql('squat', 'DROP EXTENSION secretenv; DROP SCHEMA secretenv');

# So is one of another superuser, as pg_dump recreates it before CREATE
# EXTENSION when someone else than its owner restores the dump.
$node->safe_psql('postgres', 'CREATE ROLE other_superuser SUPERUSER NOLOGIN');
$node->safe_psql('squat', 'CREATE SCHEMA secretenv AUTHORIZATION other_superuser');
($out, $err) = run_sql($node, 'squat', 'CREATE EXTENSION secretenv');
is($err, '', 'a pre-existing schema owned by another superuser is adopted');
$node->safe_psql('squat', 'DROP EXTENSION secretenv; DROP SCHEMA secretenv');

###########################################################################
# Clean pre-existing roles are adopted, in every database: the roles are
# cluster-wide, so a member uses secretenv in each database that has it.
$node->safe_psql(
	'postgres', q{
DROP ROLE secretenv_reader, secretenv_writer, secretenv_admin;
CREATE ROLE secretenv_reader NOLOGIN;
CREATE ROLE secretenv_writer NOLOGIN;
CREATE ROLE secretenv_admin NOLOGIN IN ROLE secretenv_reader;
CREATE ROLE app LOGIN IN ROLE secretenv_reader, secretenv_writer;
});
my $roles_before = $node->safe_psql('postgres', $state_sql);
for my $db (qw(first second))
{
	($out, $err) = run_sql($node, $db, 'CREATE EXTENSION secretenv');
	is($err, '', "clean pre-existing roles: CREATE EXTENSION succeeds in database $db");
	is($node->safe_psql($db, q{SELECT extversion FROM pg_extension WHERE extname = 'secretenv'}),
		'1.2', "database $db has secretenv 1.2");
}
($out, $err) = run_sql($node, 'postgres', $state_sql);
is($out, $roles_before, 'the adopted roles kept their attributes and memberships');
for my $db (qw(first second))
{
	($out, $err) = run_sql($node, $db,
		qq{SET ROLE app; SELECT secretenv.secret_create('in-$db', 'value-in-$db') IS NOT NULL; SELECT secretenv.secret_get('in-$db')});
	is($out . $err, "t\nvalue-in-$db", "a member of the roles writes and reads a secret in database $db");
}

###########################################################################
# The upgrade from 1.0 refuses the same roles, and a squatted schema.
$node->safe_psql('legacy', q{CREATE EXTENSION secretenv VERSION '1.0'});
$node->safe_psql('postgres', 'ALTER ROLE secretenv_writer CREATEDB');
refused('legacy', 'ALTER EXTENSION secretenv UPDATE',
	'role "secretenv_writer" cannot be used by secretenv',
	qr/The role has CREATEDB;/,
	qr/ALTER ROLE secretenv_writer NOCREATEDB,/,
	'upgrade from 1.0 with secretenv_writer CREATEDB');
$node->safe_psql('postgres', 'ALTER ROLE secretenv_writer NOCREATEDB');
($out, $err) = run_sql($node, 'legacy', 'ALTER EXTENSION secretenv UPDATE');
is($node->safe_psql('legacy', q{SELECT extversion FROM pg_extension WHERE extname = 'secretenv'}),
	'1.2', 'with the attribute removed the upgrade goes through');

# 1.0 did not check the schema: a 1.0 install inside a schema owned by
# another role is not carried to 1.1.
$node->safe_psql('legacy2', 'CREATE SCHEMA secretenv AUTHORIZATION squatter');
$node->safe_psql('legacy2', q{CREATE EXTENSION secretenv VERSION '1.0'});
refused('legacy2', 'ALTER EXTENSION secretenv UPDATE',
	'schema "secretenv" cannot be used by secretenv',
	qr/The schema already exists and is owned by role "squatter", which is not a superuser\./,
	qr/ALTER SCHEMA secretenv OWNER TO $installer/,
	'upgrade from 1.0 of an install in a schema owned by another role');
is($node->safe_psql('legacy2', q{SELECT extversion FROM pg_extension WHERE extname = 'secretenv'}),
	'1.0', 'that database stays on 1.0');

$node->stop;
done_testing();
