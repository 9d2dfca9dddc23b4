
# Copyright (c) secretenv contributors
#
# One derivation per reload (issue 26, DESIGN §8d).  A preloaded server with
# 100 idle connections (background psql sessions) and a reload that changes
# secretenv.kek_version (a rotation: version 2 new, version 1 previous),
# after which every connection reads and writes once:
#  - the passphrase command ran only in the postmaster (its parent or
#    grandparent pid), for the new version 2 as for the others; no backend
#    ran it;
#  - no backend ran PBKDF2 (key_config()'s per-process count is 0 in
#    each): they took the KEKs the postmaster published;
#  - every connection saw version 2, read the version-1 row right and wrote
#    and read back a row under version 2;
#  - the reload cost the whole server one PBKDF2 run, in the postmaster,
#    for the one new version 2 (version 1 moved to the previous slot without
#    PBKDF2), and one command run per version (1 and 2, each exactly once:
#    every reload re-runs the command, DESIGN §8a);
# then the same with passphrases written in the configuration (version 3
# new, version 2 previous): no backend ran PBKDF2, every read right, and
# the postmaster ran PBKDF2 exactly once, for version 3, and no command.
# Then the rotation undone (version 2 current again, version 3 previous):
# the postmaster exchanges the two KEKs it holds, no PBKDF2 anywhere,
# every read right.
# The postmaster's PBKDF2 runs are counted from its log (DEBUG1 line
# "secretenv runs PBKDF2 for KEK version N", never key material).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;

my $n = 100;
my $tmp = PostgreSQL::Test::Utils::tempdir;
my $calls = "$tmp/calls.log";
# Logs the version and the pids of its parent and grandparent (sh -c may
# or may not fork before running the script).
my $cmd = write_script($tmp, 'pass.sh', qq{echo "\$1 \$PPID \$(awk '{print \$4}' /proc/\$PPID/stat)" >> '$calls'
echo "reload-test-passphrase-version-\$1-5c8e1a4f7b2d9e6a3c0f"});

my $node = new_secretenv_node('reload_one', conf => "max_connections = 130\nlog_min_messages = debug1\n"
	  . "secretenv.kek_passphrase_command = '$cmd %v'\nsecretenv.kek_version = 1\n");
$node->start;
$node->safe_psql('postgres', q{CREATE EXTENSION secretenv;
SELECT secretenv.secret_create('a', 'value-a');
CREATE TABLE results (pid int, version int, got text, own text, derivations int);});
my $postmaster = (split /\n/, slurp_file($node->data_dir . '/postmaster.pid'))[0];

sub calls
{
	return () unless -e $calls;
	return map { [ split / / ] } split /\n/, slurp_file($calls);
}

# $n connections open and idle (background psql sessions), a reload, then
# each reads and writes once and reports into the results table.
sub round
{
	my ($conf, $generation) = @_;
	my @sessions = map { $node->background_psql('postgres', on_error_stop => 0) } 1 .. $n;
	$_->query_safe('SELECT 1') for @sessions;
	$node->safe_psql('postgres', 'TRUNCATE results');
	my $before = scalar(calls());
	my $log_offset = -s $node->logfile;
	reload_generation($node, $conf, $generation);
	# The postmaster has handled the reload: new connections see it.
	my $log = substr(slurp_file($node->logfile), $log_offset);
	my @pbkdf2 = $log =~ /^\S+ \S+ \S+ \[\Q$postmaster\E\] DEBUG:  secretenv runs PBKDF2 for KEK version (\d+)$/mg;
	for my $s (@sessions)
	{
		# The first statement after the reload lets an idle session process it.
		session_query($s, 'SELECT 1');
		my ($out, $err) = session_query($s, q{INSERT INTO results SELECT pg_backend_pid(), secretenv.current_kek_version(), secretenv.secret_get('a'),
  secretenv.secret_decrypt(e, 'id' || pg_backend_pid(), 'n'), (secretenv.status()->>'kek_derivations_in_this_process')::int
  FROM secretenv.secret_encrypt('own-value', 'id' || pg_backend_pid(), 'n') e});
		diag($err) if $err ne '';
	}
	$_->quit for @sessions;
	my @calls = calls();
	return ([ @calls[ $before .. $#calls ] ], join(' ', map { "v$_" } @pbkdf2));
}

my ($runs, $pbkdf2) = round("secretenv.kek_version = 2\nsecretenv.kek_previous_version = 1\n", 1);
my @runs = @$runs;
is(scalar(grep { $_->[1] ne $postmaster && $_->[2] ne $postmaster } @runs), 0, 'command: no backend ran the passphrase command after the reload');
ok(scalar(grep { $_->[0] eq '2' } @runs) >= 1, 'command: the postmaster ran it for the new version 2');
is(join(' ', sort map { "v$_->[0]" } @runs), 'v1 v2',
	'command: the whole server ran the command once per version for the reload (v1 and v2, once each)');
is($pbkdf2, 'v2', 'command: the whole server ran PBKDF2 once for the reload, in the postmaster, for the new version 2');
is($node->safe_psql('postgres', q{SELECT count(*) || ' ' || sum(derivations) || ' '
	|| count(*) FILTER (WHERE version = 2 AND got = 'value-a' AND own = 'own-value') FROM results}),
	"$n 0 $n", 'command: no PBKDF2 in any of the backends; every one read version 1 and wrote version 2 right');

$node->safe_psql('postgres', 'CALL secretenv.secret_rotate()');

# Passphrases written in the configuration: version 3 new.
my $p2 = 'reload-test-passphrase-version-2-5c8e1a4f7b2d9e6a3c0f';
($runs, $pbkdf2) = round("secretenv.kek_passphrase_command = ''\nsecretenv.kek_passphrase = 'written-passphrase-version-3-8a1f0c2e4b6d9e7f5a3c'\n"
	  . "secretenv.kek_version = 3\nsecretenv.kek_previous_passphrase = '$p2'\nsecretenv.kek_previous_version = 2\n", 2);
is($node->safe_psql('postgres', q{SELECT count(*) || ' ' || sum(derivations) || ' '
	|| count(*) FILTER (WHERE version = 3 AND got = 'value-a' AND own = 'own-value') FROM results}),
	"$n 0 $n", 'passphrases: no PBKDF2 in any of the backends; every read right');
is($pbkdf2, 'v3', 'passphrases: the whole server ran PBKDF2 once for the reload, in the postmaster, for the new version 3');
is(scalar(@$runs), 0, 'passphrases: and no command');

# The rotation undone: both versions' KEKs are already held.
($runs, $pbkdf2) = round("secretenv.kek_passphrase = '$p2'\nsecretenv.kek_version = 2\n"
	  . "secretenv.kek_previous_passphrase = 'written-passphrase-version-3-8a1f0c2e4b6d9e7f5a3c'\nsecretenv.kek_previous_version = 3\n", 3);
is($node->safe_psql('postgres', q{SELECT count(*) || ' ' || sum(derivations) || ' '
	|| count(*) FILTER (WHERE version = 2 AND got = 'value-a' AND own = 'own-value') FROM results}),
	"$n 0 $n", 'rotation undone: no PBKDF2 in any of the backends; every read right');
is($pbkdf2, '', 'rotation undone: no PBKDF2 in the postmaster either (it exchanged the two KEKs it held)');
$node->stop;
done_testing();
