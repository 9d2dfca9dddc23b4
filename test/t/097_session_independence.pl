
# Copyright (c) secretenv contributors
#
# No SQL script or function of secretenv depends on session settings
# (DESIGN section 8a):
#  - the install and upgrade scripts of 1.2 are ASCII and hold no U&''
#    literal, which fails to parse under standard_conforming_strings = off
#    and, in a database that is not UTF8, before the encoding check runs;
#  - CREATE EXTENSION in a LATIN1 or SQL_ASCII database fails with 0A000
#    "secretenv requires a UTF8 database", and changes nothing;
#  - CREATE EXTENSION and ALTER EXTENSION UPDATE from 1.1 work under
#    standard_conforming_strings = off;
#  - one workload (create, update, get, the views, the primitives on an
#    application table with check_envelope, rotation, re-encryption,
#    status(), verify_secrets(), delete, the name checks and the duplicate
#    error) gives the same output under each of: standard_conforming_strings
#    off, DateStyle/IntervalStyle/TimeZone changed, extra_float_digits and
#    bytea_output changed, client_encoding LATIN1, an empty search_path,
#    plpgsql.extra_errors = all and plpgsql.variable_conflict changed,
#    quote_all_identifiers/transform_null_equals/array_nulls changed with
#    serializable transactions, and session_replication_role = replica.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $srcdir = "$FindBin::RealBin/../..";

# The scripts themselves.
for my $script ('sql/secretenv--1.2.sql', 'sql/secretenv--1.1--1.2.sql')
{
	my $text = slurp_file("$srcdir/$script");
	unlike($text, qr/[^\x00-\x7f]/, "$script is ASCII only");
	unlike($text, qr/U&'[^']/i, "$script holds no U&'' literal");
}

my $node = new_secretenv_node('session_independence',
	conf => kek_settings('session-independence-passphrase-0123456789', 1));
$node->start;

