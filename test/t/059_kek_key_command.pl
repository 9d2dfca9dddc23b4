
# Copyright (c) secretenv contributors
#
# secretenv.kek_key_command and kek_previous_key_command (issue 26, DESIGN
# §8d): a command that prints the 32-byte KEK itself (64 hex digits or
# base64, one line), used without PBKDF2.
#
#  - rows written under a passphrase decrypt once that version's source is
#    a key command printing PBKDF2(passphrase) as computed here in Python
#    (hex, and base64): the printed bytes are the KEK, no PBKDF2 is applied
#    to them; the version's fingerprint is unchanged and equals
#    HMAC-SHA256(KEK, label) computed here; status() says "key command";
#  - rotation from a key-command version to a passphrase version and from
#    a passphrase version to a key-command version (the previous version's
#    key command is kek_previous_key_command, the same command with %v);
#    retirement of a key-command version;
#  - every bad output (short, long, not hex nor base64, base64 of the
#    wrong length, two lines, a NUL byte, no line, a timeout, a non-zero
#    exit) makes the next write fail with 39000 and a DETAIL saying which,
#    and writes nothing; the key itself never appears in any message;
#  - the key command settings are hidden from other roles, from
#    pg_settings, and refused by ALTER SYSTEM;
#  - a version with a key command and a passphrase (or the passphrase
#    command) fails with F0000 "has two sources"; at start the server
#    refuses to start;
#  - preloaded: the postmaster runs the command at start and at reload, a
#    new backend does not; parallel workers use the inherited KEK and never
#    run it;
#  - without preload: the backend runs it; the same KEK gives the same
#    fingerprint on both servers; a rotation between two key-command
#    versions; a bad output gives 39000.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Digest::SHA qw(hmac_sha256_hex);
use MIME::Base64 qw(encode_base64);
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;

my $salt = 'secretenv-kek-v1';
my $tmp = PostgreSQL::Test::Utils::tempdir;
my $calls = "$tmp/calls.log";
my $mode_file = "$tmp/mode";

my $pass1 = 'keycmd-test-passphrase-v1-4f9a1c7e2b8d3a6f0e5c';
my $pass2 = 'keycmd-test-passphrase-v2-9d2e7b4a1f6c8e3d5a0b';
my $k1 = kek_hex($pass1, $salt, 1);
my $k3 = random_hex() . random_hex() . substr(random_hex(), 0, 16);
my %key_line = (1 => $k1, 3 => encode_base64(pack('H*', $k3), ''));
sub fingerprint { return substr(hmac_sha256_hex('secretenv kek fingerprint', pack('H*', $_[0])), 0, 16); }

# The key command: logs the version it was asked for, then prints the key
# line of that version, or misbehaves as the mode file says.
my $keycmd = write_script($tmp, 'keycmd.sh', qq{
echo "\$1" >> '$calls'
mode=\$(cat '$mode_file' 2>/dev/null || echo good)
key=\$(cat '$tmp/key_'"\$1") || exit 5
case "\$mode" in
  good) echo "\$key" ;;
  short) echo "\$key" | cut -c1-62 ;;
  long) echo "\${key}ab" ;;
  nothex) echo "\$key" | tr '0-4' '_' ;;
  b64len) echo 'QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ' ;;
  b64short) echo "\$key" | cut -c1-40 ;;
  twolines) echo "\$key"; echo "\$key" ;;
  nul) printf '%s\\000\\n' "\$key" ;;
  empty) echo ;;
  slow) sleep 10; echo "\$key" ;;
  exit3) echo "\$key"; exit 3 ;;
esac
});
sub set_key { my ($v, $line) = @_; open my $fh, '>', "$tmp/key_$v" or die; print $fh "$line\n"; close $fh; }
sub set_mode { open my $fh, '>', $mode_file or die; print $fh "$_[0]\n"; close $fh; }
sub runs { return -e $calls ? scalar(split /\n/, slurp_file($calls)) : 0; }
set_key($_, $key_line{$_}) for keys %key_line;
set_mode('good');

