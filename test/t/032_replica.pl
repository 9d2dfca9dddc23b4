
# A streaming standby configured with the same KEKs decrypts every secret,
# follows a rotation and an update on the primary (its per-backend credential
# caches are invalidated by the replayed commit), and refuses writes cleanly.
#
# Key configuration is per server: postgresql.conf is not replicated.  Here
# the KEK settings live in an included file, secretenv_keys.conf; the
# standby first starts without it (no KEK configured: 22S04 and a hint),
# then gets the primary's keys and a reload, as a read-scaling deployment
# would.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;
use Time::HiRes qw(time);

my $t0 = time;
my $pass1 = 'replica-passphrase-version-1-0123456789abc';
my $pass2 = 'replica-passphrase-version-2-abcdefghijklm';
my $nsecrets = 60;

sub keys_v1 { return kek_settings($pass1, 1); }
sub keys_v2 { return kek_settings($pass2, 2, $pass1, 1); }

my $primary = new_secretenv_node('primary',
	allows_streaming => 1,
	keys_file => 1,
	conf => "secretenv.cache_ttl = 300\n");
write_keys_file($primary, keys_v1());
$primary->start;
$primary->safe_psql('postgres', 'CREATE EXTENSION secretenv');

# Secrets of varied shapes; the value is a function of the name.
my $expected_sql =
  q{CASE WHEN secret_name LIKE 'json-%'
		THEN jsonb_build_object('token', 'tok-' || md5(secret_name), 'n', 1)::text
		ELSE 'rep-' || md5(secret_name) || repeat(chr(8364), length(secret_name) % 7) END};
$primary->safe_psql(
	'postgres', qq{
SELECT secretenv.secret_create('rep-' || i,
	'rep-' || md5('rep-' || i) || repeat(chr(8364), length('rep-' || i) % 7))
FROM generate_series(1, $nsecrets - 5) i;
SELECT secretenv.secret_create('json-' || i,
	jsonb_build_object('token', 'tok-' || md5('json-' || i), 'n', 1))
FROM generate_series(1, 5) i;
});

$primary->backup('b1');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b1', has_streaming => 1);
# The backup copied the primary's key file: start the standby without keys.
write_keys_file($standby, '');
$standby->start;
$primary->wait_for_catchup($standby);

is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery(), count(*) FROM secretenv.secrets'),
	"t|$nsecrets", "standby streaming, $nsecrets secrets replicated");

# Without the keys: a clear error and a warning, no plaintext, no crash.
my ($out, $err) = run_sql($standby, 'postgres', q{SELECT secretenv.secret_get('rep-1')});
like($err, qr/ERROR:  22S04: no KEK is configured for version 1/,
	'standby without keys: secret_get fails with 22S04 (no development key by default)');
like($err, qr/HINT:  .*secretenv\.kek_passphrase_command/, 'standby without keys: the hint names the settings to configure');
is($out, '', 'standby without keys: nothing returned');

# Give the standby the primary's keys and reload.
write_keys_file($standby, keys_v1());
$standby->reload;
ok( $standby->poll_query_until(
		'postgres', q{SELECT secretenv.status()->>'key_source'}, 'passphrase'),
	'standby reloaded with the primary\'s KEK');

# Every secret decrypts on the standby, through secret_get and the view.
is(secrets_decrypt_counts($standby, 'postgres', $expected_sql), "$nsecrets|$nsecrets|$nsecrets",
	'standby: every secret decrypts with secret_get and decrypted_secrets');
is($standby->safe_psql('postgres', 'SELECT count(*) FROM secretenv.verify_secrets()'),
	'0', 'standby: verify_secrets() finds no failing row');

# Rotation: both servers get current=2, previous=1.
write_keys_file($primary, keys_v2());
write_keys_file($standby, keys_v2());
$primary->reload;
$standby->reload;
ok($primary->poll_query_until('postgres', 'SELECT secretenv.current_kek_version()', '2'),
	'primary reloaded: current KEK version 2');
ok($standby->poll_query_until('postgres', 'SELECT secretenv.current_kek_version()', '2'),
	'standby reloaded: current KEK version 2');

# A long-lived reader session on the standby with a warm cache.
my $reader = $standby->background_psql('postgres', on_error_stop => 0);
my $old = $primary->safe_psql('postgres', q{SELECT 'rep-' || md5('rep-1') || repeat(chr(8364), 5)});
is($reader->query_safe(q{SELECT secretenv.secret_get('rep-1')}), $old,
	'standby reader session: rep-1 read');
is($reader->query_safe(q{SELECT secretenv.secret_get('rep-1')}), $old,
	'standby reader session: rep-1 read again');
