# A backend that holds secretenv.secrets open while thousands of writes
# commit does not recurse through their invalidations.
#
# VACUUM truncating the table waits up to 5 s for its exclusive lock while
# readers hold theirs; writers commit meanwhile.  When each write queued a
# relcache invalidation of the table itself, the VACUUM (which holds the
# table open) rebuilt its entry once per queued write, each rebuild opening
# catalogs whose first lock processed the next invalidation: "stack depth
# limit exceeded" while truncating (seen on PostgreSQL 19 in TAP 040).
# Writes now signal through the view secretenv.masked_secrets, which no
# statement holds open.  Here a session holds the table's lock 4 s while
# writes commit at a fixed rate (queued, not overflowing the invalidation
# queue, which would reset it instead), then lets VACUUM truncate.  A read
# after the storm still sees the last write (the cache was dropped).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;
use IPC::Run;

my $node = new_secretenv_node('storm', conf => qq{
secretenv.kek_passphrase = 'storm-test-passphrase-0123456789-abcdefgh'
autovacuum = off
fsync = off
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION secretenv;
	SELECT count(secretenv.secret_create('r-' || k, repeat('x', 200))) FROM generate_series(1, 400) k;
	DELETE FROM secretenv.secrets WHERE secret_name > 'r-15';
});
# Fill this session's cache with r-1, to see it dropped after the storm.
is($node->safe_psql('postgres', q{SELECT secretenv.secret_get('r-1') = repeat('x', 200)}),
	't', 'r-1 read before the storm');

my $holder = $node->background_psql('postgres');
$holder->query_safe('BEGIN; LOCK TABLE secretenv.secrets IN ACCESS SHARE MODE');

my $dir = PostgreSQL::Test::Utils::tempdir;
open(my $fh, '>', "$dir/write.sql") or die;
print $fh "SELECT secretenv.secret_update('r-1', 'v' || nextval('storm_seq'));\n";
close $fh;
$node->safe_psql('postgres', 'CREATE SEQUENCE storm_seq');
my $out = '';
my $writers = IPC::Run::start([ 'pgbench', '-n', '-T', 4, '-R', 600, '-c', 2, '-j', 2,
	'-h', $node->host, '-p', $node->port, '-f', "$dir/write.sql", 'postgres' ],
	'>', \$out, '2>&1');
my ($vout, $verr) = ('', '');
my $vacuum = IPC::Run::start([ 'psql', '-X', '-h', $node->host, '-p', $node->port,
	'-d', 'postgres', '-c', 'VACUUM (VERBOSE) secretenv.secrets' ],
	'>', \$vout, '2>', \$verr);
sleep 4;
$holder->query_safe('COMMIT');
$holder->quit;
ok($writers->finish, 'writers ran') or diag($out);
my ($written) = $out =~ /number of transactions actually processed: (\d+)/;
cmp_ok($written // 0, '>=', 1000, 'at least 1000 writes committed while the lock was held');
ok($vacuum->finish, 'VACUUM succeeded') or diag($verr);
unlike($verr, qr/ERROR/, 'no error from VACUUM (no stack depth exceeded)');
like($verr, qr/truncated \d+ to \d+ pages/, 'VACUUM truncated the table after the wait');
is($node->safe_psql('postgres',
	q{SELECT secretenv.secret_get('r-1') = 'v' || last_value FROM storm_seq}),
	't', 'a read after the storm returns the last write');
$node->stop;
done_testing();
