# The credential cache on a physical standby and on a logical-replication
# subscriber of secretenv.secrets (DESIGN 7b): a backend that had the old
# value cached gets the new value from its very next secret_get once the
# change is applied there, and a deleted secret is gone at once.
#
# "Applied" is observed with a read that never uses the cache (the
# decrypted_secrets view, from a fresh connection each poll).  On the
# standby, replay must deliver the commit's invalidation before a cached
# value could be served (src/cache/coherence.c); on the subscriber, apply fires
# no statement triggers, so the replica-only row trigger is what
# invalidates.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;

my $keys = q{
secretenv.kek_passphrase = 'replicas-test-passphrase-0123456789-abcdef'
secretenv.cache_ttl = 300
};

my $primary = new_secretenv_node('primary', allows_streaming => 'logical', conf => $keys);
$primary->start;
$primary->safe_psql('postgres', q{
	CREATE EXTENSION secretenv;
	SELECT secretenv.secret_create('rk-' || i, 'rk-' || i || '-v1') FROM generate_series(1, 4) i;
	CREATE PUBLICATION secrets_pub FOR TABLE secretenv.secrets;
});

$primary->backup('b1');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b1', has_streaming => 1);
$standby->start;

my $subscriber = new_secretenv_node('subscriber', conf => $keys);
$subscriber->start;
$subscriber->safe_psql('postgres', 'CREATE EXTENSION secretenv');
my $connstr = $primary->connstr . ' dbname=postgres';
$subscriber->safe_psql('postgres',
	"CREATE SUBSCRIPTION secrets_sub CONNECTION '$connstr' PUBLICATION secrets_pub");
$primary->wait_for_catchup($standby);
$subscriber->wait_for_subscription_sync($primary, 'secrets_sub');

# Wait until a non-cached read on $node returns $expected for $name.
sub applied
{
	my ($node, $name, $expected) = @_;
	return $node->poll_query_until('postgres', qq{
		SELECT coalesce((SELECT value FROM secretenv.decrypted_secrets
						 WHERE secret_name = '$name'), '<absent>')}, $expected);
}

sub cache_stat
{
	my ($session, $field) = @_;
	return $session->query_safe("SELECT secretenv.cache_stats()->>'$field'");
}

my $round = 1;
my $rk1 = 'rk-1-v1';
for my $replica ([ 'standby', $standby ], [ 'subscriber', $subscriber ])
{
	my ($label, $node) = @$replica;
	my $reader = $node->background_psql('postgres', on_error_stop => 0);

	# Warm cache: the second read of each name is a hit.
	is($reader->query_safe(q{SELECT secretenv.secret_get('rk-1')}), $rk1, "$label: rk-1 read");
	is($reader->query_safe(q{SELECT secretenv.secret_get('rk-2')}), 'rk-2-v1', "$label: rk-2 read");
	my $hits = cache_stat($reader, 'hits');
	is($reader->query_safe(q{SELECT secretenv.secret_get('rk-1') || ' ' || secretenv.secret_get('rk-2')}),
		"$rk1 rk-2-v1", "$label: read again");
	is(cache_stat($reader, 'hits') - $hits, 2, "$label: both served from the cache");

	# An update on the primary.
	$round++;
	$rk1 = "rk-1-v$round";
	$primary->safe_psql('postgres', "SELECT secretenv.secret_update('rk-1', 'rk-1-v$round')");
	ok(applied($node, 'rk-1', "rk-1-v$round"), "$label: the update is applied (uncached read)");
	is($reader->query_safe(q{SELECT secretenv.secret_get('rk-1')}), "rk-1-v$round",
		"$label: the cached backend's very next secret_get returns the new value");

	# The cache keeps working afterwards.
	$hits = cache_stat($reader, 'hits');
	is($reader->query_safe(q{SELECT secretenv.secret_get('rk-1')}), "rk-1-v$round",
		"$label: and again");
	is(cache_stat($reader, 'hits') - $hits, 1, "$label: that one from the cache");

	# A delete on the primary.
	is($reader->query_safe(q{SELECT secretenv.secret_get('rk-2')}), 'rk-2-v1',
		"$label: rk-2 cached");
	$primary->safe_psql('postgres', q{SELECT secretenv.secret_delete('rk-2')});
	ok(applied($node, 'rk-2', '<absent>'), "$label: the delete is applied (uncached read)");
	my ($out, $failed) = $reader->query(
		q{SELECT secretenv.secret_get('rk-2')});
	is($out, '', "$label: the deleted secret is not returned");
	like($reader->{stderr}, qr/secret "rk-2" does not exist/,
		"$label: it is reported missing");
	$reader->{stderr} = '';

	# Put rk-2 back for the next replica: deleted, not destroyed, it is restored.
	$primary->safe_psql('postgres', q{SELECT secretenv.secret_restore('rk-2')});
	ok(applied($node, 'rk-2', 'rk-2-v1'), "$label: rk-2 restored");
	$reader->quit;
}

# The statement trigger does not fire under apply: the subscriber's
# invalidation came from the replica-only row trigger.
is($subscriber->safe_psql('postgres', q{
	SELECT string_agg(tgname || ':' || tgenabled::text, ',' ORDER BY tgname)
	FROM pg_trigger WHERE tgrelid = 'secretenv.secrets'::regclass AND NOT tgisinternal}),
	'secrets_audit_write:O,secrets_check_envelope:A,secrets_destroy_versions:O,secrets_destroy_versions_on_truncate:O,secrets_identity_immutable:A,secrets_invalidate_caches:A,secrets_invalidate_caches_on_apply:R,secrets_keep_versions:O,secrets_value_encrypted_at:A',
	'subscriber: the row trigger is enabled for replica sessions only');

$subscriber->stop;
$standby->stop;
$primary->stop;
done_testing();
