
# Copyright (c) secretenv contributors
#
# Rotation at scale over versions (DESIGN §8c, §7d): 100 000 secrets with
# 5 versions each (the current value in secretenv.secrets, 4 kept ones in
# secretenv.secret_versions), all under KEK 1.  After the KEK changes,
# CALL secretenv.secret_rotate(10000) re-wraps every one of the 500 000
# envelopes in batches: every wrapped DEK differs, every ciphertext is
# byte-identical, every envelope is on KEK 2, a sample of versions reads
# back through secret_get(name, version), verify_secrets() finds nothing,
# and a second run re-wraps none.  The run's duration is printed.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SecretenvTest;
use Test::More;
use Time::HiRes qw(time);

my $secrets = 100_000;
my $kept = 4;
my $pass1 = 'rotation-versions-passphrase-1-0123456789';
my $pass2 = 'rotation-versions-passphrase-2-0123456789';
my $node = new_secretenv_node('rotation_versions',
	conf => kek_settings($pass1, 1) . "secretenv.audit = off\nmax_wal_size = '2GB'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION secretenv');

# Value of version v of secret i.
my $value = q{'value-' || i || '-v' || v || '-' || md5(i::text || v::text)};
my $t0 = time;
$node->safe_psql('postgres', qq{
	INSERT INTO secretenv.secrets (secret_id, secret_name, encrypted_value, wrapped_dek, kek_version,
								   masked_value, current_version)
	SELECT id, name, (e).encrypted_value, (e).wrapped_dek, (e).kek_version, '"***"', v
	FROM (SELECT gen_random_uuid() id, 'bulk-' || i name, i, @{[ $kept + 1 ]} v
		  FROM generate_series(1, $secrets) i) s,
		 LATERAL (SELECT secretenv.secret_encrypt($value, s.id, s.name) e) enc;
	INSERT INTO secretenv.secret_versions (secret_id, secret_name, version, state, encrypted_value,
										   wrapped_dek, kek_version, masked_value)
	SELECT s.secret_id, s.secret_name, v, CASE WHEN v = $kept THEN 'previous' ELSE 'deprecated' END,
		   (e).encrypted_value, (e).wrapped_dek, (e).kek_version, '"***"'
	FROM (SELECT secret_id, secret_name, substr(secret_name, 6)::int i FROM secretenv.secrets) s,
		 generate_series(1, $kept) v,
		 LATERAL (SELECT secretenv.secret_encrypt($value, s.secret_id, s.secret_name) e) enc;
	CREATE TABLE before_rotation AS
		SELECT secret_id, current_version AS version, encrypted_value, wrapped_dek FROM secretenv.secrets
		UNION ALL
		SELECT secret_id, version, encrypted_value, wrapped_dek FROM secretenv.secret_versions;
	CREATE INDEX ON before_rotation (secret_id, version);
	ANALYZE;
});
diag(sprintf('loaded %d envelopes in %.1f s', $secrets * ($kept + 1), time - $t0));
is($node->safe_psql('postgres', 'SELECT count(*) FROM before_rotation WHERE version BETWEEN 1 AND 5'),
	$secrets * ($kept + 1), '500 000 envelopes: 100 000 secrets with 5 versions each');

configure_rotation_keys($node, $pass2, $pass1) or die 'KEK 2 not current';
$t0 = time;
my ($ret, $out, $err) = $node->psql('postgres', 'CALL secretenv.secret_rotate(10000)');
my $took = time - $t0;
diag(sprintf('secret_rotate(10000) re-wrapped 500 000 envelopes in %.1f s', $took));
is($ret, 0, 'secret_rotate completes');
like($err, qr/finished: $secrets rows re-wrapped/, 'it re-wraps the 100 000 current values');
like($err, qr/finished: @{[ $secrets * $kept ]} versions re-wrapped/, 'and the 400 000 kept versions, in batches');
is($node->safe_psql('postgres', q{
	SELECT count(*) FILTER (WHERE a.kek_version = 2),
		   count(*) FILTER (WHERE a.wrapped_dek <> b.wrapped_dek),
		   count(*) FILTER (WHERE a.encrypted_value = b.encrypted_value)
	FROM (SELECT secret_id, current_version AS version, encrypted_value, wrapped_dek, kek_version FROM secretenv.secrets
		  UNION ALL
		  SELECT secret_id, version, encrypted_value, wrapped_dek, kek_version FROM secretenv.secret_versions) a
		 JOIN before_rotation b USING (secret_id, version)}),
	join('|', ($secrets * ($kept + 1)) x 3),
	'every envelope is on KEK 2 with a re-wrapped DEK and its ciphertext unchanged');
is($node->safe_psql('postgres', qq{
	SELECT count(*) FROM (SELECT i, v FROM generate_series(1, $secrets, 97) i, generate_series(1, 5) v) s
	WHERE secretenv.secret_get('bulk-' || i, v) = $value}),
	int(($secrets - 1) / 97 + 1) * 5, 'a sample of every version reads back through secret_get(name, version)');
is($node->safe_psql('postgres', 'SELECT count(*) FROM secretenv.verify_secrets()'), '0',
	'verify_secrets opens all 500 000 envelopes and finds nothing');
($ret, $out, $err) = $node->psql('postgres', 'CALL secretenv.secret_rotate(10000)');
like($err, qr/finished: 0 rows re-wrapped.*finished: 0 versions re-wrapped/s, 'a second run re-wraps none');

$node->stop;
done_testing();
