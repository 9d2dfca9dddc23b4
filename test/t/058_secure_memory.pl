
# Copyright (c) secretenv contributors
#
# What secure memory holds, per process (issue 11, DESIGN §5 and §7a).
#
# The secure mappings of a process (its anonymous MADV_DONTDUMP mappings in
# /proc/PID/smaps) are read through /proc/PID/mem, so each claim is checked
# against secure memory alone, apart from the ordinary heap (where
# PostgreSQL's configuration file reader may leave freed copies, see 053):
#  - passphrase settings: the postmaster's and a backend's secure memory
#    hold the passphrase and its KEK (the control that the search works);
#  - after a reload to another passphrase, the old passphrase and its KEK
#    are wiped from the postmaster's secure memory (no setting refers to
#    them any more) and the new ones are there;
#  - a rotation (version 2 new, version 1 previous) keeps both KEKs; a
#    reload that then drops the previous version wipes its passphrase and
#    its KEK from the postmaster's secure memory;
#  - passphrase command: once the KEK is derived the command's output is
#    wiped, in the postmaster and in a backend;
#  - a passphrase setting whose value has the form of a placeholder is
#    refused at reload (the log's DETAIL is redacted), and the key
#    configuration stays as it was.
use strict;
use warnings;
no warnings 'portable';    # 64-bit addresses from /proc/PID/smaps

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;
use IPC::Run;
use Time::HiRes qw(usleep);

my $pass1 = 'secure-memory-test-passphrase-1-9d2b7e4a1c6f0b3e';
my $pass2 = 'secure-memory-test-passphrase-2-3a8c5f1d7e0b9c2a';
my $pass3 = 'secure-memory-test-passphrase-3-7f4e2a9c1b8d6e0f';
my $pass4 = 'secure-memory-test-passphrase-4-2c9e7b1f4a6d0e3b';
my $salt = 'secretenv-kek-v1';
my $tmp = PostgreSQL::Test::Utils::tempdir;

# KEK of a passphrase and version, computed outside PostgreSQL.
sub kek { my ($pass, $version) = @_; return pack("H*", kek_hex($pass, $salt, $version)); }

# The bytes of every secure mapping of a process, concatenated.
sub secure_memory
{
	my ($pid) = @_;
	my $smaps = slurp_file("/proc/$pid/smaps");
	my $bytes = '';
	open(my $mem, '<:raw', "/proc/$pid/mem") or die "open /proc/$pid/mem: $!";
	for my $block (split /^(?=[0-9a-f]+-[0-9a-f]+ )/m, $smaps)
	{
		my ($start, $end, $rest) = $block =~ /^([0-9a-f]+)-([0-9a-f]+) (.*)$/m;
		my ($vmflags) = $block =~ /^VmFlags:(.*)$/m;
		next unless defined $vmflags && $vmflags =~ /\bdd\b/;
		next unless $rest =~ /^\S+ \S+ \S+ 0\s*$/;    # anonymous, unnamed
		my $len = hex($end) - hex($start);
		sysseek($mem, hex($start), 0) or die "seek: $!";
		my $got = sysread($mem, my $chunk, $len);
		die "read /proc/$pid/mem: $!" unless defined $got && $got == $len;
		$bytes .= $chunk;
	}
	close $mem;
	return $bytes;
}

sub has
{
	my ($haystack, $needle) = @_;
	return index($haystack, $needle) >= 0 ? 1 : 0;
}

sub postmaster_pid
{
	my ($node) = @_;
	my ($pid) = slurp_file($node->data_dir . '/postmaster.pid') =~ /^(\d+)/;
	return $pid;
}

