
# Copyright (c) secretenv contributors
#
# docs/reference.md against the code (issue 28): test/reference_check.py
# accepts the tree — every SQLSTATE the C code and the SQL scripts raise is
# a row of the SQLSTATE table and every row is raised; every setting the C
# code defines is a row of the settings table with its default and every
# row is defined; every function, procedure, view, table and type of the
# install script is named — and the defaults it reads from the code are the
# boot values a running server reports in pg_settings.  It rejects, naming
# the row, copies of the tree with a planted missing or extra row: a
# SQLSTATE row removed, a row no code raises, a new errcode() in a file of a
# subfolder of src/, a new RAISE in the install script, a settings row
# removed, a row for a setting nobody defines, a wrong default, a new
# DefineCustom*Variable in a subfolder, a new function of the install script.
use strict;
use warnings;

use FindBin;
use PostgreSQL::Test::Utils;
use Test::More;

use lib $FindBin::RealBin;
use SecretenvTest;

my $top = "$FindBin::RealBin/../..";
my $checker = "$top/test/reference_check.py";

my ($rc, $out) = run_tree_checker($checker, $top);
is($rc, 0, 'the tree and docs/reference.md agree') or diag($out);
like($out, qr/^reference: [1-9][0-9]* passed, 0 failed$/m, 'every check ran and passed');
like($out, qr/^ok - SQLSTATE 22S04 is in the SQLSTATE table$/m, '... a code of secretenv\'s own (se_messages.h)');
like($out, qr/^ok - SQLSTATE 22025 is in the SQLSTATE table$/m, '... a code raised only by the SQL scripts');
like($out, qr/^ok - SQLSTATE 2D000 of the table is raised by the code$/m, '... the code PostgreSQL raises for a procedure that commits');
like($out, qr/^ok - the settings table gives secretenv\.audit its default$/m, '... an enum setting\'s default');

# The defaults read from the code are the server's boot values.
my $node = new_secretenv_node('reference');
$node->start;
my %boot = map { split /\|/, $_, 2 }
  split /\n/, $node->safe_psql('postgres',
	"SELECT name, boot_val FROM pg_catalog.pg_settings WHERE name LIKE 'secretenv.%'");
my $listed = `python3 $checker $top --list-settings`;
is($?, 0, 'the checker lists the settings the code defines');
my $compared = 0;
for my $line (split /\n/, $listed)
{
	my ($name, $value) = split /\t/, $line, 2;
	$value //= '';
	next unless exists $boot{$name};    # hidden settings are not in pg_settings
	is($value, $boot{$name}, "the default read from the code for $name is the server's boot value");
	$compared++;
}
cmp_ok($compared, '>=', 12, 'the visible settings were compared');
is(scalar(keys %boot), $compared, 'every setting pg_settings shows was read from the code');
$node->stop;

# A copy of the tree the checker reads, changed by $mutate.
my $n = 0;

sub mutated
{
	my ($mutate) = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir . '/tree' . $n++;
	mkdir $dir or die "$dir: $!";
	for my $part ('src', 'sql', 'docs', 'secretenv.control')
	{
		system('cp', '-R', "$top/$part", "$dir/$part") == 0 or die "could not copy $part";
	}
	$mutate->($dir);
	return run_tree_checker($checker, $dir);
}

# Change a file of the copy in place; dies when $change changes nothing.
sub edit
{
	my ($file, $change) = @_;
	my $text = slurp_file($file);
	my $before = $text;
	$change->($text);
	die "$file: nothing changed" if $text eq $before;
	unlink $file or die "$file: $!";
	append_to_file($file, $text);
}

