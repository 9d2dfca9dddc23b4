# The credential cache's idle timer after errors.  PostgreSQL's error
# recovery cancels every timeout of a backend; the cache re-arms its key
# timers at the abort and after the ROLLBACK of a failed transaction block,
# so an idle backend still wipes its bucket keys on time (cache_ttl = 10:
# every key is gone 10 s after it was made).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;
use Time::HiRes qw(sleep);

my $node = new_secretenv_node('timer', conf => q{
secretenv.kek_passphrase = 'timer-test-passphrase-0123456789-abcdefgh'
secretenv.cache_ttl = 10
autovacuum = off
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION secretenv;
	SELECT secretenv.secret_create('tm-key', 'tm-value');
});

my %s;
for my $name ('error', 'failed_block', 'quiet')
{
	$s{$name} = $node->background_psql('postgres', on_error_stop => 0);
	is($s{$name}->query_safe(q{SELECT secretenv.secret_get('tm-key')}), 'tm-value',
		"$name: value read and cached");
	is($s{$name}->query_safe(q{SELECT secretenv.cache_stats()->>'live_bucket_keys'}), '1',
		"$name: one bucket key");
}

# An error in an autocommit statement.
$s{error}->query('SELECT 1/0');
like($s{error}->{stderr}, qr/division by zero/, 'error: the statement failed');
$s{error}->{stderr} = '';

# A failed transaction block: the first error aborts it, the second is
# raised while it is already aborted (no abort callback runs then), and the
# ROLLBACK ends it.
$s{failed_block}->query('BEGIN');
$s{failed_block}->query('SELECT 1/0');
$s{failed_block}->query('SELECT 1');
like($s{failed_block}->{stderr}, qr/current transaction is aborted/,
	'failed_block: a second error inside the aborted block');
$s{failed_block}->query('ROLLBACK');
$s{failed_block}->{stderr} = '';

# Idle for longer than cache_ttl plus a second.
sleep(11.5);
for my $name ('error', 'failed_block', 'quiet')
{
	my ($keys, $purges) = split /\|/, $s{$name}->query_safe(q{
		SELECT s->>'live_bucket_keys', s->>'timer_purges' FROM secretenv.cache_stats() s});
	is($keys, '0', "$name: no bucket key left after an idle TTL");
	is($purges, '1', "$name: the timer wiped it");
	$s{$name}->quit;
}

$node->stop;
done_testing();
