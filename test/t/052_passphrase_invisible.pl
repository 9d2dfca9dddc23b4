
# Copyright (c) secretenv contributors
#
# A KEK passphrase is never visible (issue 4, DESIGN §2).
#
# Preloaded node:
#  - an ordinary role (LOGIN, nothing granted) and a member of
#    pg_read_all_settings try every SQL route: SHOW, SHOW ALL,
#    current_setting, set_config, pg_settings, pg_show_all_settings(),
#    pg_file_settings, pg_read_file, error text, NOTICEs, secretenv's views
#    and functions; no output or message of theirs holds the passphrase;
#  - SHOW as superuser prints a mask; ALTER SYSTEM, SET and ALTER ROLE SET of
#    the passphrase are refused;
#  - with log_statement = 'all', log_min_messages = debug1,
#    log_min_error_statement = debug1, log_min_duration_statement = 0 and
#    unlimited parameter logging, the whole surface runs (create, get,
#    update, encrypt, decrypt, rewrap, rotate, status, verify, errors of
#    every class, a reload that changes the passphrase and the version), and
#    then the server log holds no passphrase: neither the configured ones nor
#    the candidate passphrases given to the refused SET/ALTER commands.
#
# Node without preload: the passphrase sits in postgresql.conf and the
# library loads on first use; _PG_init's WARNING says the passphrase was
# readable by every role until then.
#
# (The passphrase command's own output is checked in 054.)
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;
use Digest::MD5 qw(md5_hex);

# Distinctive strings: the middle part ("core") is what the log is searched
# for, so that a truncated or partly quoted copy is found too.
my %secret = (
	pass1 => 'PP1-zq7x-9f3e1c-ultraviolet-kek-2c8d4b6a0e1f',
	pass2 => 'PP2-kw4m-0b7d2e-infrared-kek-5e9a1c3f7b2d80',
	attempt_set => 'PPX-set-r3t8-candidate-passphrase-4411aa',
	attempt_alter => 'PPX-alter-m2v6-candidate-passphrase-9c0d',
	attempt_role => 'PPX-role-h5j1-candidate-passphrase-7e3b',
);
sub core { my ($s) = @_; return substr($s, 4, 24); }

sub occurrences
{
	my ($text, $needle) = @_;
	my $n = 0;
	$n++ while $text =~ /\Q$needle\E/g;
	return $n;
}

# No configured or candidate passphrase (nor its core) in $text.
sub clean
{
	my ($text) = @_;
	for my $k (sort keys %secret)
	{
		return 0 if occurrences($text, core($secret{$k}));
	}
	return 1;
}

my $node = new_secretenv_node('invisible', conf => qq{
secretenv.kek_passphrase = '$secret{pass1}'
secretenv.kek_version = 1
log_statement = 'all'
log_min_messages = debug1
log_min_error_statement = debug1
log_min_duration_statement = 0
log_parameter_max_length = -1
log_parameter_max_length_on_error = -1
log_connections = on
log_disconnections = on
secretenv_test.generation = 1
});
$node->start;

$node->safe_psql(
	'postgres', q{
CREATE EXTENSION secretenv;
CREATE ROLE plain LOGIN;
CREATE ROLE settings_reader LOGIN IN ROLE pg_read_all_settings;
CREATE ROLE monitor LOGIN IN ROLE pg_monitor;
CREATE ROLE app LOGIN IN ROLE secretenv_reader, secretenv_writer, secretenv_admin;
SELECT secretenv.secret_create('api_key', 'sk-live-abcdef0123456789');
});

# Run SQL as a role; returns stdout and stderr joined (with verbose errors).
my $statements = 0;
sub as_role
{
	my ($role, $sql) = @_;
	$statements++;
	my ($stdout, $stderr) = run_sql($node, 'postgres', $sql,
		extra_params => [ '-U', $role, '-v', 'VERBOSITY=verbose' ]);
	return "$stdout\n$stderr";
}