my $node = new_secretenv_node('keycmd', conf => "secretenv.kek_passphrase = '$pass1'\n"
	  . "secretenv.kek_passphrase_command_timeout = 2\nmax_worker_processes = 8\nmax_parallel_workers = 8\n");
$node->start;
$node->safe_psql('postgres', q{CREATE EXTENSION secretenv;
SELECT secretenv.secret_create('a', 'value-a'), secretenv.secret_create('b', 'value-b')});
my $fp1 = $node->safe_psql('postgres', q{SELECT secretenv.status()->'kek_fingerprints'->>'1'});
is($fp1, fingerprint($k1), 'the fingerprint of the PBKDF2 KEK is HMAC-SHA256(KEK, label)');

my $gen = 0;
sub reconf { my ($n, $conf) = @_; reload_generation($n, $conf, ++$gen); }
my $reads = q{SELECT secretenv.secret_get('a') || ' ' || secretenv.secret_get('b')};

# Version 1 from the key command (hex of the PBKDF2 KEK).
reconf($node, "secretenv.kek_passphrase = ''\nsecretenv.kek_key_command = '$keycmd %v'\n");
is(runs(), 1, 'preloaded: the postmaster ran the key command once at the reload');
is($node->safe_psql('postgres', $reads), 'value-a value-b',
	'rows written under the passphrase decrypt with its KEK printed in hex by the key command');
is($node->safe_psql('postgres', q{SELECT (s->>'key_source') || ' ' || (s->'kek_fingerprints'->>'1') FROM secretenv.status() s}),
	"key command $fp1", 'status(): source "key command", same fingerprint');
is(runs(), 1, 'new backends did not run the key command');
$node->safe_psql('postgres', q{SELECT secretenv.secret_create('c', 'value-c')});

# Parallel workers use the KEK they inherited.
$node->safe_psql('postgres', q{CREATE TABLE t AS SELECT i, (e).encrypted_value ev, (e).wrapped_dek wd, (e).kek_version v
  FROM (SELECT i, secretenv.secret_encrypt('value-' || i, i::text, 'n' || i) e FROM generate_series(1, 400) i) s;
ALTER TABLE t SET (parallel_workers = 2); VACUUM ANALYZE t;});
my $runs_before = runs();
my $plan = $node->safe_psql('postgres', q{SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0; SET max_parallel_workers_per_gather = 2; SET parallel_leader_participation = off;
EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) SELECT count(*) FROM t WHERE secretenv.secret_decrypt(ev, wd, v, i::text, 'n' || i) = 'value-' || i});
my $count = $node->safe_psql('postgres', q{SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0; SET max_parallel_workers_per_gather = 2; SET parallel_leader_participation = off;
SELECT count(*) FROM t WHERE secretenv.secret_decrypt(ev, wd, v, i::text, 'n' || i) = 'value-' || i});
like($plan, qr/Workers Launched: [12]/, 'the decrypts ran in parallel workers');
is($count, '400', 'parallel workers decrypt every row with the inherited KEK');
is(runs(), $runs_before, 'no parallel worker ran the key command');

# Bad outputs: 39000, a DETAIL saying which, nothing written.
my %bad = (
	short => 'its first line has 62 hex digits, not 64',
	long => 'its first line has 66 hex digits, not 64',
	nothex => 'its first line is neither 64 hex digits nor base64 of 32 bytes',
	b64len => 'its first line is base64 of 45 bytes, not 32',
	twolines => 'it printed more than one line',
	nul => 'its output contains a NUL byte',
	empty => 'it printed no key line',
	slow => 'it timed out after 2 s and was killed',
	exit3 => 'it exited with exit code 3');
