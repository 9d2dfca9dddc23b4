
# Copyright (c) secretenv contributors
#
# META.json (issue 17): test/meta_check.py accepts the shipped META.json
# against PGXN Meta Spec 1.0.0 and the tree, and rejects, naming the rule,
# documents that break the spec (missing required key, a version that is not
# SemVer, an unknown license, an unknown key, an extension without file, a
# bad prereq range, an unknown phase) or disagree with the tree (a version
# other than secretenv.control's default_version, a file that does not
# exist, a Debian changelog of another version).
use strict;
use warnings;

use File::Copy;
use File::Path qw(make_path);
use FindBin;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;

use lib $FindBin::RealBin;
use SecretenvTest;

my $top = "$FindBin::RealBin/../..";
my $checker = "$top/test/meta_check.py";

# The shipped tree.
my ($rc, $out) = run_tree_checker($checker, $top);
is($rc, 0, 'the shipped META.json passes');
like($out, qr/^meta: 17 passed, 0 failed$/m, 'every check ran and passed');
unlike($out, qr/^not ok/m, 'no check failed');

# A copy of the files the checker reads, with META.json changed by $mutate.
my $json = JSON::PP->new->canonical->pretty;
my $meta = $json->decode(slurp_file("$top/META.json"));
my $n = 0;

sub mutated
{
	my ($mutate, $tree_mutate) = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir . '/tree' . $n++;
	make_path("$dir/sql", "$dir/debian");
	copy("$top/$_", "$dir/$_") or die "$_: $!"
	  for ('secretenv.control', 'README.md', 'debian/changelog', 'sql/secretenv--1.2.sql');
	my $m = $json->decode($json->encode($meta));
	$mutate->($m);
	open my $fh, '>', "$dir/META.json" or die $!;
	print $fh $json->encode($m);
	close $fh;
	$tree_mutate->($dir) if $tree_mutate;
	return run_tree_checker($checker, $dir);
}

my @cases = (
	[ 'license missing', sub { delete $_[0]{license} }, qr/not ok - top: required key 'license' is missing/ ],
	[ 'meta-spec missing', sub { delete $_[0]{'meta-spec'} }, qr/not ok - top: required key 'meta-spec' is missing/ ],
	[ 'version 1.1 (not SemVer)', sub { $_[0]{version} = '1.1' }, qr/not ok - version: .*not a semantic version/ ],
	[ 'license gpl', sub { $_[0]{license} = 'gpl' }, qr/not ok - license: .*'gpl' is not one of/ ],
	[ 'unknown top-level key', sub { $_[0]{homepage} = 'x' }, qr/not ok - top: .*unknown key 'homepage'/ ],
	[ 'provides without file', sub { delete $_[0]{provides}{secretenv}{file} }, qr/not ok - provides: .*needs file and version/ ],
	[ 'bad prereq range', sub { $_[0]{prereqs}{runtime}{requires}{PostgreSQL} = 'fifteen' }, qr/not ok - prereqs: .*not a version range/ ],
	[ 'unknown phase', sub { $_[0]{prereqs}{install} = { requires => { PostgreSQL => '15.0.0' } } }, qr/not ok - prereqs: .*unknown key 'install'/ ],
	[ 'tag with a slash', sub { push @{ $_[0]{tags} }, 'a/b' }, qr/not ok - tags: / ],
	[ 'meta-spec 2.0.0', sub { $_[0]{'meta-spec'}{version} = '2.0.0' }, qr/not ok - meta_spec: meta-spec.version must be 1.0.x/ ],
	[ 'bugtracker mailto not an address', sub { $_[0]{resources}{bugtracker}{mailto} = 'nobody' }, qr/not ok - resources: / ],
	[ 'version 1.3.0 (not the control file\'s)', sub { $_[0]{version} = $_[0]{provides}{secretenv}{version} = '1.3.0' },
		qr/not ok - matches_control: version '1.3.0' is not secretenv.control's default_version '1.2'/ ],
	[ 'provides.version differs', sub { $_[0]{provides}{secretenv}{version} = '1.0.0' }, qr/not ok - matches_control: provides.secretenv.version differs/ ],
	[ 'abstract differs from the control comment', sub { $_[0]{abstract} = 'Something else' }, qr/not ok - matches_control: abstract differs/ ],
	[ 'file of another version', sub { $_[0]{provides}{secretenv}{file} = 'sql/secretenv--1.0.sql' }, qr/not ok - files: .*install script of the default version/ ],
	[ 'runtime without PostgreSQL', sub { $_[0]{prereqs}{runtime}{requires} = { plpgsql => 0 } }, qr/not ok - prereq_postgresql: / ],
);
for my $case (@cases)
{
	my ($name, $mutate, $expect) = @$case;
	($rc, $out) = mutated($mutate);
	is($rc, 1, "$name: rejected");
	like($out, $expect, "$name: for that reason");
}

# Disagreements with the tree rather than in META.json.
($rc, $out) = mutated(sub { }, sub { unlink "$_[0]/README.md" });
is($rc, 1, 'missing docfile: rejected');
like($out, qr/not ok - files: provides.secretenv.docfile 'README.md' does not exist/, 'missing docfile: for that reason');
($rc, $out) = mutated(
	sub { },
	sub {
		my $f = "$_[0]/debian/changelog";
		my $c = slurp_file($f);
		$c =~ s/^secretenv \([0-9.]+-1\)/secretenv (1.0-1)/;
		open my $fh, '>', $f or die $!;
		print $fh $c;
		close $fh;
	});
is($rc, 1, 'Debian changelog of 1.0: rejected');
like($out, qr/not ok - debian_version: .*'1.0' is not the default_version/, 'Debian changelog of 1.0: for that reason');

($rc, $out) = mutated(sub { }, sub { open my $b, '>', "$_[0]/META.json" or die $!; print $b '{"name": '; close $b; });
is($rc, 1, 'not JSON: rejected');
like($out, qr/not ok - META.json is not readable JSON/, 'not JSON: for that reason');

done_testing();