my $node = new_secretenv_node('secure', conf => qq{
secretenv.kek_passphrase = '$pass1'
secretenv.kek_version = 1
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION secretenv');

my ($kek1, $kek3) = (kek($pass1, 1), kek($pass3, 1));

# Read secure memory: the postmaster's, then a live backend's.
sub backend_secure_memory
{
	my $s = $node->background_psql('postgres');
	my $pid = $s->query_safe(
		'SELECT pg_backend_pid() FROM (SELECT secretenv.current_kek_version()) v');
	my $bytes = secure_memory($pid);
	$s->quit;
	return $bytes;
}

my $pm = secure_memory(postmaster_pid($node));
cmp_ok(length($pm), '>', 0, 'postmaster: it has secure memory');
ok(has($pm, $pass1), 'setting: the passphrase is in the postmaster\'s secure memory');
ok(has($pm, $kek1), 'setting: its KEK is in the postmaster\'s secure memory');
my $be = backend_secure_memory();
ok(has($be, $pass1) && has($be, $kek1),
	'setting: a backend inherited both in its secure memory');

# Another passphrase: the old one and its KEK are wiped.
$node->append_conf('postgresql.conf', "secretenv.kek_passphrase = '$pass3'\n");
$node->reload;
# The postmaster derives the new KEK as it applies the reload.
$pm = secure_memory(postmaster_pid($node));
for (my $i = 0; $i < 100 && !has($pm, $kek3); $i++)
{
	usleep(100_000);
	$pm = secure_memory(postmaster_pid($node));
}
ok(has($pm, $pass3) && has($pm, $kek3),
	'reload: the new passphrase and its KEK are in the postmaster\'s secure memory');
is(has($pm, $pass1), 0, 'reload: the old passphrase is wiped from it');
is(has($pm, $kek1), 0, 'reload: the old KEK is wiped from it');

# A value shaped like a placeholder is refused; the configuration stays.
$node->append_conf('postgresql.conf',
	"secretenv.kek_passphrase = 'secretenv-placeholder:" . ('0' x 32) . "'\n");
my $log_offset = -s $node->logfile;
$node->reload;
ok( $node->wait_for_log(
		qr/invalid value for parameter "secretenv\.kek_passphrase"/,
		$log_offset),
	'a passphrase in the form of a placeholder is refused at reload');
$pm = secure_memory(postmaster_pid($node));
ok(has($pm, $pass3) && has($pm, $kek3),
	'... and the postmaster keeps the passphrase and KEK it had');

# A rotation keeps both KEKs; dropping the previous version wipes its KEK.
my $kek4 = kek($pass4, 2);
reload_generation($node, "secretenv.kek_passphrase = '$pass4'\nsecretenv.kek_version = 2\n"
	  . "secretenv.kek_previous_passphrase = '$pass3'\nsecretenv.kek_previous_version = 1\n", 1);
$pm = secure_memory(postmaster_pid($node));
ok(has($pm, $kek4) && has($pm, $kek3),
	'rotation: the new KEK and the previous one are in the postmaster\'s secure memory');
reload_generation($node, "secretenv.kek_previous_passphrase = ''\nsecretenv.kek_previous_version = 0\n", 2);
$pm = secure_memory(postmaster_pid($node));
ok(has($pm, $pass4) && has($pm, $kek4), 'previous version dropped: the current KEK stays');
is(has($pm, $pass3), 0, 'previous version dropped: its passphrase is wiped');
is(has($pm, $kek3), 0, 'previous version dropped: its KEK is wiped from the postmaster\'s secure memory');

# Passphrase command: its output does not stay, even in secure memory.
my $command = "$tmp/passphrase.sh";
PostgreSQL::Test::Utils::append_to_file($command, "#!/bin/sh\necho '$pass2'\n");
chmod 0700, $command or die "chmod: $!";
$node->append_conf(
	'postgresql.conf', qq{
secretenv.kek_passphrase = ''
secretenv.kek_version = 1
secretenv.kek_passphrase_command = '$command %v'
});
$node->restart;
my $kek2 = kek($pass2, 1);
$pm = secure_memory(postmaster_pid($node));
ok(has($pm, $kek2), 'command: the KEK is in the postmaster\'s secure memory');
is(has($pm, $pass2), 0, 'command: the command\'s output is not (wiped after derivation)');
$be = backend_secure_memory();
ok(has($be, $kek2), 'command: a backend inherited the KEK');
is(has($be, $pass2), 0, 'command: ... and not the command\'s output');

$node->stop;
done_testing();
