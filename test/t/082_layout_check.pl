
# Copyright (c) secretenv contributors
#
# Source layout (issue 18): test/layout_check.py accepts the tree, and
# rejects a copy of it with an include cycle between two modules, a
# PostgreSQL header in the cryptographic core, a source file the README's
# Layout does not name, and a Layout line naming a file that is not there.
use strict;
use warnings;

use File::Copy;
use FindBin;
use PostgreSQL::Test::Utils;
use Test::More;

use lib $FindBin::RealBin;
use SecretenvTest;

my $top = "$FindBin::RealBin/../..";
my $checker = "$top/test/layout_check.py";

my ($rc, $out) = run_tree_checker($checker, $top);
is($rc, 0, 'the tree passes');
like($out, qr/^layout: [1-9][0-9]* passed, 0 failed$/m, 'every check ran and passed');
like($out, qr/^ok - no include cycle between the modules of src\/$/m, 'the cycle check ran');

# A copy of src/ and README.md, changed by $mutate.
my $n = 0;

sub mutated
{
	my ($mutate) = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir . '/tree' . $n++;
	mkdir $dir or die "$dir: $!";
	system('cp', '-R', "$top/src", "$dir/src") == 0 or die "could not copy src/";
	copy("$top/README.md", "$dir/README.md") or die "README.md: $!";
	$mutate->($dir);
	return run_tree_checker($checker, $dir);
}

sub append_to
{
	my ($file, $text) = @_;
	open my $fh, '>>', $file or die "$file: $!";
	print $fh $text;
	close $fh;
}

my @cases = (
	[
		'an include cycle',
		sub { append_to("$_[0]/src/cache/cache.c", "#include \"cache/coherence.h\"\n") },
		qr/^not ok - no include cycle between the modules of src\/: .*src\/cache\/cache -> .*src\/cache\/coherence/m
	],
	[
		'a PostgreSQL header in the core',
		sub { append_to("$_[0]/src/crypto/mask.c", "#include \"postgres.h\"\n") },
		qr/^not ok - src\/crypto\/mask\.c includes no PostgreSQL header: "postgres\.h"$/m
	],
	[
		'a system header outside libc and OpenSSL in the core',
		sub { append_to("$_[0]/src/crypto/mask.c", "#include <utils/palloc.h>\n") },
		qr/^not ok - src\/crypto\/mask\.c includes only libc and OpenSSL headers: <utils\/palloc\.h>$/m
	],
	[
		'a file the Layout does not name',
		sub { append_to("$_[0]/src/unlisted_area.c", "int unlisted;\n") },
		qr/^not ok - the README's Layout names src\/unlisted_area\.c$/m
	],
	[
		'a Layout line naming a missing file',
		sub {
			my $readme = slurp_file("$_[0]/README.md");
			$readme =~ s/^(  secretenv\.c .*)$/$1\n  vanished_area.c/m or die "no secretenv.c line";
			open my $fh, '>', "$_[0]/README.md" or die $!;
			print $fh $readme;
			close $fh;
		},
		qr/^not ok - vanished_area\.c, named in the README's Layout, is in src\/$/m
	],);

foreach my $case (@cases)
{
	my ($name, $mutate, $expect) = @$case;
	my ($crc, $cout) = mutated($mutate);
	is($crc, 1, "$name: the checker fails");
	like($cout, $expect, "$name: it says which rule");
	like($cout, qr/^layout: \d+ passed, [1-9]\d* failed$/m, "$name: the summary counts the failure");
}

done_testing();