# Databases that are not UTF8.
for my $encoding ('LATIN1', 'SQL_ASCII')
{
	my $db = lc("enc_$encoding");
	$node->safe_psql('postgres',
		"CREATE DATABASE $db ENCODING '$encoding' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0");
	my ($out, $err) = run_sql($node, $db, 'CREATE EXTENSION secretenv');
	like($err, qr/ERROR:  0A000: secretenv requires a UTF8 database/,
		"CREATE EXTENSION in a $encoding database fails with 0A000 and says why");
	like($err, qr/DETAIL:  This database's encoding is $encoding\./, '... naming the encoding');
	is($node->safe_psql($db, q{SELECT count(*) FROM pg_namespace WHERE nspname = 'secretenv'}),
		'0', '... and creates nothing');
}

# Install and upgrade under standard_conforming_strings = off.
$node->safe_psql('postgres', 'CREATE DATABASE scs_install');
my ($out, $err) = run_sql($node, 'scs_install',
	"SET standard_conforming_strings = off;\nCREATE EXTENSION secretenv;");
is($err, '', 'CREATE EXTENSION works under standard_conforming_strings = off');
$node->safe_psql('postgres', 'CREATE DATABASE scs_upgrade');
$node->safe_psql('scs_upgrade', q{CREATE EXTENSION secretenv VERSION '1.1';
SELECT secretenv.secret_create('from-1.1', 'value-from-1.1');});
($out, $err) = run_sql($node, 'scs_upgrade',
	"SET standard_conforming_strings = off;\nALTER EXTENSION secretenv UPDATE TO '1.2';");
is($err, '', 'ALTER EXTENSION UPDATE from 1.1 works under standard_conforming_strings = off');
is($node->safe_psql('scs_upgrade', q{SELECT secretenv.secret_get('from-1.1')}),
	'value-from-1.1', '... and the 1.1 secret still reads');

# The workload: ASCII SQL whose output is ASCII in any client encoding.
# Values hold non-ASCII characters (chr()), compared through md5 of their
# UTF-8 bytes.  %p is a prefix of the names, unique per setting.
$node->safe_psql('postgres', 'CREATE DATABASE work');
$node->safe_psql('work', 'CREATE EXTENSION secretenv; CREATE SCHEMA app;');
my $workload = q{
SELECT secretenv.secret_create('%p-text', 'text-value-' || chr(233) || chr(12354)) IS NOT NULL AS created;
SELECT secretenv.secret_create('%p-json', pg_catalog.jsonb_build_object('k', 'json-' || chr(233))) IS NOT NULL AS created;
SELECT secretenv.secret_update('%p-text', 'updated-' || chr(233) || ' 1.5');
SELECT md5(convert_to(secretenv.secret_get('%p-text'), 'UTF8')) = md5(convert_to('updated-' || chr(233) || ' 1.5', 'UTF8')) AS get_ok;
SELECT secretenv.secret_get('%p-json')::jsonb OPERATOR(pg_catalog.->>) 'k' = 'json-' || chr(233) AS json_ok;
SELECT count(*) AS decrypted FROM secretenv.decrypted_secrets WHERE secret_name LIKE '%p-%' AND value IS NOT NULL;
SELECT masked_value::text AS masked FROM secretenv.masked_secrets WHERE secret_name = '%p-json';
SELECT value_encrypted_at IS NOT NULL AS stamped FROM secretenv.secrets WHERE secret_name = '%p-text';
CREATE TABLE app.%p_tokens (id uuid, name text, encrypted_value bytea, wrapped_dek bytea, kek_version int4);
CREATE TRIGGER tokens_check BEFORE INSERT OR UPDATE ON app.%p_tokens FOR EACH ROW
	EXECUTE FUNCTION secretenv.check_envelope('encrypted_value', 'wrapped_dek', 'kek_version', 'id', 'name');
INSERT INTO app.%p_tokens (id, name, encrypted_value, wrapped_dek, kek_version)
SELECT s.id, s.name, e.*
FROM (SELECT gen_random_uuid() AS id, 'tok-' || g AS name FROM generate_series(1, 3) g) s,
	 LATERAL secretenv.secret_encrypt('app-' || s.name || chr(8364), s.id, s.name) e;
SELECT count(*) FILTER (WHERE secretenv.secret_decrypt(encrypted_value, wrapped_dek, kek_version, id, name) = 'app-' || name || chr(8364)) AS app_rows
FROM app.%p_tokens;
SELECT secretenv.secret_decrypt(secretenv.secret_encrypt('{"a": 1.25e3}'::jsonb, 'x', 'y'), 'x', 'y') AS jsonb_roundtrip;
SELECT md5(convert_to(secretenv.secret_mask('abcdefghij' || chr(233)), 'UTF8')) = md5(convert_to('abc...hij' || chr(233), 'UTF8')) AS mask_ok;
SELECT secretenv.secret_rotate_all() AS rotated;
CALL secretenv.secret_rotate(2);
CALL secretenv.rotate_table('app.%p_tokens', batch_size => 2);
SELECT now() AS cutoff \gset
CALL secretenv.secret_reencrypt(:'cutoff', 2);
SELECT count(*) AS not_reencrypted FROM secretenv.secrets WHERE value_encrypted_at IS NULL OR value_encrypted_at < :'cutoff';
SELECT md5(convert_to(secretenv.secret_get('%p-text'), 'UTF8')) = md5(convert_to('updated-' || chr(233) || ' 1.5', 'UTF8')) AS get_after_reencrypt;
SELECT (secretenv.status() OPERATOR(pg_catalog.->>) 'rotation_complete') AS rotation_complete;
SELECT count(*) AS failures FROM secretenv.verify_secrets();
SELECT secretenv.secret_delete('%p-json') AS deleted;
};
my $expected = join("\n",
	't', 't', '', 't', 't', '2', '{"k": "***"}', 't',
	'3', '{"a": 1250}', 't', '0', '0', 't', 'true', '0', 't');

my $errors = q{
SELECT secretenv.secret_create('%p-text', 'another');
SELECT secretenv.secret_create(chr(12288) || chr(160), 'blank');
SELECT secretenv.secret_update(' ' || chr(8232), 'blank');
INSERT INTO secretenv.secrets (secret_name, encrypted_value, wrapped_dek, kek_version) VALUES (chr(133), '', '', 1);
};

my @settings = (
	[ 'scs', 'SET standard_conforming_strings = off;' ],
	[ 'dates', q{SET DateStyle = 'SQL, DMY'; SET IntervalStyle = 'sql_standard'; SET TimeZone = 'Pacific/Chatham';} ],
	[ 'floats', 'SET extra_float_digits = -15; SET bytea_output = escape;' ],
	[ 'latin1', q{SET client_encoding = 'LATIN1';} ],
	[ 'nopath', q{SET search_path = '';} ],
	[ 'plpgsql', q{LOAD 'plpgsql'; SET plpgsql.extra_errors = 'all'; SET plpgsql.variable_conflict = 'use_column';} ],
	[ 'plpgsql2', q{LOAD 'plpgsql'; SET plpgsql.variable_conflict = 'use_variable';} ],
	[ 'quoting', q{SET quote_all_identifiers = on; SET transform_null_equals = on; SET array_nulls = off; SET default_transaction_isolation = 'serializable';} ],
	[ 'replica', q{SET session_replication_role = replica;} ],);

for my $s (@settings)
{
	my ($p, $set) = @$s;
	(my $sql = $workload) =~ s/%p/$p/g;
	($out, $err) = run_sql($node, 'work', "$set\n$sql", extra_params => [ '-v', 'VERBOSITY=verbose', '-At' ]);
	is($out, $expected, "workload under $p: every step gives the expected output");
	unlike($err, qr/ERROR/, "... and no error") or diag($err);

	(my $esql = $errors) =~ s/%p/$p/g;
	($out, $err) = run_sql($node, 'work', "$set\n$esql", on_error_stop => 0);
	my @codes = $err =~ /ERROR:  (\w{5}): /g;
	is(join(' ', @codes), '23505 22023 22023 23514',
		"under $p: duplicate 23505, blank names 22023 (functions) and 23514 (CHECK)");
	like($err, qr/ERROR:  23505: secret "$p-text" already exists/, '... the duplicate named');
}

$node->stop;
done_testing();
