
# Copyright (c) secretenv contributors
#
# The sample secretenv.kek_key_command scripts of contrib/ (issue 26):
# secretenv-key-aws-kms, secretenv-key-gcp-kms, secretenv-key-azure-keyvault
# and secretenv-key-vault-transit, each run against a stub of its CLI (aws,
# gcloud, az, vault on PATH) that checks the exact arguments it is given
# and prints what the real CLI prints:
#  - success: the script prints the 32-byte key as the server wants it
#    (base64 from aws and vault, hex from gcloud's raw bytes, padded base64
#    from az's base64url), one line, exit 0, and the CLI got exactly the
#    documented arguments for that version;
#  - expired credentials, a wrong key, throttling: the CLI's message on
#    stderr, nothing on stdout, the CLI's non-zero exit status;
#  - a version without an encrypted key file: exit 1, nothing on stdout;
#  - a preloaded server configured with each script in turn reads rows
#    written under another (the same KEK), shows the fingerprint
#    HMAC-SHA256(KEK, label) computed here, and a throttled KMS at a reload
#    makes the next write fail with 39000 naming the exit status.
use strict;
use warnings;

use FindBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Digest::SHA qw(hmac_sha256_hex);
use MIME::Base64 qw(encode_base64);
use lib $FindBin::RealBin;
use SecretenvTest;

my $contrib = "$FindBin::RealBin/../../contrib";
my %script = map { $_ => "$contrib/secretenv-key-$_" } qw(aws-kms gcp-kms azure-keyvault vault-transit);
ok(!grep({ !-x $_ } values %script), 'the four key command scripts exist and are executable');

my $tmp = PostgreSQL::Test::Utils::tempdir;
my $keydir = "$tmp/keys";
my $stubdir = "$tmp/bin";
mkdir $_ or die $! for $keydir, $stubdir;
my %key = (1 => random_hex() . random_hex() . substr(random_hex(), 0, 16),
	2 => random_hex() . random_hex() . substr(random_hex(), 0, 16));
