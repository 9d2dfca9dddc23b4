
# Copyright (c) secretenv contributors
#
# Key health (issue 8, DESIGN §4b): a server restarted with a different
# passphrase is seen at once.
#
#  - restart with another passphrase: the first secretenv call of a backend
#    warns, naming the version ('the configured KEK of version 1 does not
#    open existing secrets'), once per backend; status() shows that version
#    with kek_opens_sample = false; verify_secrets() lists every row with
#    'wrong KEK or corrupted wrapped DEK'; masked_secrets still lists every
#    row;
#  - restart with the right passphrase: no warning, verify_secrets() empty;
#  - the same through a reload, in an existing backend (once per
#    configuration change);
#  - with two versions, only the one whose KEK is wrong is named.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;

my $right = 'health-right-passphrase-7a1c9e3b5d2f8e4a6c0b1d3f';
my $wrong = 'health-wrong-passphrase-0f8e6d4c2b1a9e7d5c3b1a0f';
my $other = 'health-other-passphrase-v2-5b3d1f9e7c5a3e1d9b7f5c';
my $nrows = 5;
my $warning = qr/WARNING:  (?:22S02: )?the configured KEK of version 1 does not open existing secrets/;

my $node = new_secretenv_node('health', conf => "secretenv.kek_version = 1\n");

sub set_passphrase
{
	my ($pass, $gen) = @_;
	$node->append_conf('postgresql.conf',
		"secretenv.kek_passphrase = '$pass'\nsecretenv_test.generation = $gen\n");
}

set_passphrase($right, 1);
$node->start;
$node->safe_psql(
	'postgres', qq{
CREATE EXTENSION secretenv;
SELECT secretenv.secret_create('text_' || i, 'value-' || i) FROM generate_series(1, $nrows - 1) i;
SELECT secretenv.secret_create('json_1', '{"k": "v"}'::jsonb);
});
my $names = $node->safe_psql('postgres',
	'SELECT string_agg(secret_name, \',\' ORDER BY secret_name) FROM secretenv.secrets');

###########################################################################
# Restart with the wrong passphrase.
###########################################################################
set_passphrase($wrong, 2);
$node->restart;

my ($out, $err) = run_sql($node, 'postgres', "SELECT secretenv.secret_get('text_1');\nSELECT secretenv.secret_get('text_2');");
like($err, $warning, 'wrong passphrase: the first secretenv call warns, naming version 1');
my $n_warn = () = $err =~ /does not open existing secrets/g;
is($n_warn, 1, 'the warning is given once per backend (two failing reads, one warning)');
like($err, qr/ERROR:  22S02: could not decrypt secret: wrong KEK or corrupted wrapped DEK/,
	'the read itself fails with 22S02');
unlike($err, qr/value-1/, 'no plaintext in what the client sees');

# The first call of other backends, whatever it is, warns too.
for my $first (
	[ 'status()', 'SELECT secretenv.status()' ],
	[ 'verify_secrets()', 'SELECT count(*) FROM secretenv.verify_secrets()' ],
	[ 'secret_create()', "SELECT secretenv.secret_create('new_row', 'new-value') IS NOT NULL" ],
	[ 'secret_encrypt()', "SELECT secretenv.secret_encrypt('x', 'id', 'name') IS NOT NULL" ],
	[ 'secret_decrypt()', "SELECT secretenv.secret_decrypt(encrypted_value, wrapped_dek, kek_version, secret_id, secret_name) FROM secretenv.secrets WHERE secret_name = 'json_1'" ])
{
	($out, $err) = run_sql($node, 'postgres', $first->[1]);
	like($err, $warning, "a backend whose first secretenv call is $first->[0] warns");
}
# Fail closed: the KEK of version 1 does not open version-1 rows, so nothing
# new is written under it (a row written now would be lost once the right
# passphrase is back).
($out, $err) = run_sql($node, 'postgres', "SELECT secretenv.secret_create('new_row', 'new-value')");
like($err, qr/ERROR:  22S02: refusing to encrypt under the KEK of version 1/,
	'wrong passphrase: secret_create is refused with 22S02');
is($node->safe_psql('postgres', "SELECT count(*) FROM secretenv.secrets WHERE secret_name = 'new_row'"),
	'0', 'wrong passphrase: nothing was written');

($out, $err) = run_sql($node, 'postgres', "SELECT secretenv.status()->'versions'");
is($out,
	qq([{"rows": $nrows, "kek_version": 1, "kek_configured": true, "kek_opens_sample": false}]),
	'status(): version 1 configured but its KEK does not open the sample');

