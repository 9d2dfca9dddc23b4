
# Copyright (c) secretenv contributors
#
# The README's runnable examples run as written (test/doc_check.py): on a
# throwaway cluster configured with the README's "ini runnable" lines (the
# Installation section's postgresql.conf), every "sql runnable" block runs
# in document order (Installation, the Quick start, then the online
# rotation runbook and the compromise runbook, whose configuration steps
# are appended to postgresql.conf as the runbooks say), each through psql, with no ERROR
# or WARNING, and prints exactly the "text output" block that follows it.
# Two things a reader brings are provided: the passphrase command the
# configuration names (a script printing a passphrase per version, as the
# runbook's "knows v1 and v2" says) and the roles app and dba the grants
# name.
#
# The checker itself fails on a broken example: the 1.1 Quick start
# (relation "app.tokens" does not exist), and an output block that does not
# match what psql prints.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use IPC::Run;
use Test::More;

my $srcdir = "$FindBin::RealBin/../..";
my $checker = "$srcdir/test/doc_check.py";
my $readme = "$srcdir/README.md";
my $dir = PostgreSQL::Test::Utils::tempdir();

sub checker
{
	my (@args) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'python3', $checker, @args ], '<', \undef, '>', \$out, '2>', \$err);
	return ($? >> 8, $out . $err);
}

# The configuration, as the README writes it, with its passphrase command
# pointing at a script of this test.
my $command = write_script($dir, 'secretenv-passphrase',
	'echo "readme-example-passphrase-v$1-0123456789abcdef0123456789"');
my @replace = ('--replace', "/etc/postgresql/secretenv-passphrase=$command");
my ($rc, $conf) = checker('config', $readme, @replace);
is($rc, 0, 'the checker reads the README\'s configuration');
like($conf, qr/^secretenv\.kek_passphrase_command = '\Q$command\E %v'/m,
	'the configuration names the passphrase command at /etc/postgresql/secretenv-passphrase');
like($conf, qr/^shared_preload_libraries = 'secretenv'/m, '... and preloads secretenv');

my $node = new_secretenv_node('readme', preload => 0, conf => $conf);
$node->start;
$node->safe_psql('postgres', 'CREATE ROLE app LOGIN; CREATE ROLE dba LOGIN;');

local $ENV{PGHOST} = $node->host;
local $ENV{PGPORT} = $node->port;
local $ENV{PGUSER} = 'postgres';
my $psql = $node->installed_command('psql');

# Run the examples of $file in a new database $db; the configuration steps
# go to the node's postgresql.conf only when $configure is set.
sub run_examples
{
	my ($db, $file, $configure) = @_;
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	local $ENV{PGDATABASE} = $db;
	return checker('run', $file, '--psql', $psql,
		$configure ? ('--conf', $node->data_dir . '/postgresql.conf') : (), @replace);
}

my $out;
($rc, $out) = run_examples('readme', $readme, 1);
my @lines = grep { /^(not )?ok / } split /\n/, $out;
cmp_ok(scalar(@lines), '>=', 20, 'the README has runnable blocks (Installation, Quick start, rotation and compromise runbooks)');
for my $line (@lines)
{
	my ($not, $what) = $line =~ /^(not )?ok \d+ - (.*)$/;
	ok(!$not, "README example runs as written: $what");
}
is($rc, 0, 'every runnable example of the README runs as written') or diag($out);

# The checker fails on a broken example.
my $text = slurp_file($readme);
(my $old = $text) =~ s{CREATE SCHEMA app;\n.*?\n\nINSERT INTO app\.tokens}{INSERT INTO app.tokens}s
  or die 'the Quick start no longer creates app.tokens';
open(my $fh, '>', "$dir/README-1.1.md") or die $!;
print $fh $old;
close($fh);
($rc, $out) = run_examples('broken', "$dir/README-1.1.md");
is($rc, 1, 'the checker fails on a Quick start whose table does not exist');
like($out, qr/relation "app\.tokens" does not exist/, '... and quotes the error');

(my $wrong = $text) =~ s/ openai-prod \| "sk-\.\.\.a5Hb"/ openai-prod | "sk-...XXXX"/
  or die 'the Quick start no longer shows the mask of openai-prod';
open($fh, '>', "$dir/README-wrong.md") or die $!;
print $fh $wrong;
close($fh);
($rc, $out) = run_examples('wrong', "$dir/README-wrong.md");
is($rc, 1, 'the checker fails when an output block differs from what psql prints');
like($out, qr/output differs/, '... and says so');
like($out, qr/--- expected\n(?:.*\n)*?.*"sk-\.\.\.XXXX"(?:.*\n)*?.*--- got\n(?:.*\n)*?.*"sk-\.\.\.a5Hb"/,
	'... showing the expected and the actual output');

$node->stop;
done_testing();
