#
# 020_reference_roundtrip.pl
#	  secretenv's bytes are the documented format, both ways.
#
# test/reference/mlflow_format.py implements the format of DESIGN.md
# section 1 with nothing but Python's `cryptography` package.  It is first
# checked against MLflow's own vectors ($SECRETENV_VECTORS), then:
#
#	- secretenv writes ~20 varied secrets (secret_create and secret_encrypt,
#	  uuid and text ids, text and jsonb values, empty and 10 kB values,
#	  Unicode names); the reference must decrypt every row to the value that
#	  was stored, and the lengths must be 60 / plaintext + 28 / the version;
#	- the reference encrypts the same values; secretenv must decrypt them,
#	  read them back through the managed store, and verify them.
#
# Phase 1 runs with MLflow's salt and a passphrase full of quotes,
# backslashes and non-ASCII; phase 2 with secretenv's default salt (no
# kek_salt setting at all) and another passphrase.  Each phase starts the
# server with its configuration.  Passphrases reach Python on stdin only.
#

use strict;
use warnings;

use Encode qw(decode_utf8 encode_utf8);
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;

my $PYTHON = -x '/usr/bin/python3' ? '/usr/bin/python3' : 'python3';
my $REFERENCE = 'test/reference/mlflow_format.py';
my $vector_dir = $ENV{SECRETENV_VECTORS} || 'test/vectors/mlflow';
my $json = JSON::PP->new->utf8->canonical;

my @phases = (
	{
		name => 'mlflow-salt',
		salt => 'mlflow-secrets-kek-v1-2025',
		salt_setting => 1,
		passphrase => "Ref roundtrip: p\x{e4}ssw\x{f6}rd 'quoted' \\ \"dq\" \x{1f511} 0123456789abcdef",
		version => 7
	},
	{
		name => 'default-salt',
		salt => 'secretenv-kek-v1',    # secretenv's documented default
		salt_setting => 0,
		passphrase => 'second-phase passphrase, 48 characters long.....',
		version => 258
	});

