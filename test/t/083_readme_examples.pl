
# Copyright (c) secretenv contributors
#
# The README has at most 300 lines, and the runnable examples of the README
# and of docs/ run as written (test/doc_check.py), the path a new user
# follows first: on a throwaway
# cluster configured with the README's "ini runnable" lines (the Install
# section's postgresql.conf, its passphrase command being the sample command
# contrib/secretenv-passphrase-file that the README's own shell lines
# install, reading the passphrase files kek-v1, kek-v2, kek-v3 that the
# README's and the runbooks' shell lines make), every "sql
# runnable" block runs in order — the README's Install section (CREATE
# EXTENSION and the roles) and Quick start, then every document of the
# README's "## Documentation" map in the map's order (the online rotation,
# compromise and audit-queries runbooks among them; their configuration
# steps are appended to postgresql.conf as they say) — each through psql,
# with no ERROR or WARNING, printing exactly the "text output" block that
# follows it.
#
# The map is the run order and must be complete: every Markdown file under
# docs/ is in it and every file it links exists and opens with its title
# and a "What this is: " paragraph, so a new document runs once it is
# listed.  The checker fails on a file left out of the map, on a map link to
# a missing file, on a mapped file that does not say what it is, on a
# relative link to a missing file or heading, on a new
# mapped document whose example fails,
# on a broken example (the 1.1 Quick start, whose app.tokens does not
# exist) and on an output block that does not match what psql prints.

use strict;
use warnings;

use Cwd ();
use File::Find;
use File::Path qw(make_path);
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use IPC::Run;
use Test::More;

my $srcdir = Cwd::abs_path("$FindBin::RealBin/../..");
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

# The README's key setup, run as written but for its paths: the shell lines
# of its blocks and of the rotation runbook that name /etc/postgresql/ run
# as the server's user (their "sudo" and "sudo -u postgres" dropped) with
# /etc/postgresql/ moved under this test's directory.  They make the key
# directory, the passphrase file of version 1 (and the runbook's of version
# 2; version 3's the same way, as the compromise runbook says) and install
# the sample passphrase command, which the configuration then names; the
# server finds the files through the command's SECRETENV_KEY_DIR.
my $etc = "$dir/etc/postgresql";
make_path($etc);
sub shell_steps
{
	my ($file) = @_;
	my @steps;
	my $text = slurp_file($file);
	while ($text =~ /^[ \t]*```sh\n(.*?)^[ \t]*```/msg)
	{
		push @steps, grep { m{/etc/postgresql/} } map { s/^\s+//r } split /\n/, $1;
	}
	return @steps;
}
my @steps = (shell_steps($readme), shell_steps("$srcdir/docs/runbooks/rotation.md"));
is(scalar(@steps), 4, 'the README and the rotation runbook set up the keys in 4 shell lines');
push @steps, $steps[-1] =~ s/kek-v2/kek-v3/r;
for my $step (@steps)
{
	(my $run = $step) =~ s{^sudo (?:-u postgres )?}{};
	$run =~ s{/etc/postgresql/}{$etc/}g;
	$run =~ s{#.*$}{};
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'sh', '-c', "cd '$srcdir' && $run" ], '<', \undef, '>', \$out, '2>', \$err);
	is($?, 0, "key setup runs as written: $step") or diag($err);
}
my $keys = "$etc/secretenv";
for my $version (1 .. 3)
{
	ok(-s "$keys/kek-v$version" && ((stat "$keys/kek-v$version")[2] & 077) == 0,
		"the passphrase file of version $version exists, closed to group and others");
}
$ENV{SECRETENV_KEY_DIR} = $keys;
my $command = "$etc/secretenv-passphrase";
ok(-x $command, 'the sample passphrase command is installed');
my @replace = ('--replace', "/etc/postgresql/secretenv-passphrase=$command");

# The README stays a front door a newcomer reads in minutes.
my $readme_lines = () = slurp_file($readme) =~ /\n/g;
cmp_ok($readme_lines, '<=', 300, "the README has at most 300 lines ($readme_lines): the rest belongs in docs/");

