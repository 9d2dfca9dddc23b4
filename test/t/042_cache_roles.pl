# A cached secret is served only to a caller whose own read of the table
# would return that row (DESIGN 7b, 7f): table privileges and row-level
# security, on one connection that switches roles (SET ROLE, SET SESSION
# AUTHORIZATION), and after the policy or a role membership changes.
#
# Policies here give each application role the secrets whose names start
# with its role name, and members of team_x the 'x/' secrets.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;

my $node = new_secretenv_node('roles', conf => q{
secretenv.kek_passphrase = 'roles-test-passphrase-0123456789-abcdefgh'
autovacuum = off
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION secretenv;
	CREATE ROLE app_a LOGIN IN ROLE secretenv_reader;
	CREATE ROLE app_b LOGIN IN ROLE secretenv_reader;
	CREATE ROLE app_c LOGIN;
	-- app_c may call secret_get but has no privilege on the table.
	GRANT USAGE ON SCHEMA secretenv TO app_c;
	GRANT EXECUTE ON FUNCTION secretenv.secret_get(text) TO app_c;
	CREATE ROLE team_x;
	GRANT team_x TO app_a;
	SELECT secretenv.secret_create('app_a/one', 'value-a-one');
	SELECT secretenv.secret_create('app_b/one', 'value-b-one');
	SELECT secretenv.secret_create('x/shared', 'value-x-shared');
	ALTER TABLE secretenv.secrets ENABLE ROW LEVEL SECURITY;
	CREATE POLICY per_app ON secretenv.secrets FOR SELECT
		USING (secret_name LIKE current_user || '/%');
	CREATE POLICY team_x ON secretenv.secrets FOR SELECT
		USING (secret_name LIKE 'x/%' AND pg_has_role(current_user, 'team_x', 'member'));
	-- This backend's cache hits, for any role (cache_stats is for admins).
	CREATE FUNCTION public.t_hits() RETURNS bigint LANGUAGE sql SECURITY DEFINER
		SET search_path = pg_catalog, pg_temp
		AS $$ SELECT (secretenv.cache_stats()->>'hits')::bigint $$;
});

my $s = $node->background_psql('postgres', on_error_stop => 0);

# Run a get; return its value, or the SQLSTATE of its error.
sub get
{
	my ($name) = @_;
	my ($out) = $s->query(qq{
		DO \$\$ BEGIN
			RAISE NOTICE 'got %', secretenv.secret_get('$name');
		EXCEPTION WHEN OTHERS THEN
			RAISE NOTICE 'sqlstate %', SQLSTATE;
		END \$\$});
	my $err = $s->{stderr};
	$s->{stderr} = '';
	return $1 if $err =~ /NOTICE:  got (.*)/;
	return "ERR:$1" if $err =~ /NOTICE:  sqlstate (\w+)/;
	return "?$err";
}

sub hits
{
	return $s->query_safe(q{SELECT public.t_hits()});
}

$s->query_safe('SET ROLE app_a');
is(get('app_a/one'), 'value-a-one', 'app_a reads its secret');
my $h = hits();
is(get('app_a/one'), 'value-a-one', 'app_a reads it again');
is(hits() - $h, 1, 'from the cache');
is(get('app_b/one'), 'ERR:P0002', 'app_a cannot read app_b\'s secret: "does not exist"');
is(get('x/shared'), 'value-x-shared', 'app_a reads the team_x secret');

# Same connection, another role: app_a's cached entries are not its own.
$s->query_safe('RESET ROLE');
$s->query_safe('SET ROLE app_b');
$h = hits();
is(get('app_a/one'), 'ERR:P0002', 'SET ROLE app_b: app_a\'s cached secret "does not exist"');
is(get('x/shared'), 'ERR:P0002', 'nor the team_x secret app_a cached');
is(hits() - $h, 0, 'no hit served across roles');
is(get('app_b/one'), 'value-b-one', 'app_b reads its own');

