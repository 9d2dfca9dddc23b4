
# ALTER EXTENSION secretenv UPDATE from 1.0 meets rows that 1.1 no longer
# accepts (a blank name, a name over 1024 bytes): it stops with 23514, says
# how many, lists them (with their ids) and what to do, and changes nothing.  Once they are re-created
# the update goes through, and the 1.1 guards are in force on the old data.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;
use Test::More;

my $node = new_secretenv_node('upgrade_names',
	conf => "secretenv.kek_passphrase = 'upgrade-names-passphrase-0123456789abcdef'\n");
$node->start;
$node->safe_psql(
	'postgres', q{
CREATE EXTENSION secretenv VERSION '1.0';
SELECT secretenv.secret_create('good', 'good-value-0123');
SELECT secretenv.secret_create(' ', 'blank-name-value');
SELECT secretenv.secret_create(repeat('n', 1100), 'long-name-value');
});
my $rows_sql = q{SELECT md5(string_agg(concat_ws('|', secret_id, secret_name, encode(encrypted_value, 'hex'),
	encode(wrapped_dek, 'hex'), kek_version), ',' ORDER BY secret_id)) FROM secretenv.secrets};
my $before = $node->safe_psql('postgres', $rows_sql);

my ($out, $err) = run_sql($node, 'postgres', 'ALTER EXTENSION secretenv UPDATE');
like($err, qr/ERROR:  23514: cannot update secretenv to 1\.1: 2 stored secrets have an empty, blank or over-long name/,
	'the update stops with 23514 and the count');
like($err, qr/HINT:  Re-create each such secret under a valid name/, '... and says what to do');
like($err, qr/DETAIL:  They are: ' ' \(id [0-9a-f-]{36}, 1 bytes\), 'n{40}'\.\.\. \(id [0-9a-f-]{36}, 1100 bytes\)\./,
	'... and lists each bad name (an over-long one by its first 40 characters) with its id');
is($node->safe_psql('postgres', q{SELECT extversion FROM pg_extension WHERE extname = 'secretenv'}),
	'1.0', 'the extension stays at 1.0');
is($node->safe_psql('postgres', $rows_sql), $before, 'no row changed');
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_event_trigger}), '0', 'no 1.1 object was left behind');

# Re-create them under valid names, then update.
$node->safe_psql(
	'postgres', q{
SELECT secretenv.secret_create('blank-renamed', secretenv.secret_get(' '));
SELECT secretenv.secret_create('long-renamed', secretenv.secret_get(repeat('n', 1100)));
SELECT secretenv.secret_delete(' '), secretenv.secret_delete(repeat('n', 1100));
});
($out, $err) = run_sql($node, 'postgres', 'ALTER EXTENSION secretenv UPDATE');
is($err, '', 'after re-creating them the update goes through');
is($node->safe_psql('postgres', q{SELECT extversion FROM pg_extension WHERE extname = 'secretenv'}),
	'1.2', 'the extension is at 1.2 (through 1.1)');
is($node->safe_psql('postgres',
		q{SELECT string_agg(secret_name || '=' || secretenv.secret_get(secret_name), ',' ORDER BY secret_name) FROM secretenv.secrets}),
	'blank-renamed=blank-name-value,good=good-value-0123,long-renamed=long-name-value',
	'every secret decrypts after the update');

# The 1.1 guards on the upgraded database.
($out, $err) = run_sql($node, 'postgres', q{SELECT secretenv.secret_create('', 'x')});
like($err, qr/ERROR:  22023: secret name must not be empty or only whitespace/, 'blank names are refused');
($out, $err) = run_sql($node, 'postgres',
	q{INSERT INTO secretenv.secrets (secret_name, encrypted_value, wrapped_dek, kek_version) VALUES (repeat('x', 1025), '\x00', '\x00', 1)});
like($err, qr/ERROR:  23514: .*"secrets_name_valid"/, 'the CHECK constraint covers direct writes');
($out, $err) = run_sql($node, 'postgres', 'DROP EXTENSION secretenv');
like($err, qr/ERROR:  2BP01: cannot drop secretenv while secretenv\.secrets holds secrets/, 'the drop guard is in force');
is($node->safe_psql('postgres',
		q{CREATE TABLE t (id text, name text, env secretenv.envelope);
		  CREATE TRIGGER t_check BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION secretenv.check_envelope('env', 'id', 'name');
		  INSERT INTO t SELECT 'i', 'n', secretenv.secret_encrypt('v', 'i', 'n');
		  SELECT count(*) FROM t}),
	'1', 'check_envelope is there');

$node->stop;
done_testing();
