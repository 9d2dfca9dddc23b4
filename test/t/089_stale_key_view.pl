# Copyright (c) secretenv contributors
#
# No stale key view (issue 14, DESIGN §7d): pg_reload_conf() returns before
# any backend has applied the new settings.  Edit the key settings, reload,
# and at once -- in the same query string, and in another session that was
# already connected -- rotate and ask status(): the rotation re-wraps every
# row under the new KEK, and status() never calls the rotation complete
# under the old configuration.  With and without preload.
use strict;
use warnings;

use FindBin;
use IPC::Run;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use LifecycleTest;
use SecretenvTest;
use Test::More;

my $rows = 2000;

for my $preload (1, 0)
{
	my $mode = $preload ? 'preloaded' : 'not preloaded';
	my $node = new_secretenv_node("stale_$preload", preload => $preload);
	$node->start;
	set_keys($node, 1, 0, no_reload => 1, command => !$preload);
	$node->restart;
	$node->safe_psql('postgres', 'CREATE EXTENSION secretenv');
	generate_secrets($node, 'postgres', $rows);
	my $other = $node->background_psql('postgres');
	# Without preload the first call warns that the passphrase was visible.
	$other->query_safe('SET client_min_messages = error');
	$other->query_safe('SELECT secretenv.current_kek_version()');

	my $v = 1;
	for my $round (1 .. 3)
	{
		# Same session, same query string: no idle moment in between.
		$v++;
		set_keys($node, $v, $v - 1, no_reload => 1, command => !$preload);
		my $out = $node->safe_psql('postgres', q{
SELECT pg_reload_conf();
SELECT secretenv.secret_rotate_all();
SELECT (s->>'current_version') || ' ' || (s->>'rotation_complete') FROM secretenv.status() s;});
		is($out, "t\n$rows\n$v true",
			"$mode, round $round: reload then secret_rotate_all() in one query string rotates every row to version $v");

		# Another session, already connected, right after the reload.
		$v++;
		set_keys($node, $v, $v - 1, no_reload => 1, command => !$preload);
		$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
		is($other->query_safe('SELECT secretenv.secret_rotate_all()'), $rows,
			"$mode, round $round: another session rotates every row to version $v right after the reload");

		# status() right after a reload never reports the old configuration.
		$v++;
		set_keys($node, $v, $v - 1, no_reload => 1, command => !$preload);
		$out = $node->safe_psql('postgres', q{
SELECT pg_reload_conf();
SELECT (s->>'current_version') || ' ' || (s->>'rotation_complete') FROM secretenv.status() s;});
		is($out, "t\n$v false", "$mode, round $round: status() right after the reload shows version $v, rotation incomplete");
		$node->safe_psql('postgres', 'SELECT secretenv.secret_rotate_all()');

		# The procedure, as the next statement of the same session.
		$v++;
		set_keys($node, $v, $v - 1, no_reload => 1, command => !$preload);
		my ($o, $e) = ('', '');
		IPC::Run::run(
			[
				$node->installed_command('psql'), '-XAtq', '-d', $node->connstr('postgres'),
				'-c', 'SELECT pg_reload_conf()', '-c', 'CALL secretenv.secret_rotate(500)'
			],
			'<', \undef, '>', \$o, '2>', \$e);
		is(finished_count($e), $rows,
			"$mode, round $round: secret_rotate as the next statement after the reload rotates every row");
		is(secrets_state($node, 'postgres', $v), "$rows|$rows|$rows",
			"$mode, round $round: secret_rotate brought every row to version $v");
	}
	$other->quit;
	$node->stop;
}
done_testing();
