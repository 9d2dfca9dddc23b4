# Copyright (c) secretenv contributors
#
# CALL secretenv.secret_reencrypt(since, batch_size) after a suspected KEK
# compromise (issue 14, DESIGN §7d): every secret last encrypted before
# `since` gets a fresh DEK and ciphertext under the current KEK (every
# encrypted_value and wrapped_dek changes, every plaintext stays), in
# batches, resumed after a kill -9; secrets written after `since` are left
# alone; a rotation does not count as an encryption.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use LifecycleTest;
use SecretenvTest;
use Test::More;

my $rows = 50000;

my $node = new_secretenv_node('reencrypt', conf => "restart_after_crash = on\n");
$node->start;
set_keys($node, 1, 0);
$node->safe_psql('postgres', 'CREATE EXTENSION secretenv');
generate_secrets($node, 'postgres', $rows);

# A rotation re-wraps the DEKs but is no re-encryption: last_updated_at stays.
$node->safe_psql('postgres', 'CREATE TABLE t_before AS SELECT secret_id, last_updated_at FROM secretenv.secrets');
set_keys($node, 2, 1);
$node->safe_psql('postgres', 'CALL secretenv.secret_rotate()');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM secretenv.secrets s JOIN t_before b USING (secret_id)
WHERE s.last_updated_at <> b.last_updated_at OR s.kek_version <> 2}), '0',
	'secret_rotate moved every row to version 2 without touching last_updated_at');

# The compromise: KEK 2 is replaced by KEK 3; everything encrypted so far
# must be re-encrypted.
set_keys($node, 3, 2);
my $since = $node->safe_psql('postgres', 'SELECT now()');
$node->safe_psql('postgres', q{
CREATE TABLE t_old AS SELECT secret_id, encrypted_value, wrapped_dek FROM secretenv.secrets;
SELECT secretenv.secret_create('written-after-since', 'value-after');
CREATE TABLE t_after AS SELECT secret_id, encrypted_value, wrapped_dek FROM secretenv.secrets
	WHERE secret_name = 'written-after-since';
});

my ($o, $e) = run_sql($node, 'postgres', "CALL secretenv.secret_reencrypt(now() + interval '1 hour')");
like($e, qr/ERROR:  22023:/, 'a cutoff in the future is refused (22023)');

my $half = start_half_way($node, 'postgres', 'secretenv.secrets', 'CALL secretenv.secret_reencrypt%',
	sub { start_sql($node, 'postgres', "CALL secretenv.secret_reencrypt('$since', 1000)") });
interrupt_half_way($node, 'postgres', $half, 'kill -9');

my $changed_sql = q{
SELECT count(*) FROM secretenv.secrets s JOIN t_old o USING (secret_id)
WHERE s.encrypted_value <> o.encrypted_value AND s.wrapped_dek <> o.wrapped_dek AND s.kek_version = 3};
my ($all, $on3, $decrypt) = split /\|/, secrets_state($node, 'postgres', 3);
is("$all|$decrypt", ($rows + 1) . '|' . $rows, 'after kill -9: every row decrypts to its value');
my $done = $node->safe_psql('postgres', $changed_sql);
ok($done > 0 && $done < $rows, "after kill -9: the committed batches stay re-encrypted ($done rows)");
is($node->safe_psql('postgres', q{
SELECT count(*) FROM secretenv.secrets s JOIN t_old o USING (secret_id)
WHERE (s.encrypted_value = o.encrypted_value) <> (s.wrapped_dek = o.wrapped_dek)}), '0',
	'after kill -9: no row has a new value with an old DEK or the reverse');

my ($rc, $out, $err) = finish_sql(start_sql($node, 'postgres', "CALL secretenv.secret_reencrypt('$since', 1000)"));
is($rc, 0, 'secret_reencrypt runs again after the kill');
like($err, qr/NOTICE:  batch \d+: \d+ rows re-encrypted/, 'a NOTICE per batch');
is(finished_count($err), $rows - $done, 'the second run re-encrypts only the rest');
is($node->safe_psql('postgres', $changed_sql), $rows,
	'every secret encrypted before the cutoff has a new encrypted_value and wrapped_dek under the new KEK');
is(secrets_state($node, 'postgres', 3), ($rows + 1) . '|' . ($rows + 1) . "|$rows",
	'every plaintext is unchanged');
is($node->safe_psql('postgres', q{
SELECT s.encrypted_value = a.encrypted_value AND s.wrapped_dek = a.wrapped_dek
FROM secretenv.secrets s JOIN t_after a USING (secret_id)}), 't',
	'a secret written after the cutoff is left alone');
is($node->safe_psql('postgres', "SELECT secretenv.secret_get('written-after-since')"), 'value-after',
	'and still reads');
($rc, $out, $err) = finish_sql(start_sql($node, 'postgres', "CALL secretenv.secret_reencrypt('$since')"));
is(finished_count($err), 0, 'a third run finds nothing left to re-encrypt');

$node->stop;
done_testing();
