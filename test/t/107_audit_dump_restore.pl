
# Copyright (c) secretenv contributors
#
# Access audit across pg_dump and restore (DESIGN §8b): secretenv.audit_log
# is an extension configuration table, so pg_dump keeps its records; a
# restore into a cluster with the same KEK configuration holds the same
# records, audit_verify() reports the chain intact, and the records the
# restore itself causes (one "create" per restored secret, appended by the
# new cluster's writer) continue the chain.  A restore into a cluster with
# another passphrase keeps the records too, and audit_verify() names the
# first record it cannot check.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SecretenvTest;
use Test::More;

my $pass = 'audit-dump-test-passphrase-0123456789abcd';
my $src = new_secretenv_node('audit_src', conf => kek_settings($pass, 1));
$src->start;
$src->safe_psql('postgres', q{
CREATE DATABASE app;
});
$src->safe_psql('app', q{
CREATE EXTENSION secretenv;
SELECT secretenv.secret_create('stripe', 'sk-stripe-0123456789abcdef');
SELECT secretenv.secret_create('openai', 'sk-openai-0123456789abcdef');
SELECT secretenv.secret_get('stripe') FROM generate_series(1, 5);
});
$src->poll_query_until('app', 'SELECT count(*) = 7 FROM secretenv.audit_log')
  or die 'records not written';
is($src->safe_psql('app', q{SELECT concat_ws('|', intact, records) FROM secretenv.audit_verify()}),
	't|7', 'source: seven records, intact');
my $before = $src->safe_psql('app',
	q{SELECT string_agg(concat_ws(',', seq, operation, secret_name, encode(mac, 'hex')), ';' ORDER BY seq) FROM secretenv.audit_log});

my $tmp = PostgreSQL::Test::Utils::tempdir;
$src->command_ok([ 'pg_dump', '-Fc', '-f', "$tmp/app.dump", '-d', $src->connstr('app') ],
	'pg_dump of the database');

# Same KEK configuration: the records come back and verify.
my $same = new_secretenv_node('audit_same', conf => kek_settings($pass, 1));
$same->start;
$same->safe_psql('postgres', 'CREATE DATABASE app');
$same->command_ok([ 'pg_restore', '--exit-on-error', '-d', $same->connstr('app'), "$tmp/app.dump" ],
	'pg_restore succeeds');
is($same->safe_psql('app',
	q{SELECT string_agg(concat_ws(',', seq, operation, secret_name, encode(mac, 'hex')), ';' ORDER BY seq) FROM secretenv.audit_log WHERE seq <= 7}),
	$before, 'the restored table holds the seven records, byte for byte');
# The restore inserted two secrets: their "create" records follow.
$same->poll_query_until('app', 'SELECT count(*) = 9 FROM secretenv.audit_log')
  or die 'restore records not written';
is($same->safe_psql('app',
	q{SELECT string_agg(concat_ws(',', seq, operation, outcome), ';' ORDER BY seq) FROM secretenv.audit_log WHERE seq > 7}),
	'8,create,ok;9,create,ok', 'the restore\'s own writes are recorded after them');
is($same->safe_psql('app', q{SELECT concat_ws('|', intact, records, first_break) FROM secretenv.audit_verify()}),
	't|9', 'after the restore the whole chain verifies');
$same->safe_psql('app', q{SELECT secretenv.secret_get('stripe')});
$same->poll_query_until('app', 'SELECT count(*) = 10 FROM secretenv.audit_log')
  or die 'read not recorded';
is($same->safe_psql('app', q{SELECT concat_ws('|', intact, records) FROM secretenv.audit_verify()}),
	't|10', 'and keeps verifying as new reads are recorded');

# Another passphrase: the records are kept; what cannot be checked is named.
my $other = new_secretenv_node('audit_other',
	conf => kek_settings('another-passphrase-entirely-0123456789ab', 1));
$other->start;
$other->safe_psql('postgres', 'CREATE DATABASE app');
$other->command_ok([ 'pg_restore', '--exit-on-error', '-d', $other->connstr('app'), "$tmp/app.dump" ],
	'pg_restore under another passphrase succeeds');
is($other->safe_psql('app', 'SELECT count(*) FROM secretenv.audit_log WHERE seq <= 7'),
	'7', 'the seven records are restored');
is($other->safe_psql('app', q{SELECT concat_ws('|', intact, first_break) FROM secretenv.audit_verify()}),
	'f|1', 'audit_verify() reports the first record as the break (its MAC is not under this KEK)');

$src->stop;
$same->stop;
$other->stop;
done_testing();
