
# Copyright (c) secretenv contributors
#
# secretenv.kek_passphrase_command (issue 4): a command run by the server
# whose first output line is the passphrase of a version; %v is replaced by
# the version, %% by a percent sign.
#
#  - success, preloaded: the command runs in the postmaster, once per
#    configured version, and new connections do not run it again; %v yields
#    a different passphrase per version; only the first line counts (proved
#    by reading the rows back with the literal passphrase as the GUC);
#  - rotation through the command (current v2 + previous v1, rotate, drop
#    previous), with the command consulted for both versions;
#  - the command wins over secretenv.kek_passphrase, with a WARNING;
#  - failure (non-zero exit, no output, empty first line) at server start:
#    the server refuses to start, the log says "could not obtain the KEK
#    passphrase of version N" and the exit status;
#  - failure at reload and lazily in a backend: the first call that needs
#    the KEK fails with SQLSTATE 39000 and the same message; fixing the
#    command and reloading recovers;
#  - the command's output (passphrases, extra lines, output of a failing
#    command) never appears in an error, a NOTICE or the server log, and the
#    setting itself is hidden like the passphrase.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;

my $tmp = PostgreSQL::Test::Utils::tempdir;
my $calls = "$tmp/calls.log";

my %cmdpass = (
	1 => 'CMDPASS-v1-h7k2-tangerine-kek-1f3e5d7c9b0a2e4f6d',
	2 => 'CMDPASS-v2-p4q8-aubergine-kek-8c6a4e2d0f1b3d5e7a',
);
my $extra_line = 'SECOND-LINE-w9x3-should-be-ignored';
my $leaky = 'LEAKY-OUTPUT-z5n1-of-a-failing-command';

# The passphrase command: prints the passphrase of version $1 on its first
# line and something else after it; logs only the version it was asked for;
# checks that %% arrived as a single %.
my $good = write_script($tmp, 'kek_good.sh', qq{
echo "\$1" >> '$calls'
[ "\$2" = "100%" ] || exit 7
case "\$1" in
  1) echo '$cmdpass{1}' ;;
  2) echo '$cmdpass{2}' ;;
  *) exit 3 ;;
esac
echo '$extra_line'
});
my $fail_status = write_script($tmp, 'kek_fail.sh', qq{echo '$leaky'\nexit 4});
my $fail_silent = write_script($tmp, 'kek_silent.sh', 'exit 0');
my $fail_empty = write_script($tmp, 'kek_empty.sh', qq{echo ''\necho '$leaky'});

sub calls_since
{
	my ($offset) = @_;
	return '' unless -e $calls;
	my $all = slurp_file($calls);
	my $s = substr($all, $offset);
	$s =~ s/\n/,/g;
	$s =~ s/,$//;
	return $s;
}
sub calls_offset { return -e $calls ? -s $calls : 0; }

# Nothing of what the commands print may show up in $text.
my @outputs = ($cmdpass{1}, $cmdpass{2}, $extra_line, $leaky);
sub clean
{
	my ($text) = @_;
	for my $o (@outputs)
	{
		return 0 if index($text, substr($o, 0, 20)) >= 0;
	}
	return 1;
}

my $loglevels = qq{
log_statement = 'all'
log_min_messages = debug1
log_min_error_statement = debug1
};

my $node = new_secretenv_node('command', conf => qq{
secretenv.kek_passphrase_command = '$good %v 100%%'
secretenv.kek_version = 1
secretenv_test.generation = 1
$loglevels
});

###########################################################################
# Success, preloaded.
###########################################################################
my $off = calls_offset();
$node->start;
is(calls_since($off), '1', 'at start the postmaster ran the command once, for version 1');

$node->safe_psql(
	'postgres', q{
CREATE EXTENSION secretenv;
CREATE ROLE plain LOGIN;
SELECT secretenv.secret_create('cmd_' || i, 'value-' || i) FROM generate_series(1, 5) i;
});
my ($rc, $out, $err) = $node->psql('postgres',
	"SELECT secretenv.status()->>'using_default_passphrase', secretenv.secret_get('cmd_1')");
is($out, 'false|value-1', 'the command\'s passphrase is used (not the default), reads work');
is($err, '', 'no warning');

$off = calls_offset();
for (1 .. 5)
{
	$node->safe_psql('postgres', "SELECT secretenv.secret_get('cmd_$_')");
}
is(calls_since($off), '', 'new connections inherit the KEK: the command is not run again');

###########################################################################
# Rotation through the command.
###########################################################################
$off = calls_offset();
$node->append_conf('postgresql.conf',
	"secretenv.kek_version = 2\nsecretenv.kek_previous_version = 1\nsecretenv_test.generation = 2\n");