###########################################################################
# Every SQL route, as an ordinary role and as a pg_read_all_settings member.
###########################################################################
my @routes = (
	[ 'SHOW', 'SHOW secretenv.kek_passphrase' ],
	[ 'SHOW previous', 'SHOW secretenv.kek_previous_passphrase' ],
	[ 'SHOW ALL', 'SHOW ALL' ],
	[ 'current_setting', "SELECT current_setting('secretenv.kek_passphrase')" ],
	[
		'current_setting missing_ok',
		"SELECT current_setting('secretenv.kek_passphrase', true)"
	],
	[ 'pg_settings', "SELECT s::text FROM pg_settings s" ],
	[ 'pg_show_all_settings', "SELECT s::text FROM pg_show_all_settings() s" ],
	[ 'pg_file_settings', "SELECT f::text FROM pg_file_settings f" ],
	[ 'pg_show_all_file_settings', "SELECT f::text FROM pg_show_all_file_settings() f" ],
	[ 'pg_read_file', "SELECT pg_read_file('postgresql.conf')" ],
	[ 'pg_db_role_setting', "SELECT r::text FROM pg_db_role_setting r" ],
	[ 'set_config', "SELECT set_config('secretenv.kek_passphrase', 'x', false)" ],
	[ 'SET', "SET secretenv.kek_passphrase = 'x'" ],
	[ 'RESET', "RESET secretenv.kek_passphrase" ],
	[ 'status()', "SELECT secretenv.status()" ],
	[ 'key_config()', "SELECT secretenv.key_config()" ],
	[ 'masked_secrets', "SELECT m::text FROM secretenv.masked_secrets m" ],
	[ 'decrypted_secrets', "SELECT d::text FROM secretenv.decrypted_secrets d" ],
	[ 'secret_get', "SELECT secretenv.secret_get('api_key')" ],
	[ 'secret_create', "SELECT secretenv.secret_create('by_role', 'v')" ],
	[ 'pg_stat_activity', "SELECT a::text FROM pg_stat_activity a" ],
	[ 'LOAD', "LOAD 'secretenv'" ],
	[
		'DO + RAISE NOTICE',
		"DO \$\$BEGIN RAISE NOTICE '%', current_setting('secretenv.kek_passphrase', true); END\$\$"
	],
);

for my $role (qw(plain settings_reader monitor app))
{
	my @leaks;
	for my $r (@routes)
	{
		my $out = as_role($role, $r->[1]);
		push @leaks, "$r->[0]: $out" unless clean($out);
	}
	is(join("\n", @leaks), '', "$role: no SQL route shows a passphrase");
}

# What those routes do show, for the record.
my $shown = as_role('settings_reader', 'SHOW secretenv.kek_passphrase');
like($shown, qr/^\*{8}$/m,
	'pg_read_all_settings member: SHOW prints the mask');
$shown = as_role('settings_reader',
	"SELECT current_setting('secretenv.kek_passphrase')");
like($shown, qr/^\*{8}$/m,
	'pg_read_all_settings member: current_setting() returns the mask');
$shown = as_role('plain', 'SHOW secretenv.kek_passphrase');
like($shown, qr/ERROR:  42501: (?:must be superuser or have privileges of pg_read_all_settings|permission denied) to examine/,  # 15; 16 on: permission denied
	'ordinary role: SHOW is refused with 42501');
$shown = as_role('settings_reader',
	"SELECT count(*) FROM pg_settings WHERE name LIKE 'secretenv.kek%passphrase'");
like($shown, qr/^0$/m,
	'pg_read_all_settings member: the passphrases are not rows of pg_settings');

###########################################################################
# Superuser: a mask, and no way to write the passphrase through SQL.
###########################################################################
is($node->safe_psql('postgres', 'SHOW secretenv.kek_passphrase'),
	'********', 'superuser: SHOW prints a mask');
is($node->safe_psql('postgres', "SELECT current_setting('secretenv.kek_passphrase')"),
	'********', 'superuser: current_setting() returns the mask');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_settings WHERE name LIKE 'secretenv.kek%passphrase'"),
	'0',
	'superuser: the passphrases are not rows of pg_settings');

