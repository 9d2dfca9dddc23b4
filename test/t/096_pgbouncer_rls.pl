
# Copyright (c) secretenv contributors
#
# Row-level security through a real PgBouncer in transaction pooling (issue
# 16).  PgBouncer keeps one pool per (database, server user), so two login
# users share a server connection only when the [databases] entry names
# the server user: then PgBouncer logs every client in as that user and
# the application sets its role in each transaction with SET LOCAL ROLE,
# as multi-tenant applications behind a pooler do.  That is the case where
# secretenv sees two roles on one backend, one transaction after the other:
#
#   shared   user=pool_user, pool size 1: clients app_a and app_b (their
#            PgBouncer logins) run their transactions on the same backend
#            (checked by its pid), each after SET LOCAL ROLE app_a / app_b;
#            the credential cache is on (the default);
#   nocache  the same through pool_nocache, whose sessions run with
#            secretenv.cache_max_entries = 0 (ALTER ROLE ... SET): the table
#            paths alone;
#   direct   no server user: each login gets server connections of its own
#            (different pids), and its own rights there.
#
# In each, app_b never gets app_a's secret (P0002, as for an absent one),
# right after app_a read it on the same backend, and app_a still reads it
# afterwards, with the credential cache on and off; the access audit records
# each read with the pool's login as session_user and the role as current_user.  PgBouncer runs as this test's user on a free port,
# bounded by the test's timeout, and is stopped at the end.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use IPC::Run;
use Time::HiRes qw(usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SecretenvTest;
use Test::More;

my $pgbouncer = '/usr/sbin/pgbouncer';
plan skip_all => "PgBouncer is not installed ($pgbouncer; Debian package pgbouncer)"
  unless -x $pgbouncer;

my $node = new_secretenv_node('bouncer',
	conf => "secretenv.kek_passphrase = 'pgbouncer-rls-test-passphrase-0123456789'\n");
$node->start;

my %value = (
	'app_a/db' => 'value-of-app-a-db-0123456789',
	'app_b/db' => 'value-of-app-b-db-0123456789');
$node->safe_psql(
	'postgres', qq{
CREATE EXTENSION secretenv;
SELECT secretenv.secret_create('app_a/db', '$value{'app_a/db'}');
SELECT secretenv.secret_create('app_b/db', '$value{'app_b/db'}');
} . two_tenants_sql() . q{
-- The pool's server users hold nothing themselves (NOINHERIT): every
-- transaction takes its application's role with SET LOCAL ROLE.
CREATE ROLE pool_user LOGIN NOINHERIT IN ROLE app_a, app_b;
CREATE ROLE pool_nocache LOGIN NOINHERIT IN ROLE app_a, app_b;
ALTER ROLE pool_nocache SET secretenv.cache_max_entries = 0;
-- For this test only: each application may see its backend's cache counters.
GRANT EXECUTE ON FUNCTION secretenv.cache_stats() TO app_a, app_b;
});

# PgBouncer: trust authentication of its own clients (the logins listed in
# the auth file), the server over the node's Unix socket.
my $dir = PostgreSQL::Test::Utils::tempdir;
my $port = PostgreSQL::Test::Cluster::get_free_port();
my ($sock, $pgport) = ($node->host, $node->port);
open(my $ul, '>', "$dir/userlist.txt") or die "userlist.txt: $!";
print $ul qq{"app_a" ""\n"app_b" ""\n};
close($ul);
open(my $ini, '>', "$dir/pgbouncer.ini") or die "pgbouncer.ini: $!";
print $ini <<"INI";
[databases]
shared = host=$sock port=$pgport dbname=postgres user=pool_user pool_size=1
nocache = host=$sock port=$pgport dbname=postgres user=pool_nocache pool_size=1
direct = host=$sock port=$pgport dbname=postgres pool_size=1

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
max_client_conn = 20
default_pool_size = 1
server_reset_query =
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
INI
close($ini);

my ($bouncer_out, $bouncer_err) = ('', '');
my $bouncer;
END { $bouncer->kill_kill if defined $bouncer && $bouncer->pumpable; }
$bouncer = IPC::Run::start([ $pgbouncer, "$dir/pgbouncer.ini" ],
	'>', \$bouncer_out, '2>', \$bouncer_err,
	IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));

# Run a psql script through PgBouncer as a login; returns (stdout, stderr).
sub through_bouncer
{
	my ($login, $db, $sql) = @_;
	return run_sql($node, 'postgres', $sql, on_error_stop => 0,
		connstr => "host=127.0.0.1 port=$port dbname=$db user=$login");
}

