
# Copyright (c) secretenv contributors
#
# secretenv.kek_passphrase_command_timeout and the command's output
# contract (issue 11, DESIGN 7a):
#
#  - preloaded, a hanging command (sleep 3600) at reload: the postmaster
#    kills it after the timeout and logs the failure, the server stays up
#    and answers, and the first call that needs the KEK fails with 39000
#    saying it timed out (as any failed command does today); fixing the
#    command recovers;
#  - preloaded, a hanging command at start: the server refuses to start,
#    the log says it timed out, and no postmaster is left behind;
#  - not preloaded: the first call runs the command under the same timeout
#    and raises 39000; a command that ignores SIGTERM is killed anyway, and
#    one that closes its stdout but keeps running times out too;
#  - a query cancel kills a running command at once (timeout 3600 s: if
#    the cancel were ignored, this test would hang until the harness's
#    timeout and fail);
#  - after every kill, no process of the command's group is left (pgrep on
#    a unique argument);
#  - a NUL byte anywhere in the output is an error, not a truncation: the
#    passphrase before the NUL, which opens the rows, is not used;
#  - a long multi-line output is read in full: the first line is used and
#    the command runs to its end (it would die of SIGPIPE otherwise);
#  - a first line of 4096 bytes is a passphrase, one of 4097 an error;
#  - nothing the commands print reaches the server log.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;
use Time::HiRes qw(sleep);

my $tmp = PostgreSQL::Test::Utils::tempdir;
my $marker = "$tmp/long.done";

# Unique sleep arguments, so that pgrep finds only this test's commands.
my $uniq = sprintf('%d%04d', $$, int(rand(10000)));
my $sleeps = "sleep 360[0-9]\\.$uniq";

my $pass = 'TIMEOUT-pass-v1-k3j9-persimmon-kek-5b7d9f1a3c';
my $after_nul = 'AFTER-NUL-q8r2-must-not-matter';
my $second = 'SECOND-LINE-m4t6-of-a-long-output';

my $good = write_script($tmp, 'good.sh', qq{[ "\$1" = 1 ] || exit 3\necho '$pass'});
# The sleep runs as a child of the script's shell: killing the shell alone
# would leave it behind.
my $hang = write_script($tmp, 'hang.sh', "sleep 3601.$uniq\necho never");
my $stubborn = write_script($tmp, 'stubborn.sh', "trap '' TERM\nsleep 3602.$uniq\necho never");
my $closed = write_script($tmp, 'closed.sh', "echo '$pass'\nexec >&-\nsleep 3603.$uniq");
my $nul_first = write_script($tmp, 'nul_first.sh', qq{printf '%s\\000%s\\n' '$pass' '$after_nul'});
my $nul_later = write_script($tmp, 'nul_later.sh', qq{printf '%s\\n%s\\000\\n' '$pass' '$second'});
my $long = write_script($tmp, 'long.sh',
	qq{echo '$pass'\necho '$second'\nseq 1 300000\necho "seq exit \$?" > '$marker'});
my $max_line = write_script($tmp, 'max_line.sh', q{head -c 4096 /dev/zero | tr '\000' b; echo});
my $too_long = write_script($tmp, 'too_long.sh', q{head -c 4097 /dev/zero | tr '\000' b; echo});

# Processes of the hanging commands still alive.  A killed process may take
# a moment to go; one that was not killed stays for an hour.
sub leftovers
{
	my @pids;
	for (1 .. 100)
	{
		open my $ps, '-|', 'pgrep', '-f', $sleeps or die $!;
		@pids = <$ps>;
		close $ps;
		last unless @pids;
		sleep(0.1);
	}
	return scalar(@pids);
}

my $generation = 0;
sub set_command
{
	my ($node, $command, $timeout) = @_;
	$generation++;
	# The timeout first: a reload assigns settings in file order, and the
	# preloaded postmaster runs the command as soon as it is assigned.
	reload_generation($node,
		"secretenv.kek_passphrase_command_timeout = '$timeout'\n"
		  . "secretenv.kek_passphrase_command = '$command %v'\n",
		$generation);
	return;
}

###########################################################################
# Preloaded: a hanging command at reload.
###########################################################################
my $pre = new_secretenv_node('preloaded', conf => qq{
secretenv.kek_passphrase_command_timeout = 2
secretenv.kek_passphrase_command = '$good %v'
});
$pre->start;
$pre->safe_psql('postgres',
	"CREATE EXTENSION secretenv; SELECT secretenv.secret_create('pre', 'pre-value')");
my $started = $pre->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');

is($pre->safe_psql('postgres', 'SHOW secretenv.kek_passphrase_command_timeout'),
	'2s', 'the timeout is a setting in seconds');