($out, $err) = run_sql($node, 'postgres',
	"SELECT count(*), string_agg(secret_name, ',' ORDER BY secret_name), string_agg(DISTINCT failed_check, ','), string_agg(DISTINCT kek_version::text, ',') FROM secretenv.verify_secrets()"
);
is($out, "$nrows|$names|wrong KEK or corrupted wrapped DEK|1",
	'verify_secrets(): every row, with failed_check "wrong KEK or corrupted wrapped DEK"');
($out, $err) = run_sql($node, 'postgres',
	"SELECT count(*) FROM secretenv.verify_secrets() v JOIN secretenv.secrets s USING (secret_id, secret_name)");
is($out, $nrows, 'verify_secrets(): each reported (secret_id, secret_name) is a real row');
($out, $err) = run_sql($node, 'postgres',
	"SELECT count(*), count(masked_value), string_agg(secret_name, ',' ORDER BY secret_name) FROM secretenv.masked_secrets"
);
is($out, "$nrows|$nrows|$names", 'masked_secrets still lists every row, with its mask');
is($err, '', 'masked_secrets reads without warning or error (it never decrypts)');

$node->stop;
like(slurp_file($node->logfile),
	qr/WARNING:  the configured KEK of version 1 does not open existing secrets/,
	'the warning is in the server log');

###########################################################################
# Restart with the right passphrase.
###########################################################################
set_passphrase($right, 3);
$node->start;
($out, $err) = run_sql($node, 'postgres', "SELECT secretenv.secret_get('text_1')");
is($out, 'value-1', 'right passphrase: reads work again');
is($err, '', 'right passphrase: no warning');
($out, $err) = run_sql($node, 'postgres', 'SELECT count(*) FROM secretenv.verify_secrets()');
is($out, '0', 'right passphrase: verify_secrets() is empty');
($out, $err) = run_sql($node, 'postgres', "SELECT secretenv.status()->'versions'->0->>'kek_opens_sample'");
is($out, 'true', 'right passphrase: status() shows the sample opening');

###########################################################################
# Through a reload, in an existing backend: once per configuration change.
###########################################################################
my $s = $node->background_psql('postgres', on_error_stop => 0);
($out, $err) = session_query($s, "SELECT secretenv.secret_get('text_2')");
is($out, 'value-2', 'existing session reads under the right passphrase');

ok(reload_generation($node, "secretenv.kek_passphrase = '$wrong'\n", 4, $s),
	'existing session applied the reload to the wrong passphrase');
($out, $err) = session_query($s, "SELECT secretenv.secret_get('text_3')");
like($err, $warning, 'after the reload, the next call of the existing session warns');
($out, $err) = session_query($s, "SELECT secretenv.secret_get('text_4')");
unlike($err, qr/does not open existing secrets/, '... once: the following call does not');

ok(reload_generation($node, "secretenv.kek_passphrase = '$right'\n", 5, $s),
	'existing session applied the reload back to the right passphrase');
($out, $err) = session_query($s, "SELECT secretenv.secret_get('text_3')");
is($out, 'value-3', 'existing session reads again');
is($err, '', '... without warning');
$s->quit;

###########################################################################
# Two versions: only the one with the wrong KEK is named.
###########################################################################
$node->append_conf('postgresql.conf', kek_settings($other, 2, $right, 1));
$node->restart;
$node->safe_psql('postgres', "SELECT secretenv.secret_create('v2_row', 'value-v2')");
$node->append_conf('postgresql.conf', "secretenv.kek_previous_passphrase = '$wrong'\n");
$node->restart;
($out, $err) = run_sql($node, 'postgres', "SELECT secretenv.secret_get('v2_row')");
is($out, 'value-v2', 'two versions: the healthy version 2 still reads');
like($err, $warning, 'two versions: the warning names version 1');
unlike($err, qr/KEK of version 2 does not open/, 'two versions: version 2 is not named');
($out, $err) = run_sql($node, 'postgres',
	"SELECT string_agg(format('%s:%s:%s', v->>'kek_version', v->>'rows', v->>'kek_opens_sample'), ',') FROM jsonb_array_elements(secretenv.status()->'versions') v"
);
is($out, "1:$nrows:false,2:1:true", 'two versions: status() flags version 1 only');
($out, $err) = run_sql($node, 'postgres',
	"SELECT count(*), min(kek_version), max(kek_version) FROM secretenv.verify_secrets()");
is($out, "$nrows|1|1", 'two versions: verify_secrets() lists only the version-1 rows');

$node->stop;
done_testing();
