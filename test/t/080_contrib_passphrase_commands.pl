
# Copyright (c) secretenv contributors
#
# The sample secretenv.kek_passphrase_command scripts of contrib/ (issue 17):
#
#  - contrib/secretenv-passphrase-file prints the first line of
#    KEY_DIR/kek-v<version>; refuses a missing version, a file readable or
#    writable by group or others, a symbolic link and a version that is not
#    a number; prints nothing on stdout when it refuses;
#  - contrib/secretenv-passphrase-vault runs `vault kv get` (a stub on PATH
#    here) for <path>/kek-v<version>: the right passphrase per version, a
#    non-zero exit for a version the store lacks, the passphrase neither in
#    the CLI's arguments nor in its environment, and a hanging CLI killed
#    with everything it started by the script's own timeout (TERM, and KILL
#    for a CLI that ignores TERM);
#  - a preloaded server configured with either script derives the KEK of
#    exactly the passphrase in the file or the store: rows written under the
#    file script are read under the vault script and under the literal
#    passphrase in secretenv.kek_passphrase.
use strict;
use warnings;

use FindBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use lib $FindBin::RealBin;
use SecretenvTest;
use Time::HiRes qw(sleep);

my $contrib = "$FindBin::RealBin/../../contrib";
my $file_cmd = "$contrib/secretenv-passphrase-file";
my $vault_cmd = "$contrib/secretenv-passphrase-vault";
ok(-x $file_cmd && -x $vault_cmd, 'both sample scripts exist and are executable');

my $tmp = PostgreSQL::Test::Utils::tempdir;
my %pass = (
	1 => 'FILEPASS-v1-q3w8-marmalade-kek-5b7d9f1a3c5e7b9d0f',
	2 => 'FILEPASS-v2-z6x1-gooseberry-kek-2e4c6a8b0d1f3a5c7e',
);

# Run a command with extra environment; returns (exit status, stdout, stderr).
sub run_with_env
{
	my ($env, @cmd) = @_;
	local %ENV = (%ENV, %$env);
	my ($out, $err) = ('', '');
	IPC::Run::run(\@cmd, '<', \undef, '>', \$out, '2>', \$err);
	# Like a shell: 128 + N for a command killed by signal N.
	return (($? & 127) ? 128 + ($? & 127) : $? >> 8, $out, $err);
}

###########################################################################
# The file script.
###########################################################################
my $keydir = "$tmp/keys";
mkdir $keydir, 0700 or die $!;
for my $v (1, 2)
{
	open my $fh, '>', "$keydir/kek-v$v" or die $!;
	print $fh "$pass{$v}\nsecond line is not the passphrase\n";
	close $fh;
	chmod 0600, "$keydir/kek-v$v";
}
my %fenv = (SECRETENV_KEY_DIR => $keydir);

for my $v (1, 2)
{
	my ($rc, $out, $err) = run_with_env(\%fenv, $file_cmd, $v);
	is($rc, 0, "file script, version $v: exit 0");
	is($out, "$pass{$v}\n", "file script, version $v: exactly the first line of kek-v$v");
}

my ($rc, $out, $err) = run_with_env(\%fenv, $file_cmd, 3);
isnt($rc, 0, 'file script, unknown version: non-zero exit');
is($out, '', 'file script, unknown version: nothing on stdout');
like($err, qr/no passphrase file for KEK version 3/, 'file script, unknown version: says so on stderr');

for my $mode (0640, 0604, 0660, 0606)
{
	chmod $mode, "$keydir/kek-v1";
	($rc, $out, $err) = run_with_env(\%fenv, $file_cmd, 1);
	isnt($rc, 0, sprintf('file script, mode %04o: refused', $mode));
	is($out, '', sprintf('file script, mode %04o: the passphrase is not printed', $mode));
	like($err, qr/must not be accessible by group or others/,
		sprintf('file script, mode %04o: the reason is given', $mode));
}
chmod 0400, "$keydir/kek-v1";
($rc, $out) = run_with_env(\%fenv, $file_cmd, 1);
is("$rc|$out", "0|$pass{1}\n", 'file script, mode 0400: accepted');
chmod 0600, "$keydir/kek-v1";

symlink "$keydir/kek-v1", "$keydir/kek-v7" or die $!;
($rc, $out, $err) = run_with_env(\%fenv, $file_cmd, 7);
isnt($rc, 0, 'file script, a symbolic link: refused');
is($out, '', 'file script, a symbolic link: nothing on stdout');

for my $bad ('../keys/kek-v1', '1 2', '', '-1')
{
	($rc, $out, $err) = run_with_env(\%fenv, $file_cmd, $bad);
	isnt($rc, 0, "file script, version '$bad': refused");
	is($out, '', "file script, version '$bad': nothing on stdout");
}

###########################################################################
# The secrets-manager script, with a stub vault CLI on PATH.
###########################################################################
my $stubdir = "$tmp/bin";
mkdir $stubdir or die $!;
my $argslog = "$tmp/vault-args.log";
my $envlog = "$tmp/vault-env.log";
my $pidfile = "$tmp/vault-child.pid";
open my $stub, '>', "$stubdir/vault" or die $!;
print $stub <<"STUB";
#!/bin/sh
# Stub of `vault kv get -mount=M -field=F PATH`: logs its arguments and its
# environment, then answers from a fixed store.
printf '%s\\n' "\$*" >> '$argslog'
env >> '$envlog'
[ "\$1 \$2" = "kv get" ] || exit 64
path=\$5
case \$path in
postgres/secretenv/kek-v1) printf '%s' '$pass{1}' ;;
postgres/secretenv/kek-v2) printf '%s' '$pass{2}' ;;
postgres/secretenv/kek-v8) sleep 300 & echo \$! > '$pidfile'; wait ;;
postgres/secretenv/kek-v9) trap '' TERM; sleep 300 & echo \$! > '$pidfile'; while :; do wait; done ;;
*) echo "No value found at secret/data/\$path" >&2; exit 2 ;;
esac
STUB
close $stub;
chmod 0755, "$stubdir/vault";
my %venv = (PATH => "$stubdir:$ENV{PATH}");