my $rows = $node->safe_psql('postgres', 'SELECT count(*) FROM secretenv.secrets');
for my $mode (sort keys %bad)
{
	set_mode($mode);
	reconf($node, "secretenv.kek_key_command = '$keycmd %v'\n");
	my ($out, $err) = run_sql($node, 'postgres', "SELECT secretenv.secret_create('bad-$mode', 'never')");
	like($err, qr/ERROR:  39000: could not obtain the KEK of version 1 from its key command\nDETAIL:  secretenv\.kek_key_command failed: \Q$bad{$mode}\E\./,
		"$mode output: 39000, DETAIL \"$bad{$mode}\"");
	unlike($err, qr/\Q$k1\E|\Q${\substr($k1, 0, 16)}\E/i, "$mode output: the key is not in the message");
	is($node->safe_psql('postgres', 'SELECT count(*) FROM secretenv.secrets'), $rows, "$mode output: nothing written");
}
my $log = slurp_file($node->logfile);
unlike($log, qr/\Q${\substr($k1, 0, 16)}\E/i, 'the key never appears in the server log');
like($log, qr/LOG:  could not obtain the KEK of version 1 from its key command/,
	'the postmaster logs the failed run at reload');
set_mode('good');
reconf($node, "secretenv.kek_key_command = '$keycmd %v'\n");
is($node->safe_psql('postgres', $reads), 'value-a value-b', 'fixing the command and reloading recovers');

# The settings are superuser-only, hidden and refused by ALTER SYSTEM.
$node->safe_psql('postgres', 'CREATE ROLE plain_user LOGIN');
for my $setting (qw(secretenv.kek_key_command secretenv.kek_previous_key_command))
{
	my ($o, $e) = run_sql($node, 'postgres', "SET ROLE plain_user; SHOW $setting");
	like($e, qr/ERROR:  42501: (?:must be superuser or have privileges of pg_read_all_settings|permission denied) to examine "\Q$setting\E"/,
		"$setting: hidden from a role that is not superuser");
	($o, $e) = run_sql($node, 'postgres', "ALTER SYSTEM SET $setting = 'echo x'");
	like($e, qr/ERROR:  .*cannot be changed/, "$setting: refused by ALTER SYSTEM");
}
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_settings WHERE name LIKE 'secretenv.kek%key_command'}), '0',
	'the key command settings are no rows of pg_settings');

# Two sources for one version.
reconf($node, "secretenv.kek_passphrase = '$pass1'\n");
my ($o, $e) = run_sql($node, 'postgres', q{SELECT secretenv.secret_get('a')});
like($e, qr/ERROR:  F0000: KEK version 1 has two sources\nDETAIL:  secretenv\.kek_key_command is set, and so is secretenv\.kek_passphrase\./,
	'key command and passphrase for one version: F0000');
is($node->safe_psql('postgres', q{SELECT secretenv.status()->>'key_source'}), 'two sources', 'status() says "two sources"');
reconf($node, "secretenv.kek_passphrase = ''\nsecretenv.kek_passphrase_command = 'echo x'\n");
($o, $e) = run_sql($node, 'postgres', q{SELECT secretenv.secret_get('a')});
like($e, qr/ERROR:  F0000: KEK version 1 has two sources\nDETAIL:  secretenv\.kek_key_command is set, and so is secretenv\.kek_passphrase_command\./,
	'key command and passphrase command: F0000');
reconf($node, "secretenv.kek_passphrase_command = ''\n");

# Rotation to a passphrase version, retiring the key-command version.
reconf($node, "secretenv.kek_key_command = ''\nsecretenv.kek_passphrase = '$pass2'\nsecretenv.kek_version = 2\n"
	  . "secretenv.kek_previous_key_command = '$keycmd %v'\nsecretenv.kek_previous_version = 1\nsecretenv.min_kek_version = 2\n");
($o, $e) = run_sql($node, 'postgres', q{SELECT secretenv.secret_get('a')});
like($e, qr/22S05/, 'a retired key-command version does not read');
$node->safe_psql('postgres', 'CALL secretenv.secret_rotate()');
is($node->safe_psql('postgres', q{SELECT string_agg(DISTINCT kek_version::text, ',') FROM secretenv.secrets}), '2',
	'rotation from the key-command version 1 to the passphrase version 2');
is($node->safe_psql('postgres', $reads . q{ || ' ' || secretenv.secret_get('c')}), 'value-a value-b value-c',
	'rows read after the rotation');
