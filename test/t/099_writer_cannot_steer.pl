
# Copyright (c) secretenv contributors
#
# Nothing a writer can set steers a key operation (DESIGN section 8a).
#  - secret_reencrypt(since) selects rows by value_encrypted_at, which only
#    secretenv writes: a writer who sets last_updated_at to 2099 no longer
#    keeps a row's compromised DEK out of it; a writer cannot write the
#    column, and what a superuser's UPDATE puts there is ignored.
#  - An envelope secretenv did not seal in the writing transaction (an old
#    envelope replayed by a writer, a row MLflow inserts directly, a row of
#    a 1.1 database updated to 1.2) has an unknown encryption time (NULL):
#    status() counts such rows and any secret_reencrypt re-encrypts them.
#  - A rotation keeps the time (same DEK); secret_update and re-encryption
#    set it; a superuser's INSERT (a restore) keeps the time it writes.
#  - check_envelope refuses an envelope of a retired KEK version (22S05),
#    on an application table and on secretenv.secrets.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;
use LifecycleTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = new_secretenv_node('writer_cannot_steer');
$node->start;
set_keys($node, 1, 0);
$node->safe_psql('postgres', q{
CREATE EXTENSION secretenv VERSION '1.1';
SELECT secretenv.secret_create('from-1.1', 'value-from-1.1');
ALTER EXTENSION secretenv UPDATE TO '1.2';
CREATE ROLE w LOGIN IN ROLE secretenv_writer;
CREATE TABLE saved (name text PRIMARY KEY, encrypted_value bytea, wrapped_dek bytea, kek_version int4);
GRANT ALL ON saved TO w;
});

sub q1 { return $node->safe_psql('postgres', $_[0]); }

is(q1(q{SELECT value_encrypted_at IS NULL FROM secretenv.secrets WHERE secret_name = 'from-1.1'}),
	't', 'a row of a 1.1 database updated to 1.2 has an unknown encryption time');

# The writer creates a secret; a copy of its envelope is kept (the DEK of
# that envelope is the one to be thought compromised).
q1(q{SET ROLE w;
SELECT secretenv.secret_create('victim', 'victim-value-1');
RESET ROLE;
INSERT INTO saved SELECT secret_name, encrypted_value, wrapped_dek, kek_version
FROM secretenv.secrets WHERE secret_name = 'victim';});
is(q1(q{SELECT value_encrypted_at = created_at FROM secretenv.secrets WHERE secret_name = 'victim'}),
	't', 'secret_create stamps value_encrypted_at with the time of its transaction');

# The attack of issue 22: last_updated_at far in the future.
q1(q{SET ROLE w; UPDATE secretenv.secrets SET last_updated_at = '2099-01-01' WHERE secret_name = 'victim'});
my ($out, $err) = run_sql($node, 'postgres',
	q{SET ROLE w; UPDATE secretenv.secrets SET value_encrypted_at = '2099-01-01' WHERE secret_name = 'victim'});
like($err, qr/ERROR:  42501: permission denied for table secrets/, 'a writer cannot write value_encrypted_at');
q1(q{UPDATE secretenv.secrets SET value_encrypted_at = '2099-01-01' WHERE secret_name = 'victim'});
is(q1(q{SELECT value_encrypted_at = created_at FROM secretenv.secrets WHERE secret_name = 'victim'}),
	't', 'what even a superuser writes to value_encrypted_at is ignored');

my $since = q1('SELECT now()');
my $before = q1(q{SELECT encode(wrapped_dek, 'hex') || encode(encrypted_value, 'hex') FROM secretenv.secrets WHERE secret_name = 'victim'});
($out, $err) = run_sql($node, 'postgres', "CALL secretenv.secret_reencrypt('$since')");
like($err, qr/finished: 2 rows re-encrypted/, 'secret_reencrypt(now()) re-encrypts the row with last_updated_at = 2099 and the 1.1 row');
isnt(q1(q{SELECT encode(wrapped_dek, 'hex') || encode(encrypted_value, 'hex') FROM secretenv.secrets WHERE secret_name = 'victim'}),
	$before, '... the row has a new DEK and ciphertext');
is(q1(q{SELECT string_agg(secretenv.secret_get(secret_name), ',' ORDER BY secret_name) FROM secretenv.secrets}),
	'value-from-1.1,victim-value-1', '... and both read');
is(q1(qq{SELECT count(*) FROM secretenv.secrets WHERE value_encrypted_at IS NULL OR value_encrypted_at < '$since'}),
	'0', '... and both are stamped with the time of the re-encryption');

