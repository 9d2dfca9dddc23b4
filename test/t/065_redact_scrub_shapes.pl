# Copyright (c) secretenv contributors
#
# The scrubbed text that pg_stat_activity and pg_stat_statements keep for a
# statement that carries a plaintext (issue 13): every form of constant is
# overwritten, byte for byte, and nothing else is.  Each statement reads its
# own pg_stat_activity entry, so the scrubbed text is compared exactly:
# standard, doubled-quote, escape (E''), Unicode (U&'') strings, dollar
# quotes with and without a tag, line and nested block comments, numeric
# constants, multibyte text, and standard_conforming_strings = off.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;

my $node = new_secretenv_node('shapes', conf => q{
secretenv.kek_passphrase = 'PP-shapes-8c2f-lagoon-kek-passphrase-3e9a'
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION secretenv');

my $pt = 'sh' . random_hex();
my $n = length($pt);
sub stars { return '*' x $_[0]; }
sub blank { return ' ' x $_[0]; }

# [ label, the constant as written, what pg_stat_activity must show ]
my @shapes = (
	[ 'standard string', "'$pt'", "'" . stars($n) . "'" ],
	[ 'doubled quote', "'$pt''q'", "'" . stars($n + 3) . "'" ],
	[ 'escape string', "E'$pt\\'q\\\\'", "E'" . stars($n + 5) . "'" ],
	[ 'lower-case escape string', "e'$pt\\n'", "e'" . stars($n + 2) . "'" ],
	[ 'Unicode string', "U&'$pt\\0041'", "U&'" . stars($n + 5) . "'" ],
	[ 'dollar quote', "\$\$$pt\$\$", '$$' . stars($n) . '$$' ],
	[ 'tagged dollar quote', "\$q1\$$pt\$q\$\$q1\$", '$q1$' . stars($n + 3) . '$q1$' ],
	[ 'line comment', "1 -- $pt\n+ 1", '0 --' . blank($n + 1) . "\n+ 0" ],
	[ 'nested block comment', "1 /* a /* $pt */ b */", '0 /*' . blank(length(" a /* $pt */ b ")) . '*/' ],
	[ 'numeric constant', '4917350286125', '0000000000000' ],
	[ 'multibyte string', "'пароль-$pt'", "'" . stars($n + 13) . "'" ],
	[ 'quoted name kept', "1 AS \"we\"\"ird $pt\"", "0 AS \"we\"\"ird $pt\"" ],
);

for my $shape (@shapes)
{
	my ($label, $constant, $shown) = @$shape;
	my $template = 'SELECT (SELECT query FROM pg_stat_activity WHERE pid = pg_backend_pid()), '
	  . "secretenv.secret_mask('k'), %s";
	my $sql = sprintf($template, $constant);
	my $expected = sprintf($template =~ s/'k'/'*'/r, $shown);
	my ($q) = split /\|/, $node->safe_psql('postgres', $sql);
	is(length($q), length($sql), "$label: same length as the statement");
	is($q, $expected, "$label: the constant is overwritten, the rest kept");
}

# With standard_conforming_strings off, a backslash escapes a quote in any
# string: the scrubbed text must not end the string early.
SKIP:
{
	skip 'PostgreSQL 19 refuses standard_conforming_strings = off ("non-standard string literals are not supported")', 1
	  if $node->pg_version->major >= 19;
	my $scs = $node->safe_psql(
		'postgres', qq{
SET standard_conforming_strings = off;
SET escape_string_warning = off;
SELECT (SELECT query FROM pg_stat_activity WHERE pid = pg_backend_pid()), secretenv.secret_mask('$pt\\' $pt');
});
	my ($scs_q) = split /\|/, $scs;
	is($scs_q,
		"SELECT (SELECT query FROM pg_stat_activity WHERE pid = pg_backend_pid()), secretenv.secret_mask('"
		  . stars(2 * $n + 3) . "');",
		'standard_conforming_strings off: the whole string is overwritten');
}

# A multi-statement query (psql -c sends it as one message) is scrubbed whole.
my ($multi) = run_command(
	[
		'psql', '-XAtq', '-d', $node->connstr('postgres'), '-c',
		"SELECT 'first-$pt'; SELECT (SELECT query FROM pg_stat_activity WHERE pid = pg_backend_pid()), secretenv.secret_mask('$pt')"
	]);
is( (split /\n/, $multi)[1],
	"SELECT '" . stars($n + 6) . "'; SELECT (SELECT query FROM pg_stat_activity WHERE pid = pg_backend_pid()), secretenv.secret_mask('"
	  . stars($n) . "')|" . substr($pt, 0, 3) . '...' . substr($pt, -4),
	'multi-statement query: every statement of the message is scrubbed');

$node->stop;
done_testing();
