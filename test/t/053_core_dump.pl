
# Copyright (c) secretenv contributors
#
# Memory hygiene (issue 4, DESIGN §5), where a test can prove it.
#
# 1. Core dumps.  A backend that holds derived KEKs (current and previous;
#    a decrypt has just run) and the postmaster that derived them are
#    dumped with gdb's gcore, which honours MADV_DONTDUMP (the "dd" VmFlag
#    of /proc/PID/smaps).  The KEK bytes, computed independently in Python
#    (PBKDF2-HMAC-SHA256, salt || be32(version), 600 000), must not be in
#    either core.  Controls prove the search finds what is there: the
#    passphrase string (ordinary GUC memory) and the row's wrapped DEK (a
#    buffer the backend just read) are found in the same core, and a second
#    core taken with gdb's "set dump-excluded-mappings on" (which ignores
#    MADV_DONTDUMP) does contain both KEKs: they are in memory, and the
#    search would find them if they were dumped.  If gcore
#    cannot attach here (no ptrace), that part is skipped, saying why.
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
use IPC::Run;

my $pass1 = 'coredump-test-passphrase-v1-4e2c8a6f0b3d9e1c7a5f';
my $pass2 = 'coredump-test-passphrase-v2-8b6d4f2a0c9e7b5d3f1a';
my $salt = 'secretenv-kek-v1';

my $node = PostgreSQL::Test::Cluster->new('hygiene');
$node->init(extra => [ '--encoding=UTF8', '--no-locale' ]);
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'secretenv'
shared_buffers = 1MB
secretenv.kek_passphrase = '$pass1'
secretenv.kek_version = 1
});
$node->start;

# A row under each version: v1 first, then make v2 current and v1 previous.
$node->safe_psql('postgres',
	"CREATE EXTENSION secretenv; SELECT secretenv.secret_create('v1_row', 'value-under-v1')");
$node->append_conf(
	'postgresql.conf', qq{
secretenv.kek_passphrase = '$pass2'
secretenv.kek_version = 2
secretenv.kek_previous_passphrase = '$pass1'
secretenv.kek_previous_version = 1
});
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
sub kek_hex
{
	my ($pass, $version) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run(
		[
			'/usr/bin/python3', '-c',
			'import hashlib, sys; print(hashlib.pbkdf2_hmac("sha256", sys.argv[1].encode(), sys.argv[2].encode() + int(sys.argv[3]).to_bytes(4, "big"), 600000).hex())',
			$pass, $salt, $version
		],
		'>', \$out, '2>', \$err) or die "python3 failed: $err";
	chomp $out;
	return $out;
}
my %kek = (1 => kek_hex($pass1, 1), 2 => kek_hex($pass2, 2));
like($kek{$_}, qr/^[0-9a-f]{64}$/, "KEK v$_ computed independently") for (1, 2);

my $s = $node->background_psql('postgres', on_error_stop => 0);

# Run SQL in the session; returns stdout; stderr is in $s->{stderr}.
sub sq
{
	my ($sql) = @_;
	$s->{stderr} = '';
	return scalar $s->query($sql);
}
my $pid = sq('SELECT pg_backend_pid()');
is( sq(
		"SELECT string_agg(secretenv.secret_decrypt(encrypted_value, wrapped_dek, kek_version, secret_id, secret_name), ',' ORDER BY secret_name) FROM secretenv.secrets"
	),
	'value-under-v1,value-under-v2',
	'the session decrypts under both KEKs (both derived and in use)');
is(sq("SELECT secretenv.status()->>'preloaded'"),
	'true', 'preloaded');