# The writer replays the old envelope (its DEK is the compromised one).
q1(q{SET ROLE w;
UPDATE secretenv.secrets s SET encrypted_value = o.encrypted_value, wrapped_dek = o.wrapped_dek,
	kek_version = o.kek_version, last_updated_at = '2099-01-01'
FROM saved o WHERE s.secret_name = o.name;});
is(q1(q{SELECT value_encrypted_at IS NULL FROM secretenv.secrets WHERE secret_name = 'victim'}),
	't', 'a replayed envelope has an unknown encryption time');
is(q1(q{SELECT secretenv.status() ->> 'unknown_encryption_time_rows'}), '1', 'status() counts it');
$since = q1('SELECT now()');
($out, $err) = run_sql($node, 'postgres', q{CALL secretenv.secret_reencrypt('2000-01-01')});
like($err, qr/finished: 1 rows re-encrypted/, 'any secret_reencrypt, even with a cutoff of 2000, re-encrypts it');
is(q1(qq{SELECT value_encrypted_at >= '$since' FROM secretenv.secrets WHERE secret_name = 'victim'}),
	't', '... and it is stamped again');

# An envelope sealed in an earlier transaction, written by the writer.
q1(q{SET ROLE w;
DELETE FROM saved;
INSERT INTO saved SELECT 'victim', e.* FROM secretenv.secrets s,
	LATERAL secretenv.secret_encrypt('victim-value-2', s.secret_id, s.secret_name) e
WHERE s.secret_name = 'victim';});
q1(q{SET ROLE w;
UPDATE secretenv.secrets s SET encrypted_value = o.encrypted_value, wrapped_dek = o.wrapped_dek,
	kek_version = o.kek_version FROM saved o WHERE s.secret_name = o.name;});
is(q1(q{SELECT value_encrypted_at IS NULL FROM secretenv.secrets WHERE secret_name = 'victim'}),
	't', 'an envelope sealed in another transaction has an unknown encryption time');
# ... and one sealed in the writing transaction is fresh.
q1(q{SET ROLE w;
UPDATE secretenv.secrets s SET (encrypted_value, wrapped_dek, kek_version) =
	(SELECT e.* FROM secretenv.secret_encrypt('victim-value-3', s.secret_id, s.secret_name) e)
WHERE s.secret_name = 'victim';});
is(q1(q{SELECT value_encrypted_at > now() - interval '1 minute' FROM secretenv.secrets WHERE secret_name = 'victim'}),
	't', 'an envelope sealed by secret_encrypt in the writing transaction is stamped now');
q1(q{SET ROLE w; SELECT secretenv.secret_update('victim', 'victim-value-4')});
is(q1(q{SELECT value_encrypted_at IS NOT NULL FROM secretenv.secrets WHERE secret_name = 'victim'}),
	't', 'secret_update stamps it');

# Many secrets in one statement: each row takes its own fresh envelope.
q1(q{SET ROLE w; SELECT count(secretenv.secret_create('bulk-' || i, 'bulk-value-' || i)) FROM generate_series(1, 2000) i});
is(q1(q{SELECT count(*) FILTER (WHERE value_encrypted_at IS NOT NULL) FROM secretenv.secrets WHERE secret_name LIKE 'bulk-%'}),
	'2000', 'secret_create of 2000 secrets in one statement stamps every row');
q1(q{DELETE FROM secretenv.secrets WHERE secret_name LIKE 'bulk-%'});

# A row MLflow inserts directly (here: an envelope made in an earlier
# transaction, inserted by the table owner without the column).
q1(q{CREATE TABLE mlflow_src AS SELECT 'b1e1b1e1-0000-4000-8000-000000000001'::uuid AS id, 'mlflow-row' AS name,
	secretenv.secret_encrypt('mlflow-value', 'b1e1b1e1-0000-4000-8000-000000000001'::uuid, 'mlflow-row') AS env});
q1(q{INSERT INTO secretenv.secrets (secret_id, secret_name, encrypted_value, wrapped_dek, kek_version)
	SELECT id, name, (env).encrypted_value, (env).wrapped_dek, (env).kek_version FROM mlflow_src});
is(q1(q{SELECT value_encrypted_at IS NULL FROM secretenv.secrets WHERE secret_name = 'mlflow-row'}),
	't', 'a row inserted directly has an unknown encryption time');
