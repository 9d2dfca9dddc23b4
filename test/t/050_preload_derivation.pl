
# Copyright (c) secretenv contributors
#
# Preloaded KEK derivation (issue 4).
#
# With shared_preload_libraries = 'secretenv' the postmaster derives the KEKs
# (600 000 PBKDF2 iterations each) at start and on reload, so a new
# connection's first decrypt runs no PBKDF2 of its own; without preload every
# new connection derives on first use.  Counted with key_config()'s
# kek_derivations_in_this_process, never timed (the cost in time is the
# benchmark's business).
#
# Then a reload that changes the passphrase and the version reaches an
# existing backend without a restart, and the postmaster re-derives at reload
# so that connections made afterwards still pay no PBKDF2.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;

my $pass1 = 'preload-test-passphrase-one-6b1f0c2e9d8a7f3e5c4b';
my $pass2 = 'preload-test-passphrase-two-0d9e8f7a6b5c4d3e2f1a-of-another-length';
my $value1 = 'value-under-version-one-8c2d';
my $value2 = 'value-under-version-two-4e7a';

my $n_connections = 5;    # new connections checked per node

# In a new connection: decrypt once, then report how many PBKDF2 derivations
# this backend ran (key_config() counts them per process).  Returns the
# counts of all connections, comma-separated.
sub derivations_per_connection
{
	my ($node, $sql) = @_;
	my @counts;
	for (1 .. $n_connections)
	{
		my ($out, $err);
		$node->psql('postgres',
			"$sql\nSELECT secretenv.key_config()->>'kek_derivations_in_this_process';",
			stdout => \$out, stderr => \$err, on_error_stop => 1);
		my @lines = split /\n/, $out;
		push @counts, $lines[-1];
	}
	return join(',', @counts);
}

sub decrypt_sql
{
	my ($name) = @_;
	return
	  "SELECT secretenv.secret_decrypt(encrypted_value, wrapped_dek, kek_version, secret_id, secret_name) "
	  . "FROM secretenv.secrets WHERE secret_name = '$name';";
}

sub make_node
{
	my ($name, $preload) = @_;
	my $node = new_secretenv_node($name,
		preload => $preload,
		# Without preload a written passphrase is refused: the command.
		conf => ($preload ? kek_settings($pass1, 1) : kek_command_settings($pass1, 1))
		  . "max_connections = 20\n");
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION secretenv');
	$node->safe_psql('postgres',
		"SELECT secretenv.secret_create('bench', '$value1')");
	return $node;
}

###########################################################################
# Preloaded node: the first decrypt of a new connection runs no PBKDF2.
# Node without preload: every new connection derives the KEK on first use.
###########################################################################
my $pre = make_node('preloaded', 1);
my $lazy = make_node('lazy', 0);
for my $case ([ $pre, 'preloaded', 'true', 0 ], [ $lazy, 'not preloaded', 'false', 1 ])
{
	my ($node, $what, $preloaded, $derivations) = @$case;
	is($node->safe_psql('postgres', decrypt_sql('bench')),
		$value1, "$what: decrypt returns the stored value");
	is($node->safe_psql('postgres', "SELECT secretenv.status()->>'preloaded'"),
		$preloaded, "$what: status() reports preloaded = $preloaded");
	is(derivations_per_connection($node, decrypt_sql('bench')),
		join(',', ($derivations) x $n_connections),
		"$what: $n_connections new connections each run $derivations PBKDF2 of their own on their first decrypt");
}
$lazy->stop;

###########################################################################
# Reload: new passphrase and version reach an existing backend.
###########################################################################
my $s = $pre->background_psql('postgres', on_error_stop => 0);
session_query($s, '\set VERBOSITY verbose');
my $pid = session_query($s, 'SELECT pg_backend_pid()');
is(session_query($s, decrypt_sql('bench')),
	$value1, 'existing session decrypts the v1 row before the reload');
is(session_query($s, 'SELECT secretenv.current_kek_version()'),
	'1', 'existing session starts on version 1');

ok(reload_generation($pre, kek_settings($pass2, 2, $pass1, 1), 2, $s),
	'existing session applied the reload, without restart');
