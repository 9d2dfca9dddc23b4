# Two-phase commit and the credential cache: a prepared change is not
# visible, so the old value is still the committed one and may be served;
# COMMIT PREPARED (run by another session) makes it visible and must reach
# every cache.  COMMIT PREPARED counts as a writer in flight from before it
# starts until its invalidations went out (src/cache/writer_counters.c): a session that
# begins a secret_get while it is in progress reads the table.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;

my $node = new_secretenv_node('twophase', conf => q{
secretenv.kek_passphrase = 'twophase-test-passphrase-0123456789-abcd'
max_prepared_transactions = 5
autovacuum = off
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION secretenv;
	SELECT secretenv.secret_create('tp-key', 'tp-one');
});

my $reader = $node->background_psql('postgres', on_error_stop => 0);
my $get = q{SELECT secretenv.secret_get('tp-key'), secretenv.cache_stats()->>'hits'};
is((split /\|/, $reader->query_safe($get))[0], 'tp-one', 'reader: tp-one');
my ($value, $hits) = split /\|/, $reader->query_safe($get);
is($value, 'tp-one', 'reader: tp-one again');
is($hits, '1', 'from its cache');

$node->safe_psql('postgres', q{
	BEGIN;
	SELECT secretenv.secret_update('tp-key', 'tp-two');
	PREPARE TRANSACTION 'tp';
});
($value, $hits) = split /\|/, $reader->query_safe($get);
is($value, 'tp-one', 'prepared, not committed: the committed value tp-one');

$node->safe_psql('postgres', q{COMMIT PREPARED 'tp'});
($value) = split /\|/, $reader->query_safe($get);
is($value, 'tp-two', 'after COMMIT PREPARED: the very next secret_get returns tp-two');
my ($again, $hits2) = split /\|/, $reader->query_safe($get);
is($again, 'tp-two', 'and it is cached again');
cmp_ok($hits2, '>', $hits, 'as a hit');

# The same for a delete.
$node->safe_psql('postgres', q{
	BEGIN;
	SELECT secretenv.secret_delete('tp-key');
	PREPARE TRANSACTION 'tp2';
	COMMIT PREPARED 'tp2';
});
my ($out, $ret) = $reader->query(q{SELECT secretenv.secret_get('tp-key')});
like($reader->{stderr}, qr/secret "tp-key" does not exist/,
	'a delete committed with COMMIT PREPARED: "does not exist"');
$reader->{stderr} = '';

$reader->quit;
$node->stop;
done_testing();