# A restore (the owner inserts the column's value) keeps it.
q1(q{INSERT INTO secretenv.secrets (secret_id, secret_name, encrypted_value, wrapped_dek, kek_version, value_encrypted_at)
	SELECT gen_random_uuid(), 'restored-row', '\x00', '\x00', 1, '2001-02-03 04:05:06+00'});
is(q1(q{SELECT value_encrypted_at = '2001-02-03 04:05:06+00' FROM secretenv.secrets WHERE secret_name = 'restored-row'}),
	't', 'an INSERT by the table owner (a restore) keeps the time it writes');
q1(q{DELETE FROM secretenv.secrets WHERE secret_name = 'restored-row'});

# Rotation re-wraps the same DEK: the time stays.
q1(q{CALL secretenv.secret_reencrypt(now())});
my $stamps = q{SELECT string_agg(secret_name || '=' || value_encrypted_at, ',' ORDER BY secret_name) FROM secretenv.secrets};
my $stamped = q1($stamps);
set_keys($node, 2, 1);
q1('CALL secretenv.secret_rotate()');
is(q1('SELECT count(*) FROM secretenv.secrets WHERE kek_version <> 2'), '0', 'secret_rotate moved every row to KEK 2');
is(q1($stamps), $stamped, '... and kept every value_encrypted_at');
($out, $err) = run_sql($node, 'postgres', q{CALL secretenv.secret_reencrypt('2000-01-01')});
like($err, qr/finished: 0 rows re-encrypted/, 'so a re-encryption with an earlier cutoff has nothing to do');

# check_envelope and retired KEK versions: envelopes of version 1, made
# while it is the current KEK.
q1(q{CREATE TABLE app_tokens (id text, name text, encrypted_value bytea, wrapped_dek bytea, kek_version int4);
CREATE TRIGGER tokens_check BEFORE INSERT OR UPDATE ON app_tokens FOR EACH ROW
	EXECUTE FUNCTION secretenv.check_envelope('encrypted_value', 'wrapped_dek', 'kek_version', 'id', 'name');
GRANT ALL ON app_tokens TO w;});
set_keys($node, 1, 2);
q1(q{CREATE TABLE v1_env AS SELECT e.* FROM secretenv.secret_encrypt('token-value', 'id-1', 'tok') e;
CREATE TABLE v1_victim AS SELECT s.secret_id, e.* FROM secretenv.secrets s,
	LATERAL secretenv.secret_encrypt('victim-value-5', s.secret_id, s.secret_name) e WHERE s.secret_name = 'victim';
GRANT SELECT ON v1_env, v1_victim TO w;});
set_keys($node, 2, 1);
is(q1('SELECT kek_version FROM v1_env'), '1', 'an envelope of KEK version 1 is kept aside');
$node->append_conf('postgresql.conf', "secretenv.min_kek_version = 2\n");
$node->reload;
$node->poll_query_until('postgres', q{SELECT current_setting('secretenv.min_kek_version')}, '2')
  or die 'min_kek_version not applied';

($out, $err) = run_sql($node, 'postgres',
	q{SET ROLE w; INSERT INTO app_tokens SELECT 'id-1', 'tok', e.* FROM v1_env e});
like($err, qr/ERROR:  22S05: new row of relation "app_tokens" holds an envelope of retired KEK version 1/,
	'check_envelope refuses an envelope of a retired version on an application table');
like($err, qr/DETAIL:  secretenv.min_kek_version is 2;/, '... and says why');
is(q1('SELECT count(*) FROM app_tokens'), '0', '... and nothing was written');
($out, $err) = run_sql($node, 'postgres',
	q{SET ROLE w; UPDATE secretenv.secrets s SET encrypted_value = v.encrypted_value, wrapped_dek = v.wrapped_dek,
		kek_version = v.kek_version FROM v1_victim v WHERE s.secret_id = v.secret_id});
like($err, qr/ERROR:  22S05: new row of relation "secrets" holds an envelope of retired KEK version 1/,
	'and on secretenv.secrets, for a writer');
is(q1(q{SELECT secretenv.secret_get('victim')}), 'victim-value-4', 'the stored secret is unchanged');
($out, $err) = run_sql($node, 'postgres',
	q{SET ROLE w; INSERT INTO app_tokens SELECT 'id-1', 'tok', e.* FROM secretenv.secret_encrypt('token-value', 'id-1', 'tok') e});
is($err, '', 'an envelope of the current version is accepted');

$node->stop;
done_testing();