my ($out, $err);
my $up = 0;
for (1 .. 10 * $PostgreSQL::Test::Utils::timeout_default)
{
	($out, $err) = through_bouncer('app_a', 'shared', 'SELECT 1');
	if ($out eq '1') { $up = 1; last; }
	usleep(100_000);
}
ok($up, 'PgBouncer accepts connections') or diag($bouncer_err . slurp_file("$dir/pgbouncer.log"));

my $absent = qq{ERROR:  P0002: secret "<name>" does not exist};

for my $case ([ 'shared', 1, 't' ], [ 'nocache', 1, 'f' ], [ 'direct', 0, 't' ])
{
	my ($db, $same_backend, $hit) = @$case;
	my %set_role = map { $_ => ($same_backend ? "SET LOCAL ROLE $_;" : '') } ('app_a', 'app_b');

	# app_a reads its secret twice (the second read is a cache hit when the
	# cache is on).
	my $a_sql = qq{
BEGIN;
$set_role{app_a}
SELECT pg_backend_pid();
SELECT current_user;
SELECT secretenv.secret_get('app_a/db');
SELECT secretenv.secret_get('app_a/db');
SELECT (secretenv.cache_stats()->>'hits')::int > 0;
COMMIT;
};
	($out, $err) = through_bouncer('app_a', $db, $a_sql);
	my ($a_pid, @a_rows) = split /\n/, $out;
	is(join(' ', @a_rows), "app_a $value{'app_a/db'} $value{'app_a/db'} $hit",
		"$db: app_a reads app_a/db as app_a" . ($hit eq 't' ? ', the second time from the cache' : ', uncached'));

	# Then app_b, through the same pool: its own secret, then app_a's.
	my $b_sql = qq{
BEGIN;
$set_role{app_b}
SELECT pg_backend_pid();
SELECT current_user;
SELECT secretenv.secret_get('app_b/db');
COMMIT;
BEGIN;
$set_role{app_b}
SELECT secretenv.secret_get('app_a/db');
COMMIT;
};
	($out, $err) = through_bouncer('app_b', $db, $b_sql);
	my ($b_pid, $b_user, $b_own, @b_rest) = split /\n/, $out;
	is("$b_user $b_own", "app_b $value{'app_b/db'}", "$db: app_b reads app_b/db as app_b");
	if ($same_backend)
	{
		is($b_pid, $a_pid, "$db: app_b's transactions ran on app_a's server connection");
	}
	else
	{
		isnt($b_pid, $a_pid, "$db: app_b has a server connection of its own");
	}
	is(scalar(@b_rest), 0, "$db: app_b gets no value for app_a/db");
	is(error_lines($err, 'app_a/db'), $absent, "$db: ... but P0002 \"does not exist\"");

	# app_a, on the same server connection again, still reads its secret.
	($out, $err) = through_bouncer('app_a', $db, $a_sql);
	my ($a_pid2, @a_rows2) = split /\n/, $out;
	is($a_pid2, $a_pid, "$db: app_a is back on the same server connection");
	is(join(' ', @a_rows2[ 0 .. 2 ]), "app_a $value{'app_a/db'} $value{'app_a/db'}",
		"$db: app_a still reads app_a/db");
}

# The access audit names the pool's login (session_user) and the role each
# transaction set (current_user), for every read, hit, miss or hidden.
$node->poll_query_until('postgres',
	q{SELECT count(*) = 18 FROM secretenv.audit_log WHERE operation = 'read'})
  or die 'timed out waiting for the audit records';
is($node->safe_psql('postgres', q{
	SELECT string_agg(concat_ws(' ', session_user_name, current_user_name, secret_name, outcome, n), ',')
	FROM (SELECT session_user_name, current_user_name, secret_name, outcome, count(*) n
		  FROM secretenv.audit_log WHERE operation = 'read'
		  GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4) g}),
	'app_a app_a app_a/db ok 4,app_b app_b app_a/db not_found 1,app_b app_b app_b/db ok 1,'
	  . 'pool_nocache app_a app_a/db ok 4,pool_nocache app_b app_a/db not_found 1,pool_nocache app_b app_b/db ok 1,'
	  . 'pool_user app_a app_a/db ok 4,pool_user app_b app_a/db not_found 1,pool_user app_b app_b/db ok 1',
	'audit: every read through PgBouncer is recorded with the login and the role SET LOCAL ROLE took');

$bouncer->signal('TERM');
$bouncer->finish;
ok(!-e "$dir/pgbouncer.pid", 'PgBouncer stopped');

$node->stop;
done_testing();