$node->reload;
$node->poll_query_until('postgres',
	"SELECT current_setting('secretenv_test.generation', true) = '2'");
is($node->safe_psql('postgres', 'SELECT secretenv.secret_rotate_all()'),
	'5', 'rotation to version 2 through the command re-wraps 5 rows');
my $seen = calls_since($off);
like($seen, qr/\b2\b/, "the command was asked for version 2 (calls: $seen)");
($rc, $out, $err) = $node->psql('postgres',
	"SELECT count(*) FROM secretenv.secrets WHERE kek_version = 2 AND secretenv.secret_get(secret_name) = 'value-' || substr(secret_name, 5)");
is($out, '5', 'after rotation every row is at v2 and reads back');
$node->append_conf('postgresql.conf',
	"secretenv.kek_previous_version = 0\nsecretenv_test.generation = 3\n");
$node->reload;
$node->poll_query_until('postgres',
	"SELECT current_setting('secretenv_test.generation', true) = '3'");
($rc, $out, $err) = $node->psql('postgres',
	"SELECT count(*) FROM secretenv.verify_secrets()");
is($out, '0', 'previous KEK removed: verify_secrets() is empty');

# %v gave a different passphrase per version, and only the first line
# counts: the literal passphrase of version 2, as the GUC, reads the rows.
$node->stop;
$node->append_conf('postgresql.conf',
	"secretenv.kek_passphrase_command = ''\nsecretenv.kek_passphrase = '$cmdpass{2}'\n");
$node->start;
($rc, $out, $err) = $node->psql('postgres',
	"SELECT count(*) FROM secretenv.secrets WHERE secretenv.secret_get(secret_name) = 'value-' || substr(secret_name, 5)");
is($out, '5', 'the KEK came from the first output line for version 2, exactly');
$node->append_conf('postgresql.conf', "secretenv.kek_passphrase = '$cmdpass{1}'\n");
$node->restart;
($rc, $out, $err) = $node->psql('postgres', "SELECT count(*) FROM secretenv.verify_secrets()");
is($out, '5', 'version 1\'s passphrase does not open version 2 rows (%v was substituted)');

###########################################################################
# The command wins over secretenv.kek_passphrase, with a WARNING.
###########################################################################
$node->append_conf('postgresql.conf',
	"secretenv.kek_passphrase = 'ignored-passphrase-0000000000000000000000'\n"
	  . "secretenv.kek_passphrase_command = '$good %v 100%%'\n");
$node->restart;
($rc, $out, $err) = $node->psql('postgres', "SELECT secretenv.secret_get('cmd_3')");
is($out, 'value-3', 'command and passphrase both set: the command\'s KEK is used');
like($err, qr/WARNING:  secretenv\.kek_passphrase_command is set, so the passphrase settings are ignored/,
	'... and a WARNING says the passphrase setting is ignored');
$node->append_conf('postgresql.conf', "secretenv.kek_passphrase = ''\n");
$node->restart;

###########################################################################
# The setting is hidden like the passphrase.
###########################################################################
($rc, $out, $err) = $node->psql('postgres', 'SHOW secretenv.kek_passphrase_command',
	extra_params => [ '-U', 'plain' ]);
like($err, qr/(?:must be superuser or have privileges of pg_read_all_settings|permission denied) to examine/,
	'an ordinary role cannot SHOW the command');
($rc, $out, $err) = $node->psql('postgres',
	"SELECT count(*) FROM pg_settings WHERE name = 'secretenv.kek_passphrase_command'");
is($out, '0', 'the command is not a row of pg_settings');
($rc, $out, $err) = $node->psql('postgres',
	"ALTER SYSTEM SET secretenv.kek_passphrase_command = '/bin/echo x'",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/ERROR:  55P02/, 'ALTER SYSTEM SET of the command is refused');

###########################################################################
# Failure at reload, then lazily in backends.
###########################################################################
my $s = $node->background_psql('postgres', on_error_stop => 0);
session_query($s, '\set VERBOSITY verbose');
($out, $err) = session_query($s, "SELECT secretenv.secret_get('cmd_2')");
is($out, 'value-2', 'existing session reads before the failing reload');

# A key change (version) with a failing command.
reload_generation($node,
	"secretenv.kek_passphrase_command = '$fail_status %v'\nsecretenv.kek_previous_version = 1\n", 10, $s);
($out, $err) = session_query($s, "SELECT secretenv.secret_get('cmd_4')");
like($err, qr/ERROR:  39000: could not obtain the KEK passphrase of version 2/,
	'reload with a failing command: the existing session\'s next call fails with 39000, naming the version');
ok(clean($err), '... and the error does not echo the command\'s output');
($rc, $out, $err) = $node->psql('postgres', "SELECT secretenv.secret_get('cmd_4')",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/ERROR:  39000: could not obtain the KEK passphrase of version 2/,
	'a new connection fails the same way');