# The configuration, as the README writes it.
my ($rc, $conf) = checker('config', $readme, @replace);
is($rc, 0, 'the checker reads the README\'s configuration');
like($conf, qr/^secretenv\.kek_passphrase_command = '\Q$command\E %v'/m,
	'the configuration names the passphrase command at /etc/postgresql/secretenv-passphrase');
like($conf, qr/^shared_preload_libraries = 'secretenv'/m, '... and preloads secretenv');

# The documents, in the map's order.
my $out;
($rc, $out) = checker('order', $readme);
my @docs = grep { !/^not ok/ } split /\n/, $out;
is($rc, 0, 'every document the map links exists and says what it is, every relative link resolves, and every docs/ file is in the map') or diag($out);
is($docs[0], $readme, 'the README comes first');
my @files;
find(sub { push @files, $File::Find::name if /\.md$/ }, "$srcdir/docs");
my %listed = map { $_ => 1 } @docs;
is_deeply([ grep { !$listed{$_} } sort @files ], [], 'every Markdown file under docs/ that exists is in the run order');
my %at = map { $docs[$_] => $_ } 0 .. $#docs;
ok(defined $at{"$srcdir/docs/runbooks/rotation.md"}
	  && defined $at{"$srcdir/docs/runbooks/compromise.md"}
	  && defined $at{"$srcdir/docs/runbooks/audit-queries.md"}
	  && $at{"$srcdir/docs/runbooks/rotation.md"} < $at{"$srcdir/docs/runbooks/compromise.md"}
	  && $at{"$srcdir/docs/runbooks/compromise.md"} < $at{"$srcdir/docs/runbooks/audit-queries.md"},
	'the rotation runbook runs before the compromise runbook, and that before the audit queries');

sub new_node
{
	my ($name) = @_;
	my $node = new_secretenv_node($name, preload => 0, conf => $conf);
	$node->start;
	return $node;
}

my $node = new_node('readme');
my $psql = $node->installed_command('psql');

# Run the examples of @files in a new UTF8 database $db of $node (the
# README's createdb); the configuration steps go to the node's
# postgresql.conf.
sub run_examples
{
	my ($node, $db, @files) = @_;
	$node->safe_psql('postgres', "CREATE DATABASE $db ENCODING 'UTF8' TEMPLATE template0");
	local $ENV{PGHOST} = $node->host;
	local $ENV{PGPORT} = $node->port;
	local $ENV{PGUSER} = 'postgres';
	local $ENV{PGDATABASE} = $db;
	return checker('run', @files, '--psql', $psql,
		'--conf', $node->data_dir . '/postgresql.conf', @replace);
}

($rc, $out) = run_examples($node, 'appdb', @docs);
my @lines = grep { /^(not )?ok / } split /\n/, $out;
cmp_ok(scalar(@lines), '>=', 25, 'the README and the docs have runnable blocks');
for my $line (@lines)
{
	my ($not, $what) = $line =~ /^(not )?ok \d+ - (.*)$/;
	ok(!$not, "example runs as written: $what");
}
is($rc, 0, 'every runnable example of the README and of docs/ runs as written') or diag($out);
for my $doc ('README.md', 'docs/runbooks/rotation.md', 'docs/runbooks/compromise.md', 'docs/runbooks/audit-queries.md')
{
	like($out, qr/^ok \d+ - \Q$doc\E line \d+/m, "the run includes the examples of $doc");
}
$node->stop;

# The map: a copy of the README and docs/, changed by $mutate.
my $trees = 0;

sub mutated_tree
{
	my ($mutate) = @_;
	my $tree = "$dir/tree" . $trees++;
	mkdir $tree or die "$tree: $!";
	system('cp', '-R', $readme, "$srcdir/docs", $tree) == 0 or die 'could not copy the docs';
	$mutate->($tree);
	return $tree;
}

my $planted = "# Planted\n\nWhat this is: a document the map does not name.\n\n```sql runnable\nSELECT secretenv.secret_get('no-such-secret');\n```\n";
my $tree = mutated_tree(sub { append_to_file("$_[0]/docs/runbooks/planted.md", $planted) });
($rc, $out) = checker('order', "$tree/README.md");
is($rc, 1, 'the checker fails on a docs/ file the map leaves out');
like($out, qr/^not ok - docs\/runbooks\/planted\.md is not in the documentation map of README\.md$/m, '... and names it');