my $err = as_role('postgres',
	"ALTER SYSTEM SET secretenv.kek_passphrase = '$secret{attempt_alter}'");
like($err, qr/ERROR:  55P02: parameter "secretenv.kek_passphrase"/,
	'ALTER SYSTEM SET secretenv.kek_passphrase is refused (55P02)');
my $alter_err = $err;
$err = as_role('postgres',
	"ALTER SYSTEM SET secretenv.kek_previous_passphrase = '$secret{attempt_alter}'");
like($err, qr/ERROR:  55P02: parameter "secretenv.kek_previous_passphrase"/,
	'ALTER SYSTEM SET secretenv.kek_previous_passphrase is refused (55P02)');
my $auto = slurp_file($node->data_dir . '/postgresql.auto.conf');
unlike($auto, qr/kek_/, 'postgresql.auto.conf holds no KEK setting');
$err = as_role('postgres', "SET secretenv.kek_passphrase = '$secret{attempt_set}'");
like($err, qr/ERROR:  55P02: parameter "secretenv.kek_passphrase"/,
	'SET secretenv.kek_passphrase is refused (55P02)');
# The log hook may rewrite the log, but the client is owed PostgreSQL's own
# message (which quotes no value here).
like($alter_err . $err, qr/cannot be changed\n.*cannot be changed now/s,
	'the client receives PostgreSQL\'s refusal messages unaltered')
  or diag("client saw:\n$alter_err\n$err");
$err = as_role('postgres',
	"ALTER ROLE plain SET secretenv.kek_passphrase = '$secret{attempt_role}'");
like($err, qr/ERROR:  /, 'ALTER ROLE ... SET secretenv.kek_passphrase is refused');
ok(clean($err), '... and the refusal does not quote the candidate');

my $fs = $node->safe_psql('postgres',
	"SELECT setting FROM pg_file_settings WHERE name = 'secretenv.kek_passphrase'");
diag('limit (PostgreSQL core): a superuser reads postgresql.conf values through pg_file_settings: '
	  . ($fs eq '' ? 'not shown' : 'shown'));