my $logpos = -s $pre->logfile;
set_command($pre, $hang, '2s');
ok( $pre->wait_for_log(
		qr/LOG:  could not obtain the KEK passphrase of version 1\n[^\n]*DETAIL:  The passphrase command failed: it timed out after 2 s and was killed\./,
		$logpos),
	'reload with a hanging command: the postmaster killed it after the timeout and logged why');
is(leftovers(), 0, '... and no process of the command is left');
is($pre->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'),
	$started, 'the server stayed up (same postmaster) and answers');

my ($out, $err) = run_sql($pre, 'postgres', "SELECT secretenv.secret_get('pre')");
like($err, qr/ERROR:  39000: could not obtain the KEK passphrase of version 1/,
	'the first call that needs the KEK fails with 39000');
like($err, qr/DETAIL:  The passphrase command failed: it timed out after 2 s and was killed\./,
	'... saying that the command timed out');
like($err, qr/HINT:  Make the command finish within secretenv\.kek_passphrase_command_timeout/,
	'... with a hint naming the setting');
is(leftovers(), 0, 'the backend killed its command too: nothing left');

set_command($pre, $good, '2s');
($out, $err) = run_sql($pre, 'postgres', "SELECT secretenv.secret_get('pre')");
is($out, 'pre-value', 'command fixed and reloaded: reads work again');

###########################################################################
# Preloaded: a hanging command, or a NUL byte, at start.
###########################################################################
$pre->stop;
for my $case ([ 'a hanging command', $hang, qr/it timed out after 2 s and was killed/ ],
	[ 'a NUL byte', $nul_first, qr/its output contains a NUL byte/ ])
{
	my ($what, $script, $detail) = @$case;
	$pre->append_conf('postgresql.conf', "secretenv.kek_passphrase_command = '$script %v'\n");
	$logpos = -s $pre->logfile;
	my $ok = $pre->start(fail_ok => 1);
	ok(!$ok, "start with $what: the server refuses to start");
	ok(!-e $pre->data_dir . '/postmaster.pid', "start with $what: no postmaster is left running");
	$pre->stop if $ok;
	my $log = slurp_file($pre->logfile, $logpos);
	like($log, qr/(?:FATAL|ERROR):  could not obtain the KEK passphrase of version 1/,
		"start with $what: the log says it could not obtain the passphrase");
	like($log, $detail, "start with $what: the log says why");
}
is(leftovers(), 0, 'after the failed start no process of the command is left');

###########################################################################
# Not preloaded: the first call of a backend runs the command.
###########################################################################
my $lazy = new_secretenv_node('lazy',
	preload => 0,
	conf => "secretenv.kek_passphrase_command = '$good %v'\n");
$lazy->start;
$lazy->safe_psql('postgres',
	"CREATE EXTENSION secretenv; SELECT secretenv.secret_create('lazy', 'lazy-value')");

for my $case ([ 'hanging', $hang ],
	[ 'ignoring SIGTERM', $stubborn ],
	[ 'closing its output, then hanging', $closed ])
{
	my ($what, $script) = @$case;
	set_command($lazy, $script, '2');
	($out, $err) = run_sql($lazy, 'postgres', "SELECT secretenv.secret_get('lazy')");
	like($err, qr/ERROR:  39000: could not obtain the KEK passphrase of version 1/,
		"not preloaded, command $what: the first call fails with 39000");
	like($err, qr/it timed out after 2 s and was killed/, '... saying it timed out');
	is(leftovers(), 0, '... and no process of the command is left');
}

# The backend reaps what it forked: after a killed and a successful run,
# the session's backend has no child process, not even a zombie.
sub children
{
	my ($pid) = @_;
	open my $ps, '-|', 'ps', '-o', 'pid=,stat=', '--ppid', $pid or die $!;
	my @kids = <$ps>;
	close $ps;
	return scalar(@kids);
}
{
	my $session = $lazy->background_psql('postgres', on_error_stop => 0);
	my $bpid = $session->query('SELECT pg_backend_pid()');
	$session->query("SELECT secretenv.secret_get('lazy')");
	like($session->{stderr}, qr/it timed out after 2 s and was killed/,
		'in a session: the hanging command timed out');
	is(children($bpid), 0, '... and the backend has no child process left, not even a zombie');
	$session->quit;
}
set_command($lazy, $good, '2');
{
	my $session = $lazy->background_psql('postgres', on_error_stop => 0);
	my $bpid = $session->query('SELECT pg_backend_pid()');
	is($session->query("SELECT secretenv.secret_get('lazy')"),
		'lazy-value', 'in a session: the good command supplies the KEK');
	is(children($bpid), 0, '... and the backend has no child process left, not even a zombie');
	$session->quit;
}