# No privilege at all: 42501, cached value or not.
$s->query_safe('RESET ROLE');
$s->query_safe('SET ROLE app_c');
is(get('app_a/one'), 'ERR:42501', 'a role without SELECT gets 42501 for a value cached by another');

# SET SESSION AUTHORIZATION switches the user id the same way.
$s->query_safe('RESET ROLE');
$s->query_safe('SET SESSION AUTHORIZATION app_b');
is(get('app_a/one'), 'ERR:P0002', 'SET SESSION AUTHORIZATION app_b: app_a\'s secret stays hidden');
$s->query_safe('RESET SESSION AUTHORIZATION');
$s->query_safe('SET SESSION AUTHORIZATION app_a');
is(get('app_a/one'), 'value-a-one', 'back as app_a: its secret');

# A membership change made elsewhere reaches app_a's cached team_x secret.
is(get('x/shared'), 'value-x-shared', 'app_a: team_x secret cached');
$h = hits();
is(get('x/shared'), 'value-x-shared', 'and served');
is(hits() - $h, 1, 'from the cache');
$node->safe_psql('postgres', 'REVOKE team_x FROM app_a');
is(get('x/shared'), 'ERR:P0002', 'after REVOKE team_x FROM app_a: "does not exist"');

# A policy change made elsewhere reaches app_a's cached own secret.
is(get('app_a/one'), 'value-a-one', 'app_a: own secret cached');
$node->safe_psql('postgres', q{
	ALTER POLICY per_app ON secretenv.secrets USING (secret_name LIKE 'app_b/%')});
is(get('app_a/one'), 'ERR:P0002', 'after ALTER POLICY: "does not exist"');

# row_security = off for a role the policies apply to: refused, as a SELECT is.
$s->query_safe('SET row_security = off');
is(get('app_b/one'), 'ERR:42501', 'row_security = off: 42501, like a SELECT');
$s->query_safe('RESET row_security');

# RLS disabled again: the direct read path, still keyed per role.
$s->query_safe('RESET SESSION AUTHORIZATION');
$node->safe_psql('postgres', 'ALTER TABLE secretenv.secrets DISABLE ROW LEVEL SECURITY');
$s->query_safe('SET ROLE app_b');
is(get('app_a/one'), 'value-a-one', 'RLS off: app_b reads any secret');
$s->query_safe('RESET ROLE');
$s->query_safe('SET ROLE app_c');
is(get('app_a/one'), 'ERR:42501', 'and app_c still has no privilege');

# Privileges granted and revoked elsewhere take effect at the next call,
# cached value or not.
$node->safe_psql('postgres', 'GRANT SELECT ON secretenv.secrets TO app_c');
is(get('app_a/one'), 'value-a-one', 'after GRANT SELECT: app_c reads');
is(get('app_a/one'), 'value-a-one', 'twice');
$node->safe_psql('postgres', 'REVOKE SELECT ON secretenv.secrets FROM app_c');
is(get('app_a/one'), 'ERR:42501', 'after REVOKE SELECT: 42501');
$node->safe_psql('postgres', 'GRANT SELECT (secret_id, secret_name, encrypted_value, wrapped_dek, kek_version) ON secretenv.secrets TO app_c');
is(get('app_a/one'), 'value-a-one', 'column privileges on the columns read suffice');
$node->safe_psql('postgres', 'REVOKE SELECT (wrapped_dek) ON secretenv.secrets FROM app_c');
is(get('app_a/one'), 'ERR:42501', 'one of them revoked: 42501');
$s->query_safe('RESET ROLE');
$s->query_safe('SET ROLE app_b');
is(get('app_a/one'), 'value-a-one', 'app_b reads');
$node->safe_psql('postgres', 'REVOKE secretenv_reader FROM app_b');
is(get('app_a/one'), 'ERR:42501', 'after REVOKE secretenv_reader FROM app_b: 42501');

$s->quit;
$node->stop;
done_testing();