###########################################################################
# 1. Core dumps
###########################################################################
sub smaps_dontdump
{
	my ($p) = @_;
	my $smaps = eval { slurp_file("/proc/$p/smaps") } // '';
	my $n = () = $smaps =~ /^VmFlags:.*\bdd\b/mg;
	return $n;
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

SKIP:
{
	my $gcore = `command -v gcore 2>/dev/null`;
	skip 'gcore (gdb) is not installed', 10 unless $gcore;
	my ($file, $msg) = take_core($pid);
	skip "gcore cannot attach to a backend here (ptrace not permitted?): $msg", 10
	  unless $file;

	my $dd = smaps_dontdump($pid);
	cmp_ok($dd, '>=', 1,
		'backend: a mapping is marked MADV_DONTDUMP ("dd" in /proc/PID/smaps)');

	my $core = slurp_file($file);
	diag(sprintf('backend core: %d bytes, %d dontdump mapping(s)', length($core), $dd));
	ok(found(\$core, $pass2), 'control: the passphrase string (GUC memory) IS in the backend core');
	ok(found(\$core, pack('H*', $wrapped_hex)),
		'control: the wrapped DEK the backend just read IS in the backend core');
	is(found(\$core, pack('H*', $kek{2})), 0, 'the current KEK (v2) is NOT in the backend core');
	is(found(\$core, pack('H*', $kek{1})), 0, 'the previous KEK (v1) is NOT in the backend core');
	undef $core;
	unlink $file;

	($file, $msg) = take_full_core($pid);
	if ($file)
	{
		$core = slurp_file($file);
		ok(found(\$core, pack('H*', $kek{2})) && found(\$core, pack('H*', $kek{1})),
			'control: a core that ignores MADV_DONTDUMP DOES contain both KEKs');
		undef $core;
		unlink $file;
	}
	else
	{
		pass("control core with dump-excluded-mappings not available: $msg");
	}

	# The postmaster derived the KEKs and keeps them for future backends.
	my ($pmpid) = slurp_file($node->data_dir . '/postmaster.pid') =~ /^(\d+)/;
	($file, $msg) = take_core($pmpid);
	skip "gcore cannot attach to the postmaster: $msg", 4 unless $file;
	cmp_ok(smaps_dontdump($pmpid), '>=', 1,
		'postmaster: a mapping is marked MADV_DONTDUMP');
	$core = slurp_file($file);
	diag(sprintf('postmaster core: %d bytes', length($core)));
	ok(found(\$core, $pass2), 'control: the passphrase string IS in the postmaster core');
	is(found(\$core, pack('H*', $kek{2})), 0, 'the current KEK is NOT in the postmaster core');
	is(found(\$core, pack('H*', $kek{1})), 0, 'the previous KEK is NOT in the postmaster core');
	undef $core;
	unlink $file;
}
is(sq("SELECT secretenv.secret_get('v2_row')"),
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
	return sq(
		'SELECT sum(total_bytes) FROM pg_backend_memory_contexts');
}

sq(
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
is(sq('SELECT fail_decrypts(1000, false) + fail_decrypts(200, true)'),
	'1200', 'warm-up: 1 200 decrypts fail as intended');
my ($rss0, $ctx0) = (rss_kb(), contexts_bytes());

is(sq('SELECT fail_decrypts(10000, false)'),
	'10000', '10 000 decrypts with a wrong AAD fail (22S03), caught one by one');
is(sq('SELECT fail_decrypts(2000, true)'),
	'2000', '2 000 decrypts with a corrupted wrapped DEK fail (22S02)');
my ($rss1, $ctx1) = (rss_kb(), contexts_bytes());

# 500 failing top-level statements (each aborts its own transaction).
my $script = "$tmp/fail.sql";
PostgreSQL::Test::Utils::append_to_file($script,
	"SELECT secretenv.secret_decrypt(encrypted_value, wrapped_dek, kek_version, secret_id, 'wrong') FROM secretenv.secrets WHERE secret_name = 'v2_row';\n"
	  x 500);
sq("\\set VERBOSITY sqlstate\n\\i $script\n\\set VERBOSITY default");
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
$node->stop;
done_testing();