# The secrets.  kind: create = secretenv.secret_create (uuid id chosen by
# secretenv), encrypt = secretenv.secret_encrypt with the id given; type:
# text or jsonb (value is then JSON text).
my $big_ascii = join('', map { chr(33 + ($_ * 7919) % 94) } 1 .. 10240);
my $big_multibyte = ("\x{e9}" x 3000) . ("\x{1f511}" x 1000);
my @secrets = (
	{ tag => 'ascii', kind => 'create', type => 'text', name => 'openai-prod', value => 'sk-proj-4f9Qx2LmN8vR7tYz1Kp3Wq6Es0Da5Hb' },
	{ tag => 'unicode-name', kind => 'create', type => 'text', name => "cl\x{e9}-secr\x{e8}te-\x{43a}\x{43b}\x{44e}\x{447}-\x{5bc6}\x{94a5}-\x{1f511}", value => 'sk-live-unicode-name-0001' },
	{ tag => 'unicode-value', kind => 'create', type => 'text', name => 'unicode-value', value => "\x{43f}\x{430}\x{440}\x{43e}\x{43b}\x{44c}-\x{5bc6}\x{7801}-\x{1f510}-na\x{ef}ve-caf\x{e9}" },
	{ tag => 'empty', kind => 'create', type => 'text', name => 'empty-value', value => '' },
	{ tag => 'big-ascii', kind => 'create', type => 'text', name => 'big-ascii', value => $big_ascii },
	{ tag => 'big-multibyte', kind => 'encrypt', type => 'text', id => 'big-multibyte-id', name => 'big-multibyte', value => $big_multibyte },
	{ tag => 'specials', kind => 'create', type => 'text', name => 'specials', value => "line1\nline2\ttab 'single' \"double\" \\backslash \$\$dollar\$\$" },
	{ tag => 'short7', kind => 'create', type => 'text', name => 'short7', value => '1234567' },
	{ tag => 'numeric-looking', kind => 'create', type => 'text', name => 'numeric-looking', value => '12345678' },
	{ tag => 'json-create', kind => 'create', type => 'jsonb', name => 'json-create', value => qq({"api_key": "sk-json-0123456789", "port": 5432, "nested": {"a": [1, 2.5, null]}, "\x{fc}n\x{ef}": "\x{1f511} value", "flag": true}) },
	{ tag => 'json-empty', kind => 'create', type => 'jsonb', name => 'json-empty', value => '{}' },
	{ tag => 'json-escapes', kind => 'create', type => 'jsonb', name => 'json-escapes', value => qq({"quote\\"key": "back\\\\slash", "ctl": "line\\nbreak", "\x{43a}\x{43b}\x{44e}\x{447}": "\x{437}\x{43d}\x{430}\x{447}\x{435}\x{43d}\x{438}\x{435}"}) },
	{ tag => 'pipe-name', kind => 'create', type => 'text', name => 'team|prod', value => 'pipe-in-name-value-0123' },
	{ tag => 'store-id', kind => 'encrypt', type => 'text', id => 's-0123456789abcdef0123456789abcdef', name => 'mlflow-store-key', value => 'sk-store-style-id-0123456789' },
	{ tag => 'upper-uuid', kind => 'encrypt', type => 'text', id => 'AB2D6644-0F00-42DE-B7E4-00D5C254AC05', name => 'upper-uuid', value => 'upper-case uuid as text id' },
	{ tag => 'empty-id', kind => 'encrypt', type => 'text', id => '', name => 'no-id', value => 'value with an empty id' },
	{ tag => 'long-name', kind => 'create', type => 'text', name => ('n' x 300) . "\x{e9}", value => 'long-name-value' },
	{ tag => 'json-text-id', kind => 'encrypt', type => 'jsonb', id => 'provider:openai', name => 'json-text-id', value => '{"api_key": "sk-text-id-json", "org": "org-1"}' },
	{ tag => 'uuid-encrypt', kind => 'encrypt', type => 'text', id => '7f2f4854-c782-429f-b8bf-e3d58a21cc4d', id_type => 'uuid', name => 'explicit-uuid', value => 'sk-explicit-uuid-0001' },
	{ tag => 'json-uuid', kind => 'encrypt', type => 'jsonb', id => '0c5e7b1a-93f4-4c1e-8d2a-6f1b2c3d4e5f', id_type => 'uuid', name => 'json-uuid', value => '{"token": "tok-0123456789"}' },
);

# Run the reference implementation; JSON lines in, decoded replies out.
sub reference
{
	my ($args, @requests) = @_;
	my $in = join('', map { $json->encode($_) . "\n" } @requests);
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run([ $PYTHON, $REFERENCE, @$args ], '<', \$in, '>', \$out, '2>', \$err);
	diag("mlflow_format.py @$args: $err") if !$ok || $err ne '';
	return map { $json->decode($_) } grep { /\S/ } split /\n/, $out;
}

# --- The reference against MLflow's ground truth -------------------------

my @selftest = reference([ 'selftest', $vector_dir ]);
ok(scalar(@selftest) > 0, "reference implementation ran its self-test on $vector_dir");
ok($_->{ok}, "reference reproduces MLflow's vector: $_->{check}") for @selftest;
diag(scalar(@selftest) . ' self-test checks against MLflow vectors');

# --- The cluster -----------------------------------------------------------

my $node = new_secretenv_node('reference_roundtrip', keys_file => 1);

sub write_keys
{
	my ($phase) = @_;
	my $conf = '';
	$conf .= "secretenv.kek_salt = " . conf_string($phase->{salt}) . "\n" if $phase->{salt_setting};
	$conf .= "secretenv.kek_passphrase = " . conf_string($phase->{passphrase}) . "\n"
	  . "secretenv.kek_version = $phase->{version}\n";
	write_keys_file($node, $conf);
}

# Run SQL in UTF-8, stopping at the first error; checks that no error came
# and returns what it printed.
sub run_checked_sql
{
	my ($label, $sql) = @_;
	my ($out, $err) = ('', '');
	$node->psql('postgres', encode_utf8("SET client_encoding = 'UTF8';\n$sql"),
		stdout => \$out, stderr => \$err, on_error_stop => 1);
	my @errors = grep { /ERROR:/ } split /\n/, $err;
	is(scalar(@errors), 0, "$label: SQL ran without errors") or diag(join("\n", @errors));
	return $out;
}

write_keys($phases[0]);
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION secretenv');
install_result_helpers($node);
$node->safe_psql('postgres', <<'SQL');
CREATE TABLE ref_rows (tag text PRIMARY KEY, id text, name text, ev bytea, wd bytea, v int4, pt_hex text);
SQL

for my $pi (0 .. $#phases)
{
	my $phase = $phases[$pi];
	my $p = "phase $phase->{name}";
	if ($pi > 0)
	{
		write_keys($phase);
		$node->restart;
	}
	my $settings = $node->safe_psql('postgres',
		"SELECT current_setting('secretenv.kek_salt') || ' v' || secretenv.current_kek_version()");
	is($settings, "$phase->{salt} v$phase->{version}", "$p: server runs with salt $phase->{salt} and version $phase->{version}");

	# secretenv writes.
	my $sql = "DELETE FROM secretenv.secrets;\nTRUNCATE ref_rows;\n";
	for my $s (@secrets)
	{
		my $value = sql_string($s->{value}) . "::$s->{type}";
		my $pt = $s->{type} eq 'jsonb' ? "t_hex(($value)::text)" : 'NULL';
		if ($s->{kind} eq 'create')
		{
			$sql .= "SELECT secretenv.secret_create(" . sql_string($s->{name}) . ", $value) IS NOT NULL;\n"
			  . "INSERT INTO ref_rows SELECT " . sql_string($s->{tag}) . ", secret_id::text, secret_name, "
			  . "encrypted_value, wrapped_dek, kek_version, $pt FROM secretenv.secrets WHERE secret_name = "
			  . sql_string($s->{name}) . ";\n";
		}
		else
		{
			my $id = sql_string($s->{id}) . '::' . ($s->{id_type} // 'text');
			$sql .= "INSERT INTO ref_rows SELECT " . sql_string($s->{tag}) . ", " . sql_string($s->{id}) . ", "
			  . sql_string($s->{name}) . ", (e).encrypted_value, (e).wrapped_dek, (e).kek_version, $pt FROM "
			  . "(SELECT secretenv.secret_encrypt($value, $id, " . sql_string($s->{name}) . ") AS e) s;\n";
		}
	}
	$sql .= "SELECT tag, t_hex(id), t_hex(name), encode(ev, 'hex'), encode(wd, 'hex'), v, coalesce(pt_hex, '-') FROM ref_rows ORDER BY tag;\n";
	my $out = run_checked_sql("$p: secretenv writes " . scalar(@secrets) . ' secrets', $sql);

	my %row;
	for my $line (split /\n/, $out)
	{
		my @f = split /\|/, $line, -1;
		next unless @f == 7;
		$row{ $f[0] } = {
			id => decode_utf8(pack('H*', $f[1])),
			name => decode_utf8(pack('H*', $f[2])),
			ev => $f[3],
			wd => $f[4],
			v => $f[5],
			pt_hex => $f[6]
		};
	}
	is(scalar(keys %row), scalar(@secrets), "$p: one row read back per secret");

	# The plaintext each row must hold: the text as given, or the jsonb's text.
	my %expected;
	for my $s (@secrets)
	{
		my $r = $row{ $s->{tag} } || {};
		$expected{ $s->{tag} } = $s->{type} eq 'jsonb' ? ($r->{pt_hex} // '') : hex_utf8($s->{value});
	}

	# The reference decrypts secretenv's rows.
	my %key = (passphrase => $phase->{passphrase}, salt => $phase->{salt}, version => $phase->{version});
	my @requests = map {
		my $r = $row{ $_->{tag} } || { id => '', name => '', ev => '', wd => '' };
		+{
			%key,
			tag => $_->{tag},
			secret_id => $r->{id},
			secret_name => $r->{name},
			encrypted_value_hex => $r->{ev},
			wrapped_dek_hex => $r->{wd}
		}
	} @secrets;
	my %decrypted = map { ($_->{tag} => $_) } reference(['decrypt'], @requests);
	for my $s (@secrets)
	{
		my $t = $s->{tag};
		my $r = $row{$t} || {};
		my $d = $decrypted{$t} || {};
		my $ptlen = length($expected{$t}) / 2;
		is($d->{ok} ? $d->{plaintext_hex} : 'error: ' . ($d->{error} // 'none'),
			$expected{$t}, "$p/$t: reference decrypts secretenv's row to the stored value");
		is(length($r->{wd} // '') / 2, 60, "$p/$t: wrapped_dek is 60 bytes");
		is(length($r->{ev} // '') / 2, $ptlen + 28, "$p/$t: encrypted_value is $ptlen + 28 bytes");
		is($r->{v}, $phase->{version}, "$p/$t: kek_version is $phase->{version}");
	}

	# The reference is discriminating: wrong key inputs and a wrong AAD fail.
	my ($probe) = grep { $_->{tag} eq 'ascii' } @requests;
	my $other_salt = $phase->{salt} eq 'secretenv-kek-v1' ? 'mlflow-secrets-kek-v1-2025' : 'secretenv-kek-v1';
	my %controls = (
		'wrong passphrase' => [ { %$probe, passphrase => $phase->{passphrase} . 'x' }, 'unwrap' ],
		'wrong version' => [ { %$probe, version => $phase->{version} - 1 }, 'unwrap' ],
		'wrong salt' => [ { %$probe, salt => $other_salt }, 'unwrap' ],
		'wrong secret_name' => [ { %$probe, secret_name => $probe->{secret_name} . 'x' }, 'open' ]);
	my @names = sort keys %controls;
	my @replies = reference(['decrypt'], map { $controls{$_}[0] } @names);
	for my $i (0 .. $#names)
	{
		is($replies[$i]{error} // 'decrypted', $controls{ $names[$i] }[1],
			"$p: reference rejects the row with a $names[$i] ($controls{ $names[$i] }[1])");
	}

	# The reference writes; secretenv reads.
	my @enc_requests = map {
		my $r = $row{ $_->{tag} } || { id => '', name => '' };
		+{ %key, tag => $_->{tag}, secret_id => $r->{id}, secret_name => $r->{name}, plaintext_hex => $expected{ $_->{tag} } }
	} @secrets;
	my %sealed = map { ($_->{tag} => $_) } reference(['encrypt'], @enc_requests);
	$sql = "DELETE FROM secretenv.secrets;\n";
	my @stored;
	for my $s (@secrets)
	{
		my $t = $s->{tag};
		my $r = $row{$t} || { id => '', name => '' };
		my $e = $sealed{$t} || { encrypted_value_hex => '', wrapped_dek_hex => '' };
		my $uuid = ($s->{kind} eq 'create' || ($s->{id_type} // '') eq 'uuid');
		my $fn = $uuid ? 't_dec_uuid' : 't_dec_text';
		$sql .= "SELECT 'dec' || chr(9) || " . sql_string($t) . " || chr(9) || $fn('$e->{encrypted_value_hex}', '$e->{wrapped_dek_hex}', "
		  . "$phase->{version}, " . sql_string($r->{id}) . ", " . sql_string($r->{name}) . ");\n";
		if ($uuid)
		{
			# A row MLflow's format wrote, in the managed store.
			push @stored, $t;
			$sql .= "INSERT INTO secretenv.secrets (secret_id, secret_name, encrypted_value, wrapped_dek, kek_version) VALUES ("
			  . sql_string($r->{id}) . "::uuid, " . sql_string($r->{name}) . ", decode('$e->{encrypted_value_hex}', 'hex'), "
			  . "decode('$e->{wrapped_dek_hex}', 'hex'), $phase->{version});\n"
			  . "SELECT 'get' || chr(9) || " . sql_string($t) . " || chr(9) || t_get(" . sql_string($r->{name}) . ");\n";
		}
	}
	$sql .= "SELECT 'verify' || chr(9) || count(*) FROM secretenv.verify_secrets();\n";
	$out = run_checked_sql("$p: secretenv reads the reference's envelopes", $sql);
	my %res;
	for my $line (split /\n/, $out)
	{
		my ($what, $t, $v) = split /\t/, $line, 3;
		$res{"$what/$t"} = $v if defined $v;
		$res{verify} = $t if $what eq 'verify';
	}
	for my $s (@secrets)
	{
		my $t = $s->{tag};
		is($res{"dec/$t"}, "OK:$expected{$t}", "$p/$t: secretenv decrypts the reference's envelope");
	}
	for my $t (@stored)
	{
		is($res{"get/$t"}, "OK:$expected{$t}", "$p/$t: secret_get reads the reference's row from secretenv.secrets");
	}
	is($res{verify}, '0', "$p: verify_secrets accepts all " . scalar(@stored) . " rows the reference wrote");
}

$node->stop;
done_testing();