is(session_query($s, 'SELECT secretenv.current_kek_version()'),
	'2', 'existing session sees kek_version 2');
is(session_query($s, 'SELECT pg_backend_pid()'), $pid, 'it is still the same backend');

# A row written now, by another connection, is wrapped under version 2.
$pre->safe_psql('postgres',
	"SELECT secretenv.secret_create('after_reload', '$value2')");
is( $pre->safe_psql('postgres',
		"SELECT kek_version FROM secretenv.secrets WHERE secret_name = 'after_reload'"),
	'2',
	'a row created after the reload is wrapped under version 2');

my ($out, $err) = session_query($s, decrypt_sql('after_reload'));
is($out, $value2, 'existing session decrypts a row written under the new KEK');
is($err, '', '... with no warning or error');
($out, $err) = session_query($s, decrypt_sql('bench'));
is($out, $value1, 'existing session still decrypts the v1 row through the previous KEK');
is($err, '', '... with no warning or error');
is(session_query($s, "SELECT secretenv.secret_get('after_reload')"),
	$value2, 'existing session: secret_get of the v2 row');

# The postmaster re-derived at reload: new connections still pay nothing, for
# the new current KEK and for the previous one.
is(derivations_per_connection($pre, decrypt_sql('after_reload')),
	join(',', (0) x $n_connections),
	'after reload: new connections decrypt v2 rows with no PBKDF2');
is(derivations_per_connection($pre, decrypt_sql('bench')),
	join(',', (0) x $n_connections),
	'after reload: new connections decrypt v1 rows (previous KEK) with no PBKDF2');

# Rotate, then drop the previous KEK: the existing session loses version 1.
# The reload re-applies the unchanged current passphrase (guc.c hands the
# assign hook a fresh copy and frees the old one) while changing another key
# setting: the current KEK must survive it.
is($pre->safe_psql('postgres', 'SELECT secretenv.secret_rotate_all()'),
	'1', 'rotation re-wraps the one v1 row');
ok( reload_generation(
		$pre, "secretenv.kek_previous_passphrase = ''\nsecretenv.kek_previous_version = 0\n", 3, $s), 'existing session applied the reload removing the previous KEK');
is(session_query($s, 'SELECT secretenv.kek_is_configured(1)'),
	'f', 'existing session: version 1 no longer configured');
($out, $err) = session_query($s, decrypt_sql('bench'));
is($out, $value1, 'existing session: the rotated row decrypts under version 2');
is($err, '', '... with no warning or error');
($out, $err) = session_query($s, decrypt_sql('after_reload'));
is($out, $value2, 'existing session: the v2 row still decrypts after the key change');
is($err, '', '... with no warning or error');
my ($rc, $nout, $nerr) = $pre->psql('postgres', decrypt_sql('after_reload'));
is($nout, $value2, 'a new connection decrypts the v2 row after the key change');
is($nerr, '', '... with no warning or error');

# A reload that rewrites the same key settings changes nothing: every row
# still decrypts, in the existing session and in new connections.
ok(reload_generation($pre, '', 4, $s), 'existing session applied a reload that left the keys alone');
($out, $err) = session_query($s, decrypt_sql('after_reload'));
is($out, $value2, 'unchanged reload: existing session still decrypts the v2 row');
is($err, '', '... with no warning or error');
($out, $err) = session_query($s, decrypt_sql('bench'));
is($out, $value1, 'unchanged reload: existing session still decrypts the rotated row');
($rc, $nout, $nerr) = $pre->psql('postgres', decrypt_sql('after_reload'));
is($nout, $value2, 'unchanged reload: a new connection decrypts the v2 row');
is($nerr, '', '... with no warning or error');

# An envelope still under version 1 is now refused in the existing session.
(undef, $err) = session_query($s,
	"SELECT secretenv.secret_decrypt('\\x00'::bytea, decode(repeat('00', 60), 'hex'), 1, 'id', 'n')"
);
like($err, qr/ERROR:  22S04: no KEK is configured for version 1/,
	'existing session: a version-1 envelope is refused with 22S04 once the previous KEK is removed');
is(session_query($s, 'SELECT pg_backend_pid()'), $pid,
	'all of it happened in one backend, without a restart');
$s->quit;

$pre->stop;
done_testing();