for my $v (1, 2)
{
	($rc, $out, $err) = run_with_env(\%venv, $vault_cmd, $v);
	is($rc, 0, "vault script, version $v: exit 0");
	is($out, $pass{$v}, "vault script, version $v: the stored passphrase");
}
is( slurp_file($argslog),
	"kv get -mount=secret -field=passphrase postgres/secretenv/kek-v1\n"
	  . "kv get -mount=secret -field=passphrase postgres/secretenv/kek-v2\n",
	'vault script: the CLI is asked for <path>/kek-v<version>, field passphrase');

($rc, $out, $err) = run_with_env(\%venv, $vault_cmd, 3);
is($rc, 2, 'vault script, a version the store lacks: the CLI\'s non-zero exit');
is($out, '', 'vault script, a version the store lacks: nothing on stdout');

($rc, $out, $err) = run_with_env(\%venv, $vault_cmd, 'kek-v1');
isnt($rc, 0, 'vault script, a version that is not a number: refused');

my $args = slurp_file($argslog);
my $envs = slurp_file($envlog);
is(index($args, 'FILEPASS'), -1, 'no passphrase on the CLI\'s command line');
is(index($envs, 'FILEPASS'), -1, 'no passphrase in the CLI\'s environment');

# A CLI that hangs: the script's timeout ends it and its child.
sub process_gone
{
	my ($pid) = @_;
	for (1 .. 100)
	{
		my $stat = eval { slurp_file("/proc/$pid/stat") };
		return 1 unless defined $stat;                # gone
		return 1 if $stat =~ /^\d+ \(.*\) Z /;    # exited, not yet reaped
		sleep 0.05;
	}
	return 0;
}
for my $case ([ 8, 124, 'TERM' ], [ 9, 137, 'KILL: it ignores TERM' ])
{
	my ($v, $status, $how) = @$case;
	unlink $pidfile;
	($rc, $out, $err) =
	  run_with_env({ %venv, SECRETENV_PASSPHRASE_TIMEOUT => 1 }, $vault_cmd, $v);
	is($rc, $status, "vault script, hanging CLI: stopped by the timeout ($how), exit $status");
	is($out, '', 'vault script, hanging CLI: nothing on stdout');
	my $child = -e $pidfile ? slurp_file($pidfile) : '';
	chomp $child;
	like($child, qr/^\d+$/, 'vault script, hanging CLI: the CLI had started a child');
	ok($child ne '' && process_gone($child), 'vault script, hanging CLI: its child was killed too');
}

###########################################################################
# A preloaded server using the scripts.
###########################################################################
my $node = new_secretenv_node('contrib_commands', conf => qq{
secretenv.kek_passphrase_command = 'SECRETENV_KEY_DIR=$keydir $file_cmd %v'
secretenv.kek_version = 2
secretenv.kek_previous_version = 1
});
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION secretenv;
SELECT secretenv.secret_create('contrib_a', 'value-under-v2');
CREATE TABLE v1rows (encrypted_value bytea, wrapped_dek bytea, kek_version int4);
});
is($node->safe_psql('postgres',
		"SELECT secretenv.status()->>'using_default_passphrase', secretenv.secret_get('contrib_a')"),
	'false|value-under-v2', 'file script: the server uses its passphrase');

# Rows of version 1 for the later reads: written while version 1 is current.
$node->append_conf('postgresql.conf', qq{
secretenv.kek_version = 1
secretenv.kek_previous_version = 0
});
$node->reload;
$node->poll_query_until('postgres', 'SELECT secretenv.current_kek_version()', '1')
  or die 'version 1 did not become current';
$node->safe_psql('postgres',
	"INSERT INTO v1rows SELECT e.* FROM secretenv.secret_encrypt('value-under-v1'::text, 'id1'::text, 'n1') e");

my $read_both = q{
SELECT secretenv.secret_get('contrib_a'),
       (SELECT secretenv.secret_decrypt(encrypted_value, wrapped_dek, kek_version, 'id1'::text, 'n1') FROM v1rows),
       (SELECT kek_version FROM v1rows)};

# The vault script, stub on the server's PATH, for both versions.
$node->append_conf('postgresql.conf', qq{
secretenv.kek_passphrase_command = 'PATH=$stubdir:\$PATH $vault_cmd %v'
secretenv.kek_version = 2
secretenv.kek_previous_version = 1
});
$node->reload;
$node->poll_query_until('postgres', 'SELECT secretenv.current_kek_version()', '2')
  or die 'version 2 did not become current';
is($node->safe_psql('postgres', $read_both), 'value-under-v2|value-under-v1|1',
	'vault script: the same KEKs, both versions read');

# The literal passphrases: the scripts passed exactly these bytes.
$node->append_conf('postgresql.conf', qq{
secretenv.kek_passphrase_command = ''
secretenv.kek_passphrase = '$pass{2}'
secretenv.kek_previous_passphrase = '$pass{1}'
});
$node->reload;
$node->poll_query_until('postgres',
	"SELECT secretenv.secret_get('contrib_a') = 'value-under-v2'")
  or die 'the literal passphrases did not take effect';
is($node->safe_psql('postgres', $read_both), 'value-under-v2|value-under-v1|1',
	'the literal passphrases read the rows the scripts\' passphrases wrote');

$node->stop;
done_testing();