is($node->safe_psql('postgres', q{SELECT (s->>'key_source') || ' ' || (s->>'previous_key_source') FROM secretenv.status() s}),
	'passphrase key command', 'status(): current "passphrase", previous "key command"');

# Rotation from the passphrase version to the key-command version 3 (base64).
my $before = runs();
reconf($node, "secretenv.kek_passphrase = ''\nsecretenv.kek_key_command = '$keycmd %v'\nsecretenv.kek_version = 3\n"
	  . "secretenv.kek_previous_key_command = ''\nsecretenv.kek_previous_passphrase = '$pass2'\nsecretenv.kek_previous_version = 2\n");
$node->safe_psql('postgres', 'CALL secretenv.secret_rotate()');
is($node->safe_psql('postgres', q{SELECT string_agg(DISTINCT kek_version::text, ',') FROM secretenv.secrets}), '3',
	'rotation from the passphrase version 2 to the key-command version 3');
is($node->safe_psql('postgres', $reads), 'value-a value-b', 'rows read under the base64 key');
is($node->safe_psql('postgres', q{SELECT secretenv.status()->'kek_fingerprints'->>'3'}), fingerprint($k3),
	'the fingerprint of version 3 is that of the printed key');
my $ev = $node->safe_psql('postgres', q{SELECT encode(wrapped_dek, 'hex') FROM secretenv.secrets WHERE secret_name = 'a'});
my $check = `python3 -c 'import sys; from cryptography.hazmat.primitives.ciphers.aead import AESGCM; w=bytes.fromhex(sys.argv[1]); print(len(AESGCM(bytes.fromhex(sys.argv[2])).decrypt(w[:12], w[12:], None)))' $ev $k3 2>&1`;
chomp $check;
is($check, '32', 'the wrapped DEK opens with the printed key itself (AES-GCM in Python)');
$node->stop;

# Two sources at start: the server refuses to start.
$node->append_conf('postgresql.conf', "secretenv.kek_passphrase = '$pass1'\n");
my $started = $node->start(fail_ok => 1);
ok(!$started, 'a version with two sources at start: the server does not start');
like(slurp_file($node->logfile), qr/KEK version 3 has two sources/, 'the log says why');

# Without preload.
unlink $calls;
my $plain = new_secretenv_node('keycmd_plain', preload => 0,
	conf => "secretenv.kek_key_command = '$keycmd %v'\nsecretenv.kek_version = 1\n");
$plain->start;
$plain->safe_psql('postgres', q{CREATE EXTENSION secretenv; SELECT secretenv.secret_create('p', 'value-p')});
is($plain->safe_psql('postgres', q{SELECT secretenv.status()->'kek_fingerprints'->>'1'}), $fp1,
	'without preload: the same key gives the same fingerprint as on the other server');
is($plain->safe_psql('postgres', q{SELECT secretenv.secret_get('p')}), 'value-p', 'without preload: a row reads back');
reconf($plain, "secretenv.kek_version = 3\nsecretenv.kek_previous_key_command = '$keycmd %v'\nsecretenv.kek_previous_version = 1\n");
$plain->safe_psql('postgres', 'CALL secretenv.secret_rotate()');
is($plain->safe_psql('postgres', q{SELECT kek_version || ' ' || secretenv.secret_get('p') FROM secretenv.secrets}),
	'3 value-p', 'without preload: rotation between two key-command versions');
set_mode('b64short');
reconf($plain, "secretenv.kek_key_command = '$keycmd %v'\n");
($o, $e) = run_sql($plain, 'postgres', q{SELECT secretenv.secret_create('q', 'never')});
like($e, qr/ERROR:  39000: could not obtain the KEK of version 3 from its key command\nDETAIL:  secretenv\.kek_key_command failed: its first line is base64 of 30 bytes, not 32\./,
	'without preload: a bad output gives 39000');
is($plain->safe_psql('postgres', 'SELECT count(*) FROM secretenv.secrets'), '1', 'without preload: nothing written');
$plain->stop;
done_testing();
