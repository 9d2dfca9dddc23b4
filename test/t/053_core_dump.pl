
# Copyright (c) secretenv contributors
#
# Memory hygiene (issue 4, DESIGN §5), where a test can prove it.
#
# 1. Core dumps.  A backend that holds derived KEKs (current and previous;
#    a decrypt has just run) and the postmaster that derived them are
#    dumped with gdb's gcore, which honours MADV_DONTDUMP ("dd" in VmFlags
#    of /proc/PID/smaps).  Two key sources, as docs/security.md
#    states them:
#    a. passphrases as settings in postgresql.conf: the KEK bytes, computed
#       independently in Python (PBKDF2-HMAC-SHA256, salt || be32(version),
#       600 000), are in neither core; the settings' own strings hold
#       placeholders (found in the cores).  Freed, unwiped copies of the
#       passphrases that PostgreSQL's configuration file reader leaves in
#       the heap may or may not be in the cores: that is counted and shown,
#       not asserted either way (docs/security.md says so).
#    b. the passphrase command: neither the passphrases nor the KEKs are in
#       the core of the backend or of the postmaster.
#    Controls prove the search finds what is there: the row's wrapped DEK
#    (a buffer the backend just read) is found in the same core, and a
#    second core taken with gdb's "set dump-excluded-mappings on" (which
#    ignores MADV_DONTDUMP) does contain both KEKs: they are in memory, and
#    the search would find them if they were dumped.  If gcore cannot
#    attach here (no ptrace), that part is skipped, saying why.
#
# 1c. Locks per process: key_config()'s key_memory_locked in a backend is
#    true exactly when every secure mapping of that backend (the "dd"
#    mappings of its /proc/PID/smaps) is locked ("lo"), although fork did
#    not carry the postmaster's locks over.
#
# 2. Memory growth.  10 000 failing decrypts (wrong AAD) in one session,
#    caught one by one, then 500 failing top-level statements: neither
#    the backend's memory contexts nor its resident set may grow beyond a
#    small bound (an EVP context leaked per failure would be ~1 kB each).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;
use IPC::Run;

my $pass1 = 'coredump-test-passphrase-v1-4e2c8a6f0b3d9e1c7a5f';
my $pass2 = 'coredump-test-passphrase-v2-8b6d4f2a0c9e7b5d3f1a';
my $salt = 'secretenv-kek-v1';

# audit = writes: the reads below start no audit writer, whose first
# catalog reads would evict the one page of secretenv.secrets from these
# 1 MB of shared buffers, taking away the control's copy of the wrapped DEK.
my $node = new_secretenv_node('hygiene', conf => qq{
shared_buffers = 1MB
secretenv.audit = writes
secretenv.kek_passphrase = '$pass1'
secretenv.kek_version = 1
});
$node->start;

# A row under each version: v1 first, then make v2 current and v1 previous.
$node->safe_psql('postgres',
	"CREATE EXTENSION secretenv; SELECT secretenv.secret_create('v1_row', 'value-under-v1')");
$node->append_conf('postgresql.conf', kek_settings($pass2, 2, $pass1, 1));
$node->restart;
my $wrapped_hex = $node->safe_psql(
	'postgres', q{
SELECT secretenv.secret_create('v2_row', 'value-under-v2');
SELECT encode(wrapped_dek, 'hex') FROM secretenv.secrets WHERE secret_name = 'v2_row';
});
($wrapped_hex) = $wrapped_hex =~ /^([0-9a-f]{120})$/m;
is($node->safe_psql('postgres',
		'SELECT string_agg(kek_version::text, \',\' ORDER BY secret_name) FROM secretenv.secrets'),
	'1,2', 'one row under each KEK version');

my $tmp = PostgreSQL::Test::Utils::tempdir;

# The KEKs, computed outside PostgreSQL.
my %kek = (1 => kek_hex($pass1, $salt, 1), 2 => kek_hex($pass2, $salt, 2));
like($kek{$_}, qr/^[0-9a-f]{64}$/, "KEK v$_ computed independently") for (1, 2);

my $s = $node->background_psql('postgres', on_error_stop => 0);