sub b64 { return encode_base64(pack('H*', $_[0]), ''); }
sub b64url { (my $s = b64($_[0])) =~ tr{+/}{-_}; $s =~ s/=+$//; return $s; }

# The "encrypted" key files: what the setup in each script's header makes,
# here a stand-in that the stubs "decrypt".
for my $v (1, 2)
{
	for my $ext (qw(aws gcp azure vault))
	{
		open my $fh, '>', "$keydir/kek-v$v.$ext" or die $!;
		print $fh ($ext eq 'azure' ? b64("ab" x 16 . sprintf('%08x', $v)) : "stub-wrapped v$v $key{$v}");
		close $fh;
	}
}

# A stub CLI: logs its arguments, checks them against the documented call
# for the version they name, then answers as the mode file says.
sub write_stub
{
	my ($name, $check, $ok, %fail) = @_;
	my $fails = join '', map { "  '$_' => [$fail{$_}[0], q{$fail{$_}[1]}],\n" } sort keys %fail;
	open my $fh, '>', "$stubdir/$name" or die $!;
	print $fh qq{#!/usr/bin/perl
use strict; use warnings;
open my \$log, '>>', '$stubdir/$name.log' or die; print \$log join(' ', \@ARGV), "\\n"; close \$log;
my \$mode = do { local \@ARGV = ('$stubdir/mode'); <> } // 'ok'; chomp \$mode;
my \$keydir = '$keydir';
my (\$v, \@expect) = (sub { $check })->();
if (!defined \$v || join("\\x1f", \@ARGV) ne join("\\x1f", \@expect))
{
	print STDERR "stub $name: unexpected arguments\\n";
	exit 99;
}
my %fail = (
$fails);
if (\$fail{\$mode}) { print STDERR \$fail{\$mode}[1]; exit \$fail{\$mode}[0]; }
my %key = (1 => '$key{1}', 2 => '$key{2}');
$ok
};
	close $fh;
	chmod 0755, "$stubdir/$name";
}

write_stub('aws', q{
	my ($v) = (($ARGV[7] // '') =~ /^secretenv_kek_version=(\d+)$/);
	return ($v, 'kms', 'decrypt', '--key-id', 'alias/secretenv', '--ciphertext-blob', "fileb://$keydir/kek-v$v.aws",
		'--encryption-context', "secretenv_kek_version=$v", '--output', 'text', '--query', 'Plaintext');
}, q{
use MIME::Base64;
my ($blob) = $ARGV[5] =~ m{^fileb://(.*)$};
my ($bv, $k) = (do { local @ARGV = ($blob); <> } =~ /^stub-wrapped v(\d+) (\w+)$/);
if ($bv != $v) { print STDERR "\nAn error occurred (InvalidCiphertextException) when calling the Decrypt operation: \n"; exit 254; }
print encode_base64(pack('H*', $k), ''), "\n";
},
	expired => [254, "\nAn error occurred (ExpiredTokenException) when calling the Decrypt operation: The security token included in the request is expired\n"],
	wrongkey => [254, "\nAn error occurred (IncorrectKeyException) when calling the Decrypt operation: The key ID in the request does not identify a CMK that can perform this operation.\n"],
	throttled => [254, "\nAn error occurred (ThrottlingException) when calling the Decrypt operation (reached max retries: 2): Rate exceeded\n"]);

write_stub('gcloud', q{
	my ($v) = (($ARGV[5] // '') =~ /kek-v(\d+)\.gcp$/);
	return ($v, 'kms', 'decrypt', '--location=global', '--keyring=secretenv', '--key=kek',
		"--ciphertext-file=$keydir/kek-v$v.gcp", '--plaintext-file=-');
}, q{
my ($blob) = $ARGV[5] =~ /^--ciphertext-file=(.*)$/;
my ($k) = (do { local @ARGV = ($blob); <> } =~ /^stub-wrapped v\d+ (\w+)$/);
binmode STDOUT;
print pack('H*', $k);
},
	expired => [1, "ERROR: (gcloud.kms.decrypt) There was a problem refreshing your current auth tokens: ('invalid_grant: Token has been expired or revoked.', {'error': 'invalid_grant', 'error_description': 'Token has been expired or revoked.'})\nPlease run:\n\n  \$ gcloud auth login\n\nto obtain new credentials.\n"],
	wrongkey => [1, "ERROR: (gcloud.kms.decrypt) INVALID_ARGUMENT: Decryption failed: the ciphertext is invalid.\n"],
	throttled => [1, "ERROR: (gcloud.kms.decrypt) RESOURCE_EXHAUSTED: Quota exceeded for quota metric 'Cryptographic requests' and limit 'Cryptographic requests per minute' of service 'cloudkms.googleapis.com'.\n"]);

write_stub('az', q{
	use MIME::Base64;
	my $wrapped = $ARGV[12] // '';
	my ($v) = (unpack('H*', decode_base64($wrapped)) =~ /^(?:ab){16}([0-9a-f]{8})$/);
	$v = hex($v) if defined $v;
	my $file = defined $v ? do { local @ARGV = ("$keydir/kek-v$v.azure"); <> } : '';
	return ($v, 'keyvault', 'key', 'decrypt', '--vault-name', 'my-vault', '--name', 'secretenv-kek',
		'--algorithm', 'RSA-OAEP-256', '--data-type', 'base64', '--value', $file, '--query', 'result', '--output', 'tsv');
}, q{
use MIME::Base64;
(my $r = encode_base64(pack('H*', $key{$v}), '')) =~ tr{+/}{-_};
$r =~ s/=+$//;
print "$r\n";
},
	expired => [1, "ERROR: AADSTS700082: The refresh token has expired due to inactivity. The token was issued on 2026-06-01T09:00:00.0000000Z and was inactive for 90.00:00:00.\nInteractive authentication is needed. Please run:\naz login --scope https://vault.azure.net/.default\n"],
	wrongkey => [1, "ERROR: (BadParameter) The parameter is incorrect.\nCode: BadParameter\nMessage: The parameter is incorrect.\n"],
	throttled => [1, "ERROR: (Throttled) Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached\nCode: Throttled\nMessage: Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached\n"]);

write_stub('vault', q{
	my ($v) = (($ARGV[3] // '') =~ /kek-v(\d+)\.vault$/);
	return ($v, 'write', '-field=plaintext', 'transit/decrypt/secretenv', "ciphertext=\@$keydir/kek-v$v.vault");
}, q{
use MIME::Base64;
my ($blob) = $ARGV[3] =~ /^ciphertext=\@(.*)$/;
my ($k) = (do { local @ARGV = ($blob); <> } =~ /^stub-wrapped v\d+ (\w+)$/);
print encode_base64(pack('H*', $k), '');
},
	expired => [2, "Error writing data to transit/decrypt/secretenv: Error making API request.\n\nURL: PUT http://127.0.0.1:8200/v1/transit/decrypt/secretenv\nCode: 403. Errors:\n\n* permission denied\n"],
	wrongkey => [2, "Error writing data to transit/decrypt/secretenv: Error making API request.\n\nURL: PUT http://127.0.0.1:8200/v1/transit/decrypt/secretenv\nCode: 400. Errors:\n\n* cipher: message authentication failed\n"],
	throttled => [2, "Error writing data to transit/decrypt/secretenv: Error making API request.\n\nURL: PUT http://127.0.0.1:8200/v1/transit/decrypt/secretenv\nCode: 429. Errors:\n\n* request path \"transit/decrypt/secretenv\": rate limit quota exceeded\n"]);

sub set_mode { open my $fh, '>', "$stubdir/mode" or die; print $fh "$_[0]\n"; close $fh; }
$ENV{PATH} = "$stubdir:$ENV{PATH}";
$ENV{SECRETENV_KEY_DIR} = $keydir;

sub run_script
{
	my (@cmd) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run(\@cmd, '<', \undef, '>', \$out, '2>', \$err);
	return ($? >> 8, $out, $err);
}
sub last_args { my @l = split /\n/, slurp_file("$stubdir/$_[0].log"); return $l[-1]; }

my %cli = ('aws-kms' => 'aws', 'gcp-kms' => 'gcloud', 'azure-keyvault' => 'az', 'vault-transit' => 'vault');
my %expected_out = (
	'aws-kms' => sub { b64($key{ $_[0] }) . "\n" },
	'gcp-kms' => sub { $key{ $_[0] } . "\n" },
	'azure-keyvault' => sub { b64($key{ $_[0] }) . "\n" },
	'vault-transit' => sub { b64($key{ $_[0] }) });
my %expected_args = (
	'aws-kms' => sub { "kms decrypt --key-id alias/secretenv --ciphertext-blob fileb://$keydir/kek-v$_[0].aws --encryption-context secretenv_kek_version=$_[0] --output text --query Plaintext" },
	'gcp-kms' => sub { "kms decrypt --location=global --keyring=secretenv --key=kek --ciphertext-file=$keydir/kek-v$_[0].gcp --plaintext-file=-" },
	'azure-keyvault' => sub { "keyvault key decrypt --vault-name my-vault --name secretenv-kek --algorithm RSA-OAEP-256 --data-type base64 --value " . slurp_file("$keydir/kek-v$_[0].azure") . " --query result --output tsv" },
	'vault-transit' => sub { "write -field=plaintext transit/decrypt/secretenv ciphertext=\@$keydir/kek-v$_[0].vault" });
my %fail_status = ('aws-kms' => 254, 'gcp-kms' => 1, 'azure-keyvault' => 1, 'vault-transit' => 2);
my %fail_text = (
	'aws-kms' => { expired => 'ExpiredTokenException', wrongkey => 'IncorrectKeyException', throttled => 'ThrottlingException' },
	'gcp-kms' => { expired => 'gcloud auth login', wrongkey => 'INVALID_ARGUMENT', throttled => 'RESOURCE_EXHAUSTED' },
	'azure-keyvault' => { expired => 'AADSTS700082', wrongkey => 'BadParameter', throttled => 'Throttled' },
	'vault-transit' => { expired => 'Code: 403', wrongkey => 'Code: 400', throttled => 'Code: 429' });

for my $name (sort keys %script)
{
	set_mode('ok');
	for my $v (1, 2)
	{
		my ($rc, $out, $err) = run_script($script{$name}, $v);
		is("$rc|$out|$err", '0|' . $expected_out{$name}->($v) . '|', "$name v$v: the key, one line, exit 0");
		is(last_args($cli{$name}), $expected_args{$name}->($v), "$name v$v: $cli{$name} got the documented arguments");
	}
	for my $mode (qw(expired wrongkey throttled))
	{
		set_mode($mode);
		my ($rc, $out, $err) = run_script($script{$name}, 1);
		is("$rc|$out", "$fail_status{$name}|", "$name, $mode: exit $fail_status{$name}, nothing on stdout");
		like($err, qr/\Q$fail_text{$name}{$mode}\E/, "$name, $mode: the CLI's message on stderr");
	}
	set_mode('ok');
	my ($rc, $out, $err) = run_script($script{$name}, 7);
	is("$rc|$out", '1|', "$name: a version without a key file fails, nothing on stdout");
	like($err, qr/no (encrypted|wrapped) (data )?key for version 7/, "$name: and says why");
}

# The server, with each script in turn: the same KEK.
my $fp = substr(hmac_sha256_hex('secretenv kek fingerprint', pack('H*', $key{1})), 0, 16);
my $node = new_secretenv_node('contrib_keys',
	conf => "secretenv.kek_key_command = '$script{'aws-kms'} %v'\n");
$node->start;
$node->safe_psql('postgres', q{CREATE EXTENSION secretenv; SELECT secretenv.secret_create('k', 'kms-value')});
my $gen = 0;
for my $name (sort keys %script)
{
	reload_generation($node, "secretenv.kek_key_command = '$script{$name} %v'\n", ++$gen);
	is($node->safe_psql('postgres', q{SELECT secretenv.secret_get('k') || ' ' || (secretenv.status()->'kek_fingerprints'->>'1')}),
		"kms-value $fp", "server with $name: the row reads, the fingerprint is the data key's");
}
set_mode('throttled');
reload_generation($node, "secretenv.kek_key_command = '$script{'vault-transit'} %v'\n", ++$gen);
my ($o, $e) = run_sql($node, 'postgres', q{SELECT secretenv.secret_create('k2', 'never')});
like($e, qr/ERROR:  39000: could not obtain the KEK of version 1 from its key command\nDETAIL:  secretenv\.kek_key_command failed: it exited with exit code 2\./,
	'a throttled KMS at a reload: the next write fails with 39000 and the exit status');
like(slurp_file($node->logfile), qr/rate limit quota exceeded/, "the CLI's message is in the server log");
is($node->safe_psql('postgres', 'SELECT count(*) FROM secretenv.secrets'), '1', 'nothing was written');
$node->stop;
done_testing();