like($err, qr/exit code 4/, 'the error gives the command\'s exit status');
ok(clean($err), '... and does not echo its output');

# No output at all, and an empty first line.
for my $case ([ 'no output', $fail_silent, 11 ], [ 'empty first line', $fail_empty, 12 ])
{
	my ($what, $script, $gen) = @$case;
	reload_generation($node, "secretenv.kek_passphrase_command = '$script %v'\n", $gen);
	($rc, $out, $err) = $node->psql('postgres', "SELECT secretenv.secret_get('cmd_4')",
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	like($err, qr/ERROR:  39000: could not obtain the KEK passphrase of version 2/,
		"command with $what: 39000, naming the version");
	ok(clean($err), "command with $what: its output is not echoed");
}

# Fix the command: everything recovers without a restart.
reload_generation($node, "secretenv.kek_passphrase_command = '$good %v 100%%'\n", 13, $s);
($out, $err) = session_query($s, "SELECT secretenv.secret_get('cmd_4')");
is($out, 'value-4', 'command fixed and reloaded: the existing session reads again');
($rc, $out, $err) = $node->psql('postgres', "SELECT secretenv.secret_get('cmd_5')");
is($out, 'value-5', 'command fixed and reloaded: new connections read again');
$s->quit;
$node->stop;

###########################################################################
# Failure at server start (preloaded): the server refuses to start.
###########################################################################
for my $case (
	[ 'non-zero exit', $fail_status, qr/exit code 4/ ],
	[ 'no output', $fail_silent, qr/no passphrase line|exit code|printed no/ ],
	[ 'empty first line', $fail_empty, qr/no passphrase line|printed no/ ])
{
	my ($what, $script, $detail) = @$case;
	$node->append_conf('postgresql.conf', "secretenv.kek_passphrase_command = '$script %v'\n");
	my $logstart = -s $node->logfile;
	my $started = $node->start(fail_ok => 1);
	ok(!$started, "start with a command that fails ($what): the server refuses to start");
	$node->stop if $started;
	my $startlog = substr(slurp_file($node->logfile), $logstart);
	like($startlog, qr/(?:FATAL|ERROR|LOG):  could not obtain the KEK passphrase of version 2/,
		"start ($what): the log says it could not obtain the passphrase of version 2");
	like($startlog, $detail, "start ($what): the log says why");
}

###########################################################################
# Without preload: the first call of a backend runs the command.
###########################################################################
my $lazy = new_secretenv_node('lazy',
	preload => 0,
	conf => "secretenv.kek_passphrase_command = '$good %v 100%%'\nsecretenv.kek_version = 1\n$loglevels");
$lazy->start;
$off = calls_offset();
($rc, $out, $err) = $lazy->psql('postgres',
	"CREATE EXTENSION secretenv; SELECT secretenv.secret_create('lazy', 'lazy-value') IS NOT NULL; SELECT secretenv.secret_get('lazy')");
is($out, "t\nlazy-value", 'not preloaded: the command supplies the KEK on first use');
is(calls_since($off), '1', 'not preloaded: the backend ran the command once, for version 1');
$lazy->append_conf('postgresql.conf',
	"secretenv.kek_passphrase_command = '$fail_status %v'\nsecretenv_test.generation = 2\n");
$lazy->reload;
$lazy->poll_query_until('postgres',
	"SELECT current_setting('secretenv_test.generation', true) = '2'");
($rc, $out, $err) = $lazy->psql('postgres', "SELECT secretenv.secret_get('lazy')",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/ERROR:  39000: could not obtain the KEK passphrase of version 1/,
	'not preloaded, failing command: the first call fails with 39000');
ok(clean($err), '... without echoing the command\'s output');
$lazy->stop;

###########################################################################
# The log never holds the command's output, nor the command line.
###########################################################################
for my $n ($node, $lazy)
{
	my $log = slurp_file($n->logfile);
	my @lines = split /\n/, $log;
	my @hits;
	for my $o (@outputs)
	{
		push @hits, grep { index($_, substr($o, 0, 20)) >= 0 } @lines;
	}
	is(scalar(@hits), 0, $n->name . ': the command\'s output appears 0 times in the server log')
	  or diag(join("\n", @hits));
	# Only a preloaded postmaster has the redaction hook when it logs a
	# reload's "parameter ... changed to" lines (a documented limit).
	next if $n == $lazy;
	my @cmd_hits = grep { /kek_(good|fail|silent|empty)\.sh/ } @lines;
	is(scalar(@cmd_hits), 0, $n->name . ': the command line appears 0 times in the server log')
	  or diag(join("\n", @cmd_hits));
}

done_testing();