my $pid = session_query($s, 'SELECT pg_backend_pid()');
is( session_query($s,
		"SELECT string_agg(secretenv.secret_decrypt(encrypted_value, wrapped_dek, kek_version, secret_id, secret_name), ',' ORDER BY secret_name) FROM secretenv.secrets"
	),
	'value-under-v1,value-under-v2',
	'the session decrypts under both KEKs (both derived and in use)');
is(session_query($s, "SELECT secretenv.status()->>'preloaded'"),
	'true', 'preloaded');

###########################################################################
# 1. Core dumps
###########################################################################
# VmFlags of the anonymous MADV_DONTDUMP mappings of a process: secure
# memory.  (The kernel's own [vvar] mappings are "dd" too; they have a name.)
sub secure_mapping_flags
{
	my ($p) = @_;
	my $smaps = eval { slurp_file("/proc/$p/smaps") } // '';
	my @flags;
	for my $block (split /^(?=[0-9a-f]+-[0-9a-f]+ )/m, $smaps)
	{
		my ($header) = $block =~ /^(.*)$/m;
		my ($vmflags) = $block =~ /^VmFlags:(.*)$/m;
		next unless defined $vmflags && $vmflags =~ /\bdd\b/;
		next unless $header =~ /^\S+ \S+ \S+ \S+ 0\s*$/;    # no path, no [name]
		push @flags, $vmflags;
	}
	return @flags;
}

sub smaps_dontdump
{
	my ($p) = @_;
	return scalar secure_mapping_flags($p);
}

sub take_core
{
	my ($p) = @_;
	my ($out, $err) = ('', '');
	my $prefix = "$tmp/core_$p";
	my $ok = eval {
		IPC::Run::run([ 'gcore', '-o', $prefix, $p ],
			'>', \$out, '2>', \$err, IPC::Run::timeout(120));
	};
	my $file = "$prefix.$p";
	return (-s $file ? $file : undef, "$out$err");
}

# A core that ignores MADV_DONTDUMP (gdb >= 8.3).
sub take_full_core
{
	my ($p) = @_;
	my ($out, $err) = ('', '');
	my $file = "$tmp/fullcore_$p";
	eval {
		IPC::Run::run(
			[
				'gdb', '-nx', '-batch', '-p', $p,
				'-ex', 'set dump-excluded-mappings on',
				'-ex', "gcore $file"
			],
			'<', \undef, '>', \$out, '2>', \$err, IPC::Run::timeout(120));
	};
	return (-s $file ? $file : undef, "$out$err");
}

sub found
{
	my ($core, $bytes) = @_;
	return index($$core, $bytes) >= 0 ? 1 : 0;
}

sub occurrences
{
	my ($core, $bytes) = @_;
	my ($n, $at) = (0, -1);
	$n++ while ($at = index($$core, $bytes, $at + 1)) >= 0;
	return $n;
}

# One assertion on the passphrases in a core, by key source.
sub passphrase_check
{
	my ($core, $where, $from_command) = @_;
	my $copies = occurrences($core, $pass1) + occurrences($core, $pass2);
	if ($from_command)
	{
		is($copies, 0, "$where: no passphrase in the core");
	}
	else
	{
		like($$core, qr/secretenv-placeholder:[0-9a-f]{32}/,
			"$where: the passphrase settings hold placeholders");
		diag("$where: $copies freed copies of the passphrases left by the configuration file reader");
	}
}

my $gcore = `command -v gcore 2>/dev/null`;