my @cases = (
	[
		'a SQLSTATE row removed',
		sub {
			edit("$_[0]/docs/reference.md", sub { $_[0] =~ s/^\| `22025` \|.*\n//m });
		},
		qr/^not ok - SQLSTATE 22025 is in the SQLSTATE table: raised at sql\/secretenv--1\.2\.sql:\d+/m
	],
	[
		'a SQLSTATE row no code raises',
		sub {
			edit("$_[0]/docs/reference.md",
				sub { $_[0] =~ s/^(\| `23505` \|)/| `22S09` | nothing raises it | — |\n$1/m });
		},
		qr/^not ok - SQLSTATE 22S09 of the table is raised by the code: row \d+ names it/m
	],
	[
		'an errcode() in a file of a subfolder',
		sub {
			mkdir "$_[0]/src/planted" or die $!;
			append_to_file("$_[0]/src/planted/planted.c",
				"void planted(void)\n{\n\tereport(ERROR, (errcode(ERRCODE_DIVISION_BY_ZERO), errmsg(\"planted\")));\n}\n");
		},
		qr/^not ok - SQLSTATE 22012 is in the SQLSTATE table: raised at src\/planted\/planted\.c:3$/m
	],
	[
		'a RAISE in the install script',
		sub {
			edit("$_[0]/sql/secretenv--1.2.sql",
				sub { $_[0] .= "\nCREATE FUNCTION secretenv.planted() RETURNS void LANGUAGE plpgsql AS \$\$\nBEGIN\n\tRAISE EXCEPTION 'planted'\n\t\tUSING ERRCODE = 'numeric_value_out_of_range';\nEND\n\$\$;\n" });
		},
		qr/^not ok - SQLSTATE 22003 is in the SQLSTATE table: raised at sql\/secretenv--1\.2\.sql:\d+/m
	],
	[
		'a settings row removed',
		sub {
			edit("$_[0]/docs/reference.md", sub { $_[0] =~ s/^\| `secretenv\.redact_names` \|.*\n//m });
		},
		qr/^not ok - secretenv\.redact_names is in the settings table: defined at src\/.*\.c:\d+$/m
	],
	[
		'a settings row nobody defines',
		sub {
			edit("$_[0]/docs/reference.md",
				sub { $_[0] =~ s/^(\| `secretenv\.kek_version` \|)/| `secretenv.kek_pepper` | string | `''` | planted |\n$1/m });
		},
		qr/^not ok - secretenv\.kek_pepper of the settings table is defined by the code/m
	],
	[
		'a wrong default',
		sub {
			edit("$_[0]/docs/reference.md",
				sub { $_[0] =~ s/^(\| `secretenv\.cache_ttl` \|[^|]*\| )`60`/$1`120`/m });
		},
		qr/^not ok - the settings table gives secretenv\.cache_ttl its default: table: '120', code \(src\/.*\): '60'$/m
	],
	[
		'a setting defined in a file of a subfolder',
		sub {
			mkdir "$_[0]/src/planted" or die $!;
			append_to_file("$_[0]/src/planted/setting.c",
				"#define PLANTED_DEFAULT 7\nstatic int planted;\nvoid planted_init(void)\n{\n\tDefineCustomIntVariable(\"secretenv.planted_setting\", \"Planted.\", NULL, &planted,\n\t\t\t\t\t\t\tPLANTED_DEFAULT, 0, 10, PGC_SUSET, 0, NULL, NULL, NULL);\n}\n");
		},
		qr/^not ok - secretenv\.planted_setting is in the settings table: defined at src\/planted\/setting\.c:5$/m
	],
	[
		'a function the reference does not name',
		sub {
			edit("$_[0]/sql/secretenv--1.2.sql",
				sub { $_[0] .= "\nCREATE FUNCTION secretenv.planted_function() RETURNS int LANGUAGE sql AS 'SELECT 1';\n" });
		},
		qr/^not ok - function secretenv\.planted_function is in docs\/reference\.md$/m
	]);

for my $case (@cases)
{
	my ($what, $mutate, $expected) = @$case;
	($rc, $out) = mutated($mutate);
	is($rc, 1, "$what: the checker fails");
	like($out, $expected, "$what: for that reason") or diag($out);
}

done_testing();