# A query cancel while the command runs (timeout 3600 s).
set_command($lazy, $hang, '1h');
my ($qout, $qerr) = ('', '');
my $query = IPC::Run::start(
	[
		'psql', '-X', '-v', 'VERBOSITY=verbose', '-d', $lazy->connstr('postgres'),
		'-c', "SELECT secretenv.secret_get('lazy')"
	],
	'>', \$qout, '2>', \$qerr,
	IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
my $running = 0;
for (1 .. 10 * $PostgreSQL::Test::Utils::timeout_default)
{
	open my $ps, '-|', 'pgrep', '-f', $sleeps or die $!;
	my @pids = <$ps>;
	close $ps;
	$running = scalar(@pids);
	last if $running;
	sleep(0.1);
}
is($running, 1, 'a backend is running the hanging command');
is( $lazy->safe_psql(
		'postgres',
		"SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity WHERE query LIKE '%secret_get(''lazy'')%' AND pid <> pg_backend_pid()"
	),
	'1',
	'its query is cancelled');
$query->finish;
# Whichever comes first: the keyring's report of the killed command, or
# the cancel itself at the next interrupt check.
like(
	$qerr,
	qr/ERROR:  (?:39000: could not obtain the KEK passphrase of version 1\n(?:.*\n)*?DETAIL:  The passphrase command failed: it was killed on a cancel or termination request|57014: canceling statement due to user request)/,
	'the cancelled call ends at once (not after the 1 h timeout), saying why');
is(leftovers(), 0, '... and no process of the command is left');

###########################################################################
# The output contract.
###########################################################################
set_command($lazy, $good, '2');
my $envelope = $lazy->safe_psql('postgres',
	"SELECT secretenv.secret_encrypt('under-the-first-line', 'id-1', 'n-1')");

for my $case ([ 'in the first line', $nul_first ], [ 'in a later line', $nul_later ])
{
	my ($where, $script) = @$case;
	set_command($lazy, $script, '2');
	($out, $err) = run_sql($lazy, 'postgres',
		"SELECT secretenv.secret_decrypt('$envelope'::secretenv.envelope, 'id-1', 'n-1')");
	is($out, '', "a NUL byte $where: nothing is decrypted");
	like($err, qr/ERROR:  39000: could not obtain the KEK passphrase of version 1/,
		"a NUL byte $where: 39000");
	like($err, qr/DETAIL:  The passphrase command failed: its output contains a NUL byte\./,
		"a NUL byte $where: the detail says so");
}

unlink $marker;
set_command($lazy, $long, '2');
($out, $err) = run_sql($lazy, 'postgres',
	"SELECT secretenv.secret_decrypt('$envelope'::secretenv.envelope, 'id-1', 'n-1')");
is($out, 'under-the-first-line', 'a long multi-line output: its first line is the passphrase');
is(-e $marker ? slurp_file($marker) : 'missing', "seq exit 0\n",
	'... and its 2 MB writer ran to its end with status 0 (read in full, no SIGPIPE)');

# A database of its own: the rows of postgres were written under another
# passphrase, and secretenv refuses to write under a KEK that does not
# open them (fail closed).
$lazy->safe_psql('postgres', 'CREATE DATABASE limits');
$lazy->safe_psql('limits', 'CREATE EXTENSION secretenv');
set_command($lazy, $max_line, '2');
my ($rc_limit, $out_limit, $err_limit) = $lazy->psql('limits',
	"SELECT secretenv.secret_decrypt(secretenv.secret_encrypt('at-the-limit', 'id-2', 'n-2'), 'id-2', 'n-2')");
($out, $err) = ($out_limit, $err_limit);
is($out, 'at-the-limit', 'a first line of 4096 bytes is a passphrase');

set_command($lazy, $too_long, '2');
($out, $err) = run_sql($lazy, 'postgres',
	"SELECT secretenv.secret_encrypt('over-the-limit', 'id-3', 'n-3')");
like($err, qr/ERROR:  39000: could not obtain the KEK passphrase of version 1/,
	'a first line of 4097 bytes: 39000');
like($err, qr/DETAIL:  The passphrase command failed: its first output line is longer than 4096 bytes\./,
	'... the detail says it is too long');

$lazy->stop;

###########################################################################
# Nothing the commands printed reached a server log.
###########################################################################
for my $n ($pre, $lazy)
{
	my @hits = grep { /\Q$pass\E|\Q$after_nul\E|\Q$second\E|bbbbbbbb/ }
	  split /\n/, slurp_file($n->logfile);
	is(scalar(@hits), 0, $n->name . ': the commands\' output appears 0 times in the server log')
	  or diag(join("\n", @hits));
}

done_testing();