# The cores of backend $bpid and of the postmaster, 10 assertions.
sub check_cores
{
	my ($label, $bpid, $wrapped, $from_command) = @_;
  SKIP:
	{
		skip 'gcore (gdb) is not installed', 10 unless $gcore;
		my ($file, $msg) = take_core($bpid);
		skip "gcore cannot attach to a backend here (ptrace not permitted?): $msg", 10
		  unless $file;

		my $dd = smaps_dontdump($bpid);
		cmp_ok($dd, '>=', 1,
			"$label, backend: a mapping is marked MADV_DONTDUMP (\"dd\" in /proc/PID/smaps)");
		my $core = slurp_file($file);
		diag(sprintf('%s, backend core: %d bytes, %d dontdump mapping(s)', $label, length($core), $dd));
		ok(found(\$core, pack('H*', $wrapped)),
			"$label, control: the wrapped DEK the backend just read IS in the backend core");
		is(found(\$core, pack('H*', $kek{2})), 0, "$label: the current KEK (v2) is NOT in the backend core");
		is(found(\$core, pack('H*', $kek{1})), 0, "$label: the previous KEK (v1) is NOT in the backend core");
		passphrase_check(\$core, "$label, backend", $from_command);
		undef $core;
		unlink $file;

	  SKIP:
		{
			($file, $msg) = take_full_core($bpid);
			skip "control core with dump-excluded-mappings not available: $msg", 1 unless $file;
			$core = slurp_file($file);
			ok(found(\$core, pack('H*', $kek{2})) && found(\$core, pack('H*', $kek{1})),
				"$label, control: a core that ignores MADV_DONTDUMP DOES contain both KEKs");
			undef $core;
			unlink $file;
		}

		# The postmaster derived the KEKs and keeps them for future backends.
		my ($pmpid) = slurp_file($node->data_dir . '/postmaster.pid') =~ /^(\d+)/;
		($file, $msg) = take_core($pmpid);
		skip "gcore cannot attach to the postmaster: $msg", 4 unless $file;
		cmp_ok(smaps_dontdump($pmpid), '>=', 1,
			"$label, postmaster: a mapping is marked MADV_DONTDUMP");
		$core = slurp_file($file);
		diag(sprintf('%s, postmaster core: %d bytes', $label, length($core)));
		is(found(\$core, pack('H*', $kek{2})), 0, "$label: the current KEK is NOT in the postmaster core");
		is(found(\$core, pack('H*', $kek{1})), 0, "$label: the previous KEK is NOT in the postmaster core");
		passphrase_check(\$core, "$label, postmaster", $from_command);
		undef $core;
		unlink $file;
	}
	return;
}

check_cores('settings', $pid, $wrapped_hex, 0);
is(session_query($s, "SELECT secretenv.secret_get('v2_row')"),
	'value-under-v2', 'the dumped backend carries on');

###########################################################################
# 2. Memory growth under failing decrypts
###########################################################################
sub rss_kb
{
	my $status = slurp_file("/proc/$pid/status");
	my ($kb) = $status =~ /^VmRSS:\s+(\d+) kB/m;
	return $kb;
}
sub contexts_bytes
{
	return scalar session_query($s, 'SELECT sum(total_bytes) FROM pg_backend_memory_contexts');
}