$tree = mutated_tree(sub {
	append_to_file("$_[0]/docs/audit.md", "\nSee [the old section](security.md#no-such-heading) and [the old file](no-such-file.md).\n");
});
($rc, $out) = checker('order', "$tree/README.md");
is($rc, 1, 'the checker fails on links to a missing heading and a missing file');
like($out, qr/^not ok - docs\/audit\.md links to security\.md#no-such-heading, a heading that does not exist$/m, '... naming the heading');
like($out, qr/^not ok - docs\/audit\.md links to no-such-file\.md, which does not exist$/m, '... naming the file');

$tree = mutated_tree(sub {
	my $text = slurp_file("$_[0]/README.md");
	$text =~ s{^(- \[docs/design\.md\].*)$}{$1\n- [docs/planted.md](docs/planted.md): planted}m or die 'no design.md in the map';
	unlink "$_[0]/README.md" or die $!;
	append_to_file("$_[0]/README.md", $text);
});
($rc, $out) = checker('order', "$tree/README.md");
is($rc, 1, 'the checker fails on a map link to a missing file');
like($out, qr/^not ok - docs\/planted\.md, linked from the documentation map, does not exist$/m, '... and names it');

append_to_file("$tree/docs/planted.md", "# Planted\n\nA document that does not say what it is.\n");
($rc, $out) = checker('order', "$tree/README.md");
is($rc, 1, 'the checker fails on a mapped document that does not say what it is');
like($out, qr/^not ok - docs\/planted\.md does not open with its title and a "What this is: " paragraph$/m, '... and names it');

unlink "$tree/docs/planted.md" or die $!;
append_to_file("$tree/docs/planted.md", $planted);
($rc, $out) = checker('order', "$tree/README.md");
my @planted_order = grep { !/^not ok/ } split /\n/, $out;
is($planted_order[-1], "$tree/docs/planted.md", 'a new document linked last in the map runs last, with no change to the test');
$node = new_node('planted');
($rc, $out) = run_examples($node, 'planted', $readme, "$tree/docs/planted.md");
is($rc, 1, 'the run fails on the new document\'s failing example');
like($out, qr/^not ok \d+ - docs\/planted\.md line 5$/m, '... naming the document and the line');
like($out, qr/secret "no-such-secret" does not exist/, '... and quoting the error');
$node->stop;

# The checker fails on a broken example.
my $text = slurp_file($readme);
(my $old = $text) =~ s{CREATE SCHEMA app;\n.*?\n\nINSERT INTO app\.tokens}{INSERT INTO app.tokens}s
  or die 'the Quick start no longer creates app.tokens';
open(my $fh, '>', "$dir/README-1.1.md") or die $!;
print $fh $old;
close($fh);
$node = new_node('broken');
($rc, $out) = run_examples($node, 'broken', "$dir/README-1.1.md");
$node->stop;
is($rc, 1, 'the checker fails on a Quick start whose table does not exist');
like($out, qr/^not ok \d+ - README-1\.1\.md line \d+ \(output checked\)\n# psql exited with status 3\n# stderr: .*ERROR:/m,
	'... naming the block and psql\'s ERROR (its text redacted: the statement passes a plaintext to secret_encrypt)');

(my $wrong = $text) =~ s/ openai-prod \| "sk-\.\.\.a5Hb"/ openai-prod | "sk-...XXXX"/
  or die 'the Quick start no longer shows the mask of openai-prod';
open($fh, '>', "$dir/README-wrong.md") or die $!;
print $fh $wrong;
close($fh);
$node = new_node('wrong');
($rc, $out) = run_examples($node, 'wrong', "$dir/README-wrong.md");
$node->stop;
is($rc, 1, 'the checker fails when an output block differs from what psql prints');
like($out, qr/output differs/, '... and says so');
like($out, qr/--- expected\n(?:.*\n)*?.*"sk-\.\.\.XXXX"(?:.*\n)*?.*--- got\n(?:.*\n)*?.*"sk-\.\.\.a5Hb"/,
	'... showing the expected and the actual output');

done_testing();
