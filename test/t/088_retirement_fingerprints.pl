# Copyright (c) secretenv contributors
#
# secretenv.min_kek_version and KEK fingerprints (issue 14, DESIGN §7d).
#
# Reads of rows of a retired version (secret_get, cached or not,
# secret_decrypt, decrypted_secrets) fail with 22S05 and a hint;
# verify_secrets() lists them as 'retired', status() counts them; rotation
# still re-wraps them, after which they read again.  Nothing is wrapped
# under a retired current version.  status() shows a 16-hex-digit
# fingerprint per configured version: equal on two servers with the same
# KEK, different for a different passphrase.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use LifecycleTest;
use SecretenvTest;
use Test::More;

my $node = new_secretenv_node('retirement');
$node->start;
set_keys($node, 1, 0);
$node->safe_psql('postgres', q{
CREATE EXTENSION secretenv;
SELECT secretenv.secret_create('old-1', 'old-value-1');
SELECT secretenv.secret_create('old-2', 'old-value-2');
});
set_keys($node, 2, 1);
$node->safe_psql('postgres', q{SELECT secretenv.secret_create('new-1', 'new-value-1')});

# A session that read old-1 before the retirement: its cache holds the value.
my $session = $node->background_psql('postgres', on_error_stop => 0);
is($session->query_safe(q{SELECT secretenv.secret_get('old-1')}), 'old-value-1',
	'before the retirement a version-1 row reads');

$node->append_conf('postgresql.conf', "secretenv.min_kek_version = 2\n");
$node->reload;
$node->poll_query_until('postgres', q{SELECT current_setting('secretenv.min_kek_version')}, '2')
  or die 'min_kek_version not applied';

my %reads = (
	'secret_get' => q{SELECT secretenv.secret_get('old-1')},
	'secret_decrypt' => q{SELECT secretenv.secret_decrypt(s.encrypted_value, s.wrapped_dek, s.kek_version, s.secret_id, s.secret_name)
		FROM secretenv.secrets s WHERE s.secret_name = 'old-2'},
	'the envelope form of secret_decrypt' => q{SELECT secretenv.secret_decrypt(ROW(s.encrypted_value, s.wrapped_dek, s.kek_version)::secretenv.envelope, s.secret_id, s.secret_name)
		FROM secretenv.secrets s WHERE s.secret_name = 'old-2'},
	'decrypted_secrets' => q{SELECT value FROM secretenv.decrypted_secrets WHERE secret_name = 'old-2'});
for my $what (sort keys %reads)
{
	my ($out, $err) = run_sql($node, 'postgres', $reads{$what});
	like($err, qr/ERROR:  22S05: KEK version 1 is retired.*HINT:  Re-wrap the row under the current KEK/s,
		"$what of a retired row fails with 22S05 and a hint");
	is($out, '', "$what of a retired row returns nothing");
}
$session->query(q{SELECT secretenv.secret_get('old-1')});
like($session->{stderr}, qr/KEK version 1 is retired/,
	'a value cached before the retirement is not served after it');
is($node->safe_psql('postgres', q{SELECT secretenv.secret_get('new-1')}), 'new-value-1',
	'a row of the current version reads');
is($node->safe_psql('postgres', q{SELECT string_agg(secret_name || ':' || failed_check, ',' ORDER BY secret_name)
	FROM secretenv.verify_secrets()}), 'old-1:retired,old-2:retired',
	'verify_secrets() lists the retired rows');
is($node->safe_psql('postgres', q{SELECT (s->'retired_rows')::text || ' ' || (s->'min_kek_version')::text
	FROM secretenv.status() s}), '2 2', 'status() counts the retired rows');

# Nothing new under a retired current version.
$node->append_conf('postgresql.conf', "secretenv.min_kek_version = 3\n");
$node->reload;
$node->poll_query_until('postgres', q{SELECT current_setting('secretenv.min_kek_version')}, '3')
  or die 'min_kek_version not applied';
my ($out, $err) = run_sql($node, 'postgres', q{SELECT secretenv.secret_create('never', 'never-value')});
like($err, qr/ERROR:  22S05: the current KEK version 2 is retired/,
	'nothing is encrypted under a retired current version (22S05)');
$node->append_conf('postgresql.conf', "secretenv.min_kek_version = 2\n");
$node->reload;
$node->poll_query_until('postgres', q{SELECT current_setting('secretenv.min_kek_version')}, '2')
  or die 'min_kek_version not applied';

# Rotation still re-wraps retired rows; then they read again.
my ($rc, $o, $e) = finish_sql(start_sql($node, 'postgres', 'CALL secretenv.secret_rotate()'));
is(finished_count($e), 2, 'secret_rotate re-wraps the rows of the retired version');
is($node->safe_psql('postgres', q{SELECT secretenv.secret_get('old-1') || ' ' || secretenv.secret_get('old-2')}),
	'old-value-1 old-value-2', 'rotated rows read again');
is($node->safe_psql('postgres', q{SELECT count(*) FROM secretenv.verify_secrets()}), '0',
	'verify_secrets() finds nothing after the rotation');
is($node->safe_psql('postgres', q{SELECT secretenv.status()->'retired_rows'}), '0',
	'status() counts no retired row after the rotation');
$session->quit;

# Fingerprints: per configured version, comparable across servers.
my $fp = $node->safe_psql('postgres', q{SELECT secretenv.status()->'kek_fingerprints'});
like($fp, qr/^\{"1": "[0-9a-f]{16}", "2": "[0-9a-f]{16}"\}$/, "a 16-hex-digit fingerprint per configured version: $fp");
my $other = new_secretenv_node('retirement_other',
	conf => "secretenv.kek_passphrase = '" . passphrase(2) . "'\nsecretenv.kek_version = 2\n"
	  . "secretenv.kek_previous_passphrase = 'a-different-passphrase-0123456789abcdef'\nsecretenv.kek_previous_version = 1\n");
$other->start;
$other->safe_psql('postgres', 'CREATE EXTENSION secretenv');
my $fp_other = $other->safe_psql('postgres', q{SELECT secretenv.status()->'kek_fingerprints'});
is($other->safe_psql('postgres', qq{SELECT ('$fp'::jsonb->>'2') = ('$fp_other'::jsonb->>'2')}), 't',
	'the same KEK on another server has the same fingerprint');
is($other->safe_psql('postgres', qq{SELECT ('$fp'::jsonb->>'1') = ('$fp_other'::jsonb->>'1')}), 'f',
	'a same-version KEK from another passphrase has another fingerprint');
unlike($fp . $fp_other, qr/passphrase|lifecycle/, 'no passphrase in the fingerprints');
$other->stop;
$node->stop;
done_testing();