session_query($s,
	q{CREATE FUNCTION fail_decrypts(n int, wrong_kek bool) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
	r record;
	failed int := 0;
BEGIN
	SELECT * INTO r FROM secretenv.secrets WHERE secret_name = 'v2_row';
	FOR i IN 1 .. n LOOP
		BEGIN
			IF wrong_kek THEN
				PERFORM secretenv.secret_decrypt(r.encrypted_value,
					set_byte(r.wrapped_dek, 30, get_byte(r.wrapped_dek, 30) # 1),
					r.kek_version, r.secret_id, r.secret_name);
			ELSE
				PERFORM secretenv.secret_decrypt(r.encrypted_value, r.wrapped_dek,
					r.kek_version, r.secret_id, 'wrong-name-' || i);
			END IF;
		EXCEPTION WHEN SQLSTATE '22S03' OR SQLSTATE '22S02' THEN
			failed := failed + 1;
		END;
	END LOOP;
	RETURN failed;
END $$});

# Warm up: caches, allocator, plpgsql.
is(session_query($s, 'SELECT fail_decrypts(1000, false) + fail_decrypts(200, true)'),
	'1200', 'warm-up: 1 200 decrypts fail as intended');
my ($rss0, $ctx0) = (rss_kb(), contexts_bytes());

is(session_query($s, 'SELECT fail_decrypts(10000, false)'),
	'10000', '10 000 decrypts with a wrong AAD fail (22S03), caught one by one');
is(session_query($s, 'SELECT fail_decrypts(2000, true)'),
	'2000', '2 000 decrypts with a corrupted wrapped DEK fail (22S02)');
my ($rss1, $ctx1) = (rss_kb(), contexts_bytes());

# 500 failing top-level statements (each aborts its own transaction).
my $script = "$tmp/fail.sql";
PostgreSQL::Test::Utils::append_to_file($script,
	"SELECT secretenv.secret_decrypt(encrypted_value, wrapped_dek, kek_version, secret_id, 'wrong') FROM secretenv.secrets WHERE secret_name = 'v2_row';\n"
	  x 500);
session_query($s, "\\set VERBOSITY sqlstate\n\\i $script\n\\set VERBOSITY default");
my $n_err = () = $s->{stderr} =~ /ERROR:  22S03/g;
is($n_err, 500, '500 failing top-level statements each raised 22S03');
my ($rss2, $ctx2) = (rss_kb(), contexts_bytes());

diag(sprintf(
	'memory: after warm-up RSS %d kB, contexts %d B; after 12 000 caught failures RSS %+d kB, contexts %+d B; after 500 failed statements RSS %+d kB, contexts %+d B',
	$rss0, $ctx0, $rss1 - $rss0, $ctx1 - $ctx0, $rss2 - $rss1, $ctx2 - $ctx1));
cmp_ok($ctx1 - $ctx0, '<', 256 * 1024,
	'memory contexts grow < 256 kB over 12 000 caught failures');
cmp_ok($rss1 - $rss0, '<', 2048, 'resident set grows < 2 MB over 12 000 caught failures');
cmp_ok($ctx2 - $ctx1, '<', 256 * 1024,
	'memory contexts grow < 256 kB over 500 failed statements');
cmp_ok($rss2 - $rss1, '<', 2048, 'resident set grows < 2 MB over 500 failed statements');

$s->quit;

###########################################################################
# 1b. The passphrase command; 1c. locks per process
###########################################################################
# postgresql.conf must not hold the passphrases at all: rewrite it without them.
my $conf = $node->data_dir . '/postgresql.conf';
my $conf_text = slurp_file($conf);
$conf_text =~ s/^secretenv\.kek_(previous_)?passphrase\s*=.*\n//mg;
my $command = "$tmp/passphrase.sh";
PostgreSQL::Test::Utils::append_to_file($command,
	"#!/bin/sh\ncase \"\$1\" in 1) echo '$pass1' ;; 2) echo '$pass2' ;; *) exit 1 ;; esac\n");
chmod 0700, $command or die "chmod: $!";
open(my $fh, '>', $conf) or die "open $conf: $!";
print $fh $conf_text, "secretenv.kek_passphrase_command = '$command %v'\n";
close $fh;
unlike(slurp_file($conf), qr/\Q$pass1\E|\Q$pass2\E/, 'postgresql.conf holds no passphrase now');
$node->restart;

$s = $node->background_psql('postgres', on_error_stop => 0);
$pid = session_query($s, 'SELECT pg_backend_pid()');
is( session_query($s,
		"SELECT string_agg(secretenv.secret_decrypt(encrypted_value, wrapped_dek, kek_version, secret_id, secret_name), ',' ORDER BY secret_name) FROM secretenv.secrets"
	),
	'value-under-v1,value-under-v2',
	'command: the session decrypts under both KEKs');
check_cores('command', $pid, $wrapped_hex, 1);

# Every secure mapping of the backend: how many, and whether all are locked.
sub secure_mappings
{
	my ($p) = @_;
	my @flags = secure_mapping_flags($p);
	return (scalar @flags, (grep { !/\blo\b/ } @flags) ? 'false' : 'true');
}
my ($n_secure, $truth) = secure_mappings($pid);
cmp_ok($n_secure, '>=', 1, 'backend: it has secure mappings');
is(session_query($s, "SELECT secretenv.key_config()->>'key_memory_locked'"),
	$truth, "backend: key_memory_locked is what /proc/PID/smaps says of its $n_secure secure mapping(s) ($truth)");
diag("RLIMIT_MEMLOCK of the backend: "
	  . join(' ', grep { /locked memory/ } split /\n/, slurp_file("/proc/$pid/limits")));

$s->quit;
$node->stop;
done_testing();
