# Rotation of 10 000 rows, end to end, and proof that no call runs PBKDF2:
# rows under KEK v1; reconfigure (v2 current, v1 previous); reload;
# secret_rotate_all() returns 10 000, then 0; every value byte-identical and
# decryptable; the KEK derivations of each process are counted.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;

my $rows = 10_000;
my $first = 'first-passphrase-0123456789-abcdefghij';
my $second = 'second-passphrase-0123456789-abcdefghij';
my $node = new_secretenv_node('rotation', keys_file => 1);

sub set_keys
{
	my ($conf, $generation) = @_;
	write_keys_file($node, $conf . "secretenv_test.generation = $generation\n");
}

set_keys(kek_settings($first, 1), 1);
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION secretenv');

$node->safe_psql('postgres', qq{
	INSERT INTO secretenv.secrets (secret_id, secret_name, encrypted_value, wrapped_dek, kek_version, masked_value)
	SELECT id, name, (e).encrypted_value, (e).wrapped_dek, (e).kek_version, to_jsonb(secretenv.secret_mask(v))
	FROM (SELECT gen_random_uuid() id, 'bulk-' || i name, 'value-' || i || '-' || md5(i::text) v
		  FROM generate_series(1, $rows) i) s,
		 LATERAL (SELECT secretenv.secret_encrypt(s.v, s.id, s.name) e) enc;
	CREATE TABLE before_rotation AS SELECT secret_id, encrypted_value, wrapped_dek FROM secretenv.secrets;
});

my $check_plaintexts = qq{
	SELECT count(*) FROM secretenv.decrypted_secrets
	WHERE value = 'value-' || substr(secret_name, 6) || '-' || md5(substr(secret_name, 6))};
is($node->safe_psql('postgres', $check_plaintexts), $rows, 'all rows decrypt before rotation');

# With preload, a new connection decrypting every row derived nothing.
is($node->safe_psql('postgres', qq{
	SELECT count(secretenv.secret_get(secret_name)) FROM secretenv.secrets;
	SELECT secretenv.key_config() ->> 'kek_derivations_in_this_process'}),
	"$rows\n0", "$rows decrypts in a new connection ran PBKDF2 0 times");

# An existing session must follow the reload.
my $session = $node->background_psql('postgres');
$session->query_safe('SELECT secretenv.secret_get(\'bulk-1\')');

set_keys(kek_settings($second, 2, $first, 1), 2);
$node->reload;
$node->poll_query_until('postgres', "SELECT current_setting('secretenv_test.generation') = '2'")
  or die 'reload not seen';

is($node->safe_psql('postgres', 'SELECT secretenv.secret_rotate_all()'), $rows, "rotation re-wraps $rows rows");
is($node->safe_psql('postgres', 'SELECT secretenv.secret_rotate_all()'), '0', 'a second rotation re-wraps none');

is($node->safe_psql('postgres', qq{
	SELECT count(*) FILTER (WHERE s.encrypted_value = b.encrypted_value),
		   count(*) FILTER (WHERE s.wrapped_dek <> b.wrapped_dek),
		   count(*) FILTER (WHERE s.kek_version = 2)
	FROM secretenv.secrets s JOIN before_rotation b USING (secret_id)}),
	"$rows|$rows|$rows", 'values unchanged, every DEK re-wrapped, all at version 2');
is($node->safe_psql('postgres', $check_plaintexts), $rows, 'all rows decrypt after rotation');
is($node->safe_psql('postgres', 'SELECT count(*) FROM secretenv.verify_secrets()'), '0', 'verify_secrets finds nothing');

# The session that lived through the reload reads the rotated rows, and
# paid no derivation: it took the KEKs the postmaster published (issue 26).
is($session->query_safe(qq{
	SELECT secretenv.secret_get('bulk-2');
	SELECT secretenv.key_config() ->> 'kek_derivations_in_this_process'}),
	'value-2-' . $node->safe_psql('postgres', "SELECT md5('2')") . "\n0",
	'an existing session follows the reload with no derivation of its own');
$session->quit;

# Retire the previous KEK: the rotated rows need only the current one.
set_keys(kek_settings($second, 2), 3);
$node->reload;
$node->poll_query_until('postgres', "SELECT current_setting('secretenv_test.generation') = '3'")
  or die 'reload not seen';
is($node->safe_psql('postgres', $check_plaintexts), $rows, 'all rows decrypt with the previous KEK removed');
is($node->safe_psql('postgres', q{SELECT secretenv.status() -> 'rotation_complete'}), 'true', 'status says rotation is complete');

$node->stop;
done_testing();
