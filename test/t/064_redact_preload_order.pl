# Copyright (c) secretenv contributors
#
# The shared_preload_libraries order (issue 13).  pg_stat_statements must
# be listed before secretenv: the library loaded later installs its hooks
# later, so they run first and hand pg_stat_statements a scrubbed text.
# Listed after secretenv, pg_stat_statements stores the text secretenv has
# not scrubbed: the postmaster warns at start, and this test shows why
# (while pgaudit and auto_explain, whose lines go through the log hook, may
# come anywhere).
# Listed before (by name or by path), there is no warning and the text is
# scrubbed.  Also: secretenv.redact_names parsing and privileges.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;

my $node = new_secretenv_node('order',
	preload => 'secretenv, pgaudit, auto_explain, pg_stat_statements',
	conf => q{
secretenv.kek_passphrase = 'PP-order-2d8e-quarry-kek-passphrase-4a6b'
pg_stat_statements.track_utility = on
pgaudit.log = 'read, function'
pgaudit.log_parameter = on
auto_explain.log_min_duration = 0
auto_explain.log_verbose = on
auto_explain.log_nested_statements = on
});
$node->start;
$node->safe_psql('postgres',
	'CREATE EXTENSION secretenv; CREATE EXTENSION pg_stat_statements;');

my $log = slurp_file($node->logfile);
like(
	$log,
	qr/WARNING:  pg_stat_statements is loaded after secretenv\n.*DETAIL:  pg_stat_statements will store the text of statements that pass a plaintext to secretenv before secretenv can scrub it\.\n.*HINT:  List secretenv last in shared_preload_libraries/,
	'wrong order: the postmaster warns at start, with detail and hint');
my $warnings = () = $log =~ /loaded after secretenv/g;
is($warnings, 1, 'wrong order: one warning, from the postmaster only');

# Why: pg_stat_statements runs outside secretenv's hooks and stores the DO
# block verbatim.
my $pt1 = 'ord' . random_hex();
$node->safe_psql('postgres',
	"DO \$\$BEGIN PERFORM secretenv.secret_create('o1', '$pt1'); END\$\$");
like($node->safe_psql('postgres', 'SELECT query FROM pg_stat_statements'),
	qr/\Q$pt1\E/, 'wrong order: pg_stat_statements holds the plaintext, as warned');
# pgaudit and auto_explain, also loaded after secretenv, are redacted all
# the same: their lines go through the log hook whatever the order.
$log = slurp_file($node->logfile);
like($log, qr/AUDIT: SESSION,\d+,\d+,FUNCTION,DO,,,"DO \$\$BEGIN PERFORM secretenv\.secret_create\('o1', '\*+'\); END\$\$"/,
	'pgaudit loaded after secretenv: its lines are redacted');
like($log, qr/duration: [0-9.]+ ms  plan: \[secretenv: redacted\]/,
	'auto_explain loaded after secretenv: its plans are redacted');
unlike($log, qr/\Q$pt1\E/, 'pgaudit and auto_explain loaded after secretenv: no plaintext in the log');

# Listed before secretenv, also as a path with a suffix: no warning, scrubbed.
$node->stop;
$node->adjust_conf('postgresql.conf', 'shared_preload_libraries',
	q{'$libdir/pg_stat_statements.so, pgaudit, auto_explain, secretenv'});
my $offset = -s $node->logfile;
$node->start;
my $pt2 = 'ord' . random_hex();
$node->safe_psql('postgres',
	"SELECT pg_stat_statements_reset(); DO \$\$BEGIN PERFORM secretenv.secret_create('o2', '$pt2'); END\$\$");
unlike(substr(slurp_file($node->logfile), $offset), qr/loaded after secretenv/,
	'right order: no warning');
like(
	$node->safe_psql('postgres', 'SELECT query FROM pg_stat_statements'),
	qr/^DO \$\$BEGIN PERFORM secretenv\.secret_create\('o2', '\*{27}'\); END\$\$$/m,
	'right order: pg_stat_statements holds the scrubbed text');

###########################################################################
# secretenv.redact_names
###########################################################################
my %bad = (
	'store key' => 'a name with a space',
	'app.store_key' => 'a schema-qualified name',
	'a,,b' => 'an empty name',
	('x' x 64) => 'a name of 64 bytes',
);
for my $value (sort keys %bad)
{
	my ($rc, $out, $err) = $node->psql('postgres',
		"SET secretenv.redact_names = '$value'",
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	like($err, qr/ERROR:  22023: invalid value for parameter "secretenv.redact_names"/,
		"redact_names refuses $bad{$value} (22023)");
}
is( $node->safe_psql(
		'postgres',
		"SET secretenv.redact_names = 'Store_Key, put_secret'; SHOW secretenv.redact_names"),
	'Store_Key, put_secret',
	'redact_names accepts a list of names');
$node->safe_psql('postgres', 'CREATE ROLE plain LOGIN');
my ($rc, $out, $err) = $node->psql('postgres',
	"SET secretenv.redact_names = ''",
	extra_params => [ '-U', 'plain', '-v', 'VERBOSITY=verbose' ]);
like($err, qr/ERROR:  42501:/, 'redact_names is superuser-only (42501)');
($rc, $out, $err) = $node->psql('postgres',
	'SET secretenv.redact_logs = off',
	extra_params => [ '-U', 'plain', '-v', 'VERBOSITY=verbose' ]);
like($err, qr/ERROR:  42501:/, 'redact_logs is superuser-only (42501)');

# A listed name is matched case-insensitively, in any statement that calls
# it; a string that merely mentions it changes nothing.
my $pt3 = 'ord' . random_hex();
$node->safe_psql(
	'postgres', qq{
ALTER SYSTEM SET secretenv.redact_names = 'put_secret';
ALTER SYSTEM SET log_statement = 'all';
SELECT pg_reload_conf();
});
$node->poll_query_until('postgres', 'SHOW secretenv.redact_names', 'put_secret');
$offset = -s $node->logfile;
$node->psql('postgres', "SELECT 'PUT_SECRET', 'visible-064'; SELECT PUT_SECRET('n', '$pt3')");
my $tail = substr(slurp_file($node->logfile), $offset);
unlike($tail, qr/\Q$pt3\E/, 'a statement calling a listed function is redacted');
like($tail, qr/statement: SELECT PUT_SECRET\('\*', '\*+'\)/, 'every value of it overwritten');
like($tail, qr/statement: SELECT 'PUT_SECRET', 'visible-064'/,
	'a string mentioning the listed name changes nothing');

$node->stop;
done_testing();
