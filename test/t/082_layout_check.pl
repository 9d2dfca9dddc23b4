
# Copyright (c) secretenv contributors
#
# Source layout (issues 18 and 28): test/layout_check.py accepts the built
# tree, and rejects a copy of it with an include cycle between two modules,
# an include not written from src/, a call cycle between two files (planted
# in an object file), a PostgreSQL header in the cryptographic core, a file
# outside its area or in a folder docs/layout.md does not declare, a file
# the page does not name, a line of the page naming a missing file, and an
# unbuilt file (whose calls it cannot read).
use strict;
use warnings;

use File::Basename;
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
like($out, qr/^ok - no include cycle between the modules of src\/$/m, 'the include cycle check ran');
like($out, qr/^ok - no call cycle between the files of src\/$/m, 'the call cycle check ran');
like($out, qr/^ok - docs\/layout\.md lists src\/redaction\/redact_log\.c under src\/redaction\/$/m,
	'a file is checked against its area');

# A copy of src/ (with its object files) and docs/layout.md, changed by $mutate.
my $n = 0;

sub mutated
{
	my ($mutate) = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir . '/tree' . $n++;
	mkdir $dir or die "$dir: $!";
	mkdir "$dir/docs" or die "$dir/docs: $!";
	system('cp', '-R', "$top/src", "$dir/src") == 0 or die "could not copy src/";
	copy("$top/docs/layout.md", "$dir/docs/layout.md") or die "docs/layout.md: $!";
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

sub move_file
{
	my ($from, $to) = @_;
	mkdir dirname($to);
	move($from, $to) or die "$from -> $to: $!";
}

# cache.o gains a call of se_secrets_relid, which coherence.o defines, while
# coherence.o calls cache.o: linked into cache.o as the compiler would.
sub plant_call_cycle
{
	my ($dir) = @_;
	append_to("$dir/planted.c",
		"extern int se_secrets_relid(void);\nint se_planted_call(void);\n"
		  . "int se_planted_call(void) { return se_secrets_relid(); }\n");
	system('cc', '-c', '-o', "$dir/planted.o", "$dir/planted.c") == 0
	  or die "could not compile the planted call";
	system('ld', '-r', '-o', "$dir/cache.o", "$dir/src/cache/cache.o", "$dir/planted.o") == 0
	  or die "could not link the planted call into cache.o";
	move("$dir/cache.o", "$dir/src/cache/cache.o") or die $!;
}

my @cases = (
	[
		'an include cycle',
		sub { append_to("$_[0]/src/cache/cache.c", "#include \"cache/coherence.h\"\n") },
		qr/^not ok - no include cycle between the modules of src\/: .*src\/cache\/cache -> .*src\/cache\/coherence/m
	],
	[
		'an include not written from src/',
		sub { append_to("$_[0]/src/keys/key_freshness.c", "#include \"keyring.h\"\n") },
		qr/^not ok - src\/keys\/key_freshness\.c includes our headers from src\/: "keyring\.h": write "keys\/keyring\.h"$/m
	],
	[
		'a call cycle',
		\&plant_call_cycle,
		qr/^not ok - no call cycle between the files of src\/: (?=.*src\/cache\/cache\.c -\(se_secrets_relid\)-> src\/cache\/coherence\.c)(?=.*src\/cache\/coherence\.c -\(se_cache_[a-z_]+\)-> src\/cache\/cache\.c)/m
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
		'a file outside its area',
		sub {
			move_file("$_[0]/src/redaction/redact_log.$_", "$_[0]/src/keys/redact_log.$_") for qw(c o);
		},
		qr/^not ok - docs\/layout\.md lists src\/keys\/redact_log\.c under src\/keys\/: it lists it under src\/redaction\/$/m
	],
	[
		'a file in a folder the page does not declare',
		sub { move_file("$_[0]/src/keys/key_freshness.$_", "$_[0]/src/misc/key_freshness.$_") for qw(c o) },
		qr/^not ok - src\/misc\/, holding src\/misc\/key_freshness\.c, is an area of docs\/layout\.md$/m
	],
	[
		'a file the page does not name',
		sub { append_to("$_[0]/src/keys/unlisted_area.c", "int unlisted;\n") },
		qr/^not ok - docs\/layout\.md lists src\/keys\/unlisted_area\.c under src\/keys\/$/m
	],
	[
		'a line of the page naming a missing file',
		sub {
			my $doc = slurp_file("$_[0]/docs/layout.md");
			$doc =~ s/^(  secretenv\.c .*)$/$1\n  vanished_area.c                  gone/m
			  or die "no secretenv.c line";
			open my $fh, '>', "$_[0]/docs/layout.md" or die $!;
			print $fh $doc;
			close $fh;
		},
		qr/^not ok - src\/vanished_area\.c, listed in docs\/layout\.md, is there$/m
	],
	[
		'a file not built',
		sub { unlink "$_[0]/src/keys/keyring.o" or die $! },
		qr/^not ok - every \.c file of src\/ is built \(the calls are read from its object file\): no object file for src\/keys\/keyring\.c; run make first$/m
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