cmp_ok($reader->query_safe(q{SELECT (secretenv.cache_stats()->>'hits')::int}),
	'>=', 1, 'standby reader session: second read served from its cache');
my $inv_before = $reader->query_safe(q{SELECT (secretenv.cache_stats()->>'invalidations')::int});

# The primary rotates.
is($primary->safe_psql('postgres', 'SELECT secretenv.secret_rotate_all()'),
	$nsecrets, 'primary: rotation re-wraps every row');
$primary->wait_for_catchup($standby);
is($standby->safe_psql('postgres',
		'SELECT count(*) FILTER (WHERE kek_version = 2), count(*) FROM secretenv.secrets'),
	"$nsecrets|$nsecrets", 'standby: every row at KEK version 2 after replay');
is(secrets_decrypt_counts($standby, 'postgres', $expected_sql), "$nsecrets|$nsecrets|$nsecrets",
	'standby: every secret decrypts after the rotation');
is($standby->safe_psql('postgres', 'SELECT count(*) FROM secretenv.verify_secrets()'),
	'0', 'standby: verify_secrets() clean after the rotation');
is($standby->safe_psql('postgres',
		q{SELECT secretenv.status()->'versions'}),
	qq{[{"rows": $nsecrets, "kek_version": 2, "kek_configured": true, "kek_opens_sample": true}]},
	'standby: status() sees all rows at version 2, its KEK opening them');
is($reader->query_safe(q{SELECT secretenv.secret_get('rep-1')}), $old,
	'standby reader session: same value after the rotation');
my $inv_rotated = $reader->query_safe(q{SELECT (secretenv.cache_stats()->>'invalidations')::int});
cmp_ok($inv_rotated, '>', $inv_before,
	'standby reader session: the replayed rotation invalidated its cache');

# An update on the primary reaches the long-lived standby session at once.
is($reader->query_safe(q{SELECT secretenv.secret_get('rep-1')}), $old,
	'standby reader session: rep-1 cached again');
my $new = 'rep-1-updated-on-primary-' . int(rand(1e9));
$primary->safe_psql('postgres', qq{SELECT secretenv.secret_update('rep-1', '$new')});
$primary->wait_for_catchup($standby);
is($reader->query_safe(q{SELECT secretenv.secret_get('rep-1')}), $new,
	'standby reader session: secret_get returns the value updated on the primary (cache invalidated by replay)');
cmp_ok($reader->query_safe(q{SELECT (secretenv.cache_stats()->>'invalidations')::int}),
	'>', $inv_rotated, 'standby reader session: the replayed update invalidated its cache');
$primary->safe_psql('postgres', q{SELECT secretenv.secret_delete('rep-2')});
$primary->wait_for_catchup($standby);
{
	my ($r, $failed) = $reader->query(q{SELECT secretenv.secret_get('rep-2')});
	is($r, '', 'standby reader session: a secret deleted on the primary is not returned');
	like($reader->{stderr}, qr/ERROR:  secret "rep-2" does not exist/,
		'standby reader session: the deleted secret is reported missing');
	$reader->{stderr} = '';
}
$reader->quit;

# Writes are refused cleanly on the standby.
for my $w (
	[ 'secret_create', q{SELECT secretenv.secret_create('new-on-standby', 'value-on-standby-123')} ],
	[ 'secret_update', q{SELECT secretenv.secret_update('rep-3', 'value-on-standby-456')} ],
	[ 'secret_delete', q{SELECT secretenv.secret_delete('rep-3')} ],
	[ 'secret_rotate_all', q{SELECT secretenv.secret_rotate_all()} ],
	[ 'UPDATE', q{UPDATE secretenv.secrets SET description = 'x'} ])
{
	($out, $err) = run_sql($standby, 'postgres', $w->[1]);
	like($err, qr/ERROR:  25006:/, "standby: $w->[0] refused with 25006 (read_only_sql_transaction)");
}
is($standby->safe_psql('postgres',
		q{SELECT count(*) FILTER (WHERE deleted_at IS NULL), count(*) FILTER (WHERE secret_name = 'new-on-standby') FROM secretenv.secrets}),
	($nsecrets - 1) . '|0', 'standby: nothing was written (rep-2 deleted on the primary, kept for its recovery window)');
is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 't', 'standby still in recovery');

# Nothing crashed on either server.
for my $node ($primary, $standby)
{
	my $log = slurp_file($node->logfile);
	unlike($log, qr/terminated by signal/, $node->name . ': no process terminated by a signal');
}

diag(sprintf('replica: %d secrets decrypted on the standby 3 times, 1 rotation, %.0f s',
	$nsecrets, time - $t0));

$standby->stop;
$primary->stop;
done_testing();