###########################################################################
# The whole surface, with every logging knob turned up.
###########################################################################
my $surface = q{
SELECT secretenv.secret_create('db_password', 'hunter2-hunter2-hunter2');
SELECT secretenv.secret_create('cloud', '{"key": "AKIA0000", "secret": "wJalr0000"}'::jsonb);
SELECT secretenv.secret_get('db_password');
SELECT secretenv.secret_update('db_password', 'hunter3-hunter3-hunter3');
SELECT secretenv.secret_get('db_password');
SELECT (secretenv.secret_encrypt('free-standing', 'id-1', 'n-1')).kek_version;
SELECT secretenv.secret_decrypt(e, 'id-1', 'n-1') FROM secretenv.secret_encrypt('free-standing', 'id-1', 'n-1') e;
SELECT secretenv.secret_rewrap(wrapped_dek, kek_version) IS NOT NULL FROM secretenv.secrets LIMIT 1;
SELECT secretenv.secret_mask('mask-me-please');
SELECT secretenv.status();
SELECT * FROM secretenv.verify_secrets();
SELECT secretenv.cache_stats();
SELECT secretenv.kek_opens(wrapped_dek, kek_version) FROM secretenv.secrets;
SELECT secretenv.secret_decrypt(e, 'id-1', 'wrong-name') FROM secretenv.secret_encrypt('x', 'id-1', 'n-1') e;
SELECT secretenv.secret_decrypt(encrypted_value, set_byte(wrapped_dek, 20, get_byte(wrapped_dek, 20) # 1), kek_version, secret_id, secret_name) FROM secretenv.secrets LIMIT 1;
SELECT secretenv.secret_decrypt('\x00'::bytea, '\x00'::bytea, 1, 'a', 'b');
SELECT secretenv.secret_decrypt('\x00'::bytea, '\x00'::bytea, 99, 'a', 'b');
SELECT secretenv.secret_encrypt('v', 'bad|id', 'n');
SELECT secretenv.secret_get('no-such-secret');
UPDATE secretenv.secrets SET secret_name = 'renamed' WHERE secret_name = 'db_password';
SELECT secretenv.secret_create('db_password', 'duplicate-name');
SELECT secretenv.secret_rotate_all();
SELECT secretenv.secret_delete('cloud');
SHOW secretenv.kek_passphrase;
};
for my $stmt (grep { /\S/ } split /\n/, $surface)
{
	my $out = as_role('postgres', $stmt);
	ok(clean($out), "no passphrase in the output of: $stmt") or diag($out);
}
# ... and as the application role.
for my $stmt (grep { /\S/ } split /\n/, $surface)
{
	next if $stmt =~ /^UPDATE|^SHOW/;
	as_role('app', $stmt);
}

# A reload that changes the passphrase and the version, then rotation.
reload_generation($node, kek_settings($secret{pass2}, 2, $secret{pass1}, 1), 2);
for my $stmt (
	"SELECT secretenv.secret_rotate_all()",
	"SELECT secretenv.secret_get('db_password')",
	"SELECT secretenv.status()",
	"SELECT * FROM secretenv.verify_secrets()")
{
	my $out = as_role('postgres', $stmt);
	ok(clean($out), "after reload, no passphrase in the output of: $stmt") or diag($out);
}
is($node->safe_psql('postgres', "SELECT secretenv.secret_get('db_password')"),
	'hunter3-hunter3-hunter3', 'the surface worked: the updated value reads back after rotation');
$node->stop;

# Count in the whole server log.
my $log = slurp_file($node->logfile);
my @lines = split /\n/, $log;
my $total = 0;
for my $k (sort keys %secret)
{
	my $n = occurrences($log, core($secret{$k}));
	$total += $n;
	my @hits = grep { /\Q${\ core($secret{$k})}\E/ } @lines;
	is($n, 0, "server log: 0 occurrences of $k") or diag("leaking log lines:\n" . join("\n", @hits));
}
diag(sprintf('passphrase log check: %d statements run, %d log lines read, %d occurrences found',
	$statements, scalar(@lines), $total));
like($log, qr/statement: SELECT secretenv\.status\(\)/,
	'the log did record statements (log_statement = all is in effect)');

###########################################################################
# Without preload: the WARNING of _PG_init.
###########################################################################
my $lazy = new_secretenv_node('lazy',
	preload => 0,
	conf => "secretenv.kek_passphrase = '$secret{pass1}'\nlog_min_messages = debug1\n");
$lazy->start;
$lazy->safe_psql('postgres', 'CREATE ROLE plain LOGIN');
my ($rc, $out, $stderr) = $lazy->psql('postgres', 'CREATE EXTENSION secretenv');
is($rc, 0, 'not preloaded: CREATE EXTENSION works');
like($stderr,
	qr/WARNING:  secretenv\.kek_passphrase was readable by every role until secretenv was loaded/,
	'not preloaded: the first load warns that the passphrase was readable');
ok(clean($stderr), '... and the warning does not quote it');
($rc, $out, $stderr) = $lazy->psql('postgres',
	"SELECT secretenv.secret_create('k', 'lazy-value-123456')");
like($stderr,
	qr/WARNING:  secretenv\.kek_passphrase was readable by every role until secretenv was loaded/,
	'not preloaded: every backend that loads the library warns');
($rc, $out) = $lazy->psql('postgres',
	"SELECT md5(current_setting('secretenv.kek_passphrase', true)) = '" . md5_hex($secret{pass1}) . "'",
	extra_params => [ '-U', 'plain' ]);
diag('limit (why the warning exists): without preload, an ordinary role '
	  . ($out eq 't' ? 'CAN' : 'cannot')
	  . ' read the passphrase placeholder before the library is loaded in its backend');
$lazy->stop;
my $lazylog = slurp_file($lazy->logfile);
like($lazylog, qr/WARNING:  secretenv\.kek_passphrase was readable by every role/,
	'not preloaded: the warning is in the server log');
is(occurrences($lazylog, core($secret{pass1})), 0,
	'not preloaded: the passphrase is not in the server log');

done_testing();
