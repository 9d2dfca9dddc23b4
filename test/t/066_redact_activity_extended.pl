# Copyright (c) secretenv contributors
#
# pg_stat_activity under the extended protocol (issue 13).  An Execute
# message reports the prepared statement's text again each time it runs;
# secretenv scrubs it when the executor starts, so a literal in a
# prepared statement is not shown while the statement waits, nor after it,
# while the session sits idle; and a plaintext sent as a bind parameter is
# never in the text at all.  pgbench drives the protocol (-M extended and
# -M prepared); an advisory lock held by the test keeps its statement
# running while pg_stat_activity is read, and a client-side sleep keeps the
# session idle afterwards.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;
use IPC::Run;

my $node = new_secretenv_node('activity', conf => q{
secretenv.kek_passphrase = 'PP-activity-6e0d-canyon-kek-passphrase-b81f'
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION secretenv');
my $tmp = PostgreSQL::Test::Utils::tempdir;

# Check ($what) that pgbench's backend comes to match $condition (on
# pg_stat_activity); returns what pg_stat_activity shows as its query then.
sub pgbench_query_when
{
	my ($condition, $what) = @_;
	ok( $node->poll_query_until(
			'postgres',
			"SELECT count(*) = 1 FROM pg_stat_activity WHERE application_name = 'pgbench' AND $condition"),
		$what);
	return $node->safe_psql('postgres',
		"SELECT query FROM pg_stat_activity WHERE application_name = 'pgbench'");
}

for my $mode (qw(extended prepared))
{
	my $literal = 'act' . random_hex();
	my $bound = 'act' . random_hex();
	my $script = "$tmp/$mode.sql";
	# After the statement pgbench sleeps (on the client side): the session
	# is idle until the test ends pgbench.
	PostgreSQL::Test::Utils::append_to_file($script,
		"SELECT pg_advisory_lock(66), secretenv.secret_mask('$literal'), secretenv.secret_mask(:value::text);\n"
		  . "\\sleep 300 s\n");
	my $scrubbed = "SELECT pg_advisory_lock(00), secretenv.secret_mask('"
	  . ('*' x length($literal)) . "'), secretenv.secret_mask(\$1::text);";

	my $locker = $node->background_psql('postgres');
	$locker->query_safe('SELECT pg_advisory_lock(66)');
	my ($out, $err) = ('', '');
	my $pgbench;
	{
		local $ENV{PGAPPNAME} = 'pgbench';
		$pgbench = IPC::Run::start(
			[
				'pgbench', '-n', '-M', $mode, '-c', '1', '-t', '1',
				'-D', "value=$bound",
				'-h', $node->host, '-p', $node->port, '-f', $script, 'postgres'
			],
			'>', \$out, '2>', \$err);
	}

	is(pgbench_query_when("wait_event = 'advisory'", "-M $mode: the statement waits on the lock"),
		$scrubbed,
		"-M $mode: while running, the literal is overwritten and the parameter is \$1");

	$locker->query_safe('SELECT pg_advisory_unlock(66)');
	is(pgbench_query_when("state = 'idle'", "-M $mode: the session goes idle"),
		$scrubbed, "-M $mode: idle, the entry keeps the scrubbed text");
	my $all = $node->safe_psql('postgres', 'SELECT string_agg(query, chr(10)) FROM pg_stat_activity');
	unlike($all, qr/\Q$literal\E|\Q$bound\E/, "-M $mode: no backend shows either plaintext");

	$pgbench->kill_kill;
	$locker->quit;
}

$node->stop;
done_testing();
