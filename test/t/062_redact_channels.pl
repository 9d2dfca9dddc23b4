# Copyright (c) secretenv contributors
#
# Plaintexts stay out of every channel that keeps statement text (issue 13,
# DESIGN §7c): the server log in stderr, csvlog and jsonlog formats with
# pgaudit and auto_explain loaded, pg_stat_activity of the calling backend
# (while the statement runs and after, idle), and pg_stat_statements (its
# view, read as a pg_read_all_stats member, and its query-text file).
#
# Every statement-text knob is on: log_statement = all,
# log_min_duration_statement = 0, log_parameter_max_length[_on_error] = -1,
# log_min_error_statement; pgaudit.log = 'all' with log_parameter,
# log_relation, log_rows and an audit role (OBJECT lines);
# pg_stat_statements.track = all with track_utility and track_planning;
# auto_explain with
# log_min_duration = 0, log_analyze, log_verbose, log_nested_statements.
# secretenv is driven through psql literals, a DO block, CREATE TABLE AS,
# COPY (SELECT ...) TO STDOUT, EXPLAIN ANALYZE, PREPARE/EXECUTE, pgbench -M
# extended binds, statements that fail after passing a plaintext, a
# passphrase in a rejected SET, an application wrapper function and a
# table whose trigger encrypts, both listed in secretenv.redact_names.
# Each plaintext is distinct and random; each is counted in every channel:
# 0.  Unrelated statements of the same run are still logged and tracked
# verbatim.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;

my $passphrase = 'PP-chan-7f3a-harbor-kek-passphrase-91c4e2';

my %pt;
sub plaintext
{
	my ($label) = @_;
	return $pt{$label} = "pt" . random_hex();
}

my $node = new_statement_text_node('channels', qq{
secretenv.kek_passphrase = '$passphrase'
secretenv.redact_names = 'app_store_key, app_creds'
logging_collector = on
log_destination = 'stderr,csvlog,jsonlog'
log_directory = 'log'
log_filename = 'server.log'
log_rotation_age = 0
log_rotation_size = 0
log_duration = on
pgaudit.log_rows = on
pgaudit.role = 'auditor'
pg_stat_statements.track_planning = on
pg_stat_statements.save = on
});
$node->start;

my $startup = slurp_file($node->data_dir . '/log/server.log');
unlike($startup, qr/loaded after secretenv/,
	'the recommended preload order draws no warning');

$node->safe_psql(
	'postgres', q{
CREATE EXTENSION secretenv;
CREATE EXTENSION pgaudit;
CREATE EXTENSION pg_stat_statements;
CREATE ROLE auditor NOLOGIN;
CREATE ROLE monitor LOGIN;
GRANT pg_read_all_stats TO monitor;
CREATE TABLE app_keys (id text PRIMARY KEY, env secretenv.envelope);
GRANT SELECT, INSERT ON app_keys TO auditor;
GRANT EXECUTE ON FUNCTION secretenv.secret_encrypt(text, text, text) TO auditor;
CREATE FUNCTION app_store_key(n text, v text) RETURNS uuid
	LANGUAGE plpgsql AS $$ BEGIN RETURN secretenv.secret_create(n, v); END $$;
CREATE TABLE app_creds (id text PRIMARY KEY, plain text, env secretenv.envelope);
CREATE FUNCTION app_creds_seal() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	NEW.env := secretenv.secret_encrypt(NEW.plain, NEW.id, 'cred');
	NEW.plain := NULL;
	RETURN NEW;
END $$;
CREATE TRIGGER app_creds_seal BEFORE INSERT ON app_creds
	FOR EACH ROW EXECUTE FUNCTION app_creds_seal();
SELECT pg_stat_statements_reset();
});

###########################################################################
# psql literals, utility statements, errors
###########################################################################
my @cases = (
	# [ label, SQL with %s for the plaintext, expected SQLSTATE or '' ]
	[ 'literal_create', "SELECT secretenv.secret_create('c_lit', '%s')", '' ],
	[ 'literal_update', "SELECT secretenv.secret_update('c_lit', '%s')", '' ],
	[ 'literal_json', "SELECT secretenv.secret_create('c_json', '{\"k\": \"%s\"}'::jsonb)", '' ],
	[ 'literal_insert', "INSERT INTO app_keys VALUES ('k1', secretenv.secret_encrypt('%s', 'k1', 'n'))", '' ],
	[ 'literal_mask', "SELECT secretenv.secret_mask('%s')", '' ],
	[ 'do_block', "DO \$\$BEGIN PERFORM secretenv.secret_create('c_do', '%s'); END\$\$", '' ],
	[ 'do_mask', "DO \$\$BEGIN PERFORM secretenv.secret_mask('%s'); END\$\$", '' ],
	[ 'do_tagged', "DO \$body\$ BEGIN PERFORM secretenv.secret_mask(E'%s'); END \$body\$", '' ],
	[ 'ctas', "CREATE TABLE ctas_keys AS SELECT secretenv.secret_encrypt('%s', 'c1', 'n') AS env", '' ],
	[ 'copy_to', "COPY (SELECT secretenv.secret_encrypt('%s', 'c2', 'n')) TO STDOUT", '' ],
	[ 'explain_analyze', "EXPLAIN (ANALYZE, VERBOSE) SELECT secretenv.secret_mask('%s')", '' ],
	[ 'select_into', "SELECT secretenv.secret_encrypt('%s', 'c3', 'n') AS env INTO TEMP tmp_keys", '' ],
	[ 'wrapper_listed', "SELECT app_store_key('w_lit', '%s')", '' ],
	[ 'wrapper_listed_do', "DO \$\$BEGIN PERFORM app_store_key('w_do', '%s'); END\$\$", '' ],
	[ 'trigger_listed_table', "INSERT INTO app_creds (id, plain) VALUES ('t1', '%s')", '' ],
	[ 'comment', "SELECT secretenv.secret_create('c_comment', 'v') /* %s */", '' ],
	# No constant: pg_stat_statements keeps no normalised entry from the
	# parse, and stores the text it is given when planning.
	[ 'comment_no_constant', "SELECT secretenv.secret_mask(current_user::text) -- %s", '' ],
	[ 'error_after', "SELECT secretenv.secret_create('c_err', '%s'), 1/0", '22012' ],
	[ 'error_duplicate', "SELECT secretenv.secret_create('c_lit', '%s')", '23505' ],
	[ 'error_in_do', "DO \$\$BEGIN PERFORM secretenv.secret_create('c_doerr', '%s'); PERFORM 1/0; END\$\$", '22012' ],
	[ 'error_ctas', "CREATE TABLE ctas_err AS SELECT secretenv.secret_encrypt('%s', 'bad|id', 'n')", '22023' ],
	[ 'passphrase_set', "SET secretenv.kek_passphrase = '%s'", '55P02' ],
);
run_plaintext_cases($node, \&plaintext, @cases);

# SQL-level PREPARE / EXECUTE: the EXECUTE carries the plaintext.
{
	my ($rc, $out, $err) = $node->psql(
		'postgres',
		sprintf(
			"PREPARE p_create(text) AS SELECT secretenv.secret_create('c_prep', \$1);\nEXECUTE p_create('%s');\n"
			  . "PREPARE p_mask AS SELECT secretenv.secret_mask('%s');\nEXECUTE p_mask;\n",
			plaintext('prepare_execute'), plaintext('prepare_literal')));
	is($err, '', 'PREPARE/EXECUTE: succeeds');
}

# Control: the same kind of statement with redaction switched off for it
# reaches every channel below, so the counts of 0 are not for want of
# logging or tracking.
my $control = 'ctl' . random_hex();
$node->safe_psql('postgres',
	"SET secretenv.redact_logs = off;\nDO \$\$BEGIN PERFORM secretenv.secret_create('c_ctl', '$control'); END\$\$;");

# Unrelated statements: logged, audited and tracked verbatim.
$node->safe_psql('postgres',
	"SELECT 'unrelated-select-62'; DO \$\$BEGIN PERFORM 'unrelated-do-62'; END\$\$;");

###########################################################################
# pgbench -M extended: the plaintext is a bind parameter
###########################################################################
my $tmp = PostgreSQL::Test::Utils::tempdir;
sub pgbench_run
{
	my ($label, $script, $expect_fail) = @_;
	pgbench_check($node, $tmp, $label, $script,
		value => plaintext($label),
		harmless => 'unrelated-param-62',
		fails => $expect_fail);
}
pgbench_run('bind_create',
	"\\set n random(1, 2000000000)\nSELECT secretenv.secret_create('b' || :n, :value);\n");
pgbench_run('bind_encrypt',
	"SELECT (secretenv.secret_encrypt(:value, 'b-id', 'b-name')).kek_version;\n");
pgbench_run('bind_wrapper',
	"\\set n random(1, 2000000000)\nSELECT app_store_key('bw' || :n, :value);\n");
pgbench_run('bind_error',
	"\\set n random(1, 2000000000)\nSELECT secretenv.secret_create('be' || :n, :value), 1/0;\n",
	qr/ERROR:  \[secretenv: redacted\]/);
pgbench_run('bind_unrelated', "SELECT 'unrelated-bind-62', :harmless::text;\n");

###########################################################################
# pg_stat_activity: while the statement runs, and idle afterwards
###########################################################################
my $locker = $node->background_psql('postgres');
$locker->query_safe('SELECT pg_advisory_lock(62)');
my $runner = $node->background_psql('postgres');
my $runner_pid = $runner->query_safe('SELECT pg_backend_pid()');
$runner_pid =~ s/\D//g;
# Takes the lock before secret_mask runs: only the name in the text tells.
$runner->query_until(qr/started/,
	sprintf("\\echo started\nSELECT pg_advisory_lock(62), secretenv.secret_mask('%s');\n",
		plaintext('activity_running')));
ok( $node->poll_query_until(
		'postgres',
		"SELECT wait_event = 'advisory' FROM pg_stat_activity WHERE pid = $runner_pid"),
	'the statement is waiting on the lock');
my $running_query = $node->safe_psql('postgres',
	"SELECT query FROM pg_stat_activity WHERE pid = $runner_pid",
	extra_params => [ '-U', 'monitor' ]);
like($running_query, qr/^SELECT pg_advisory_lock\(00\), secretenv\.secret_mask\('\*+'\);$/,
	'pg_stat_activity while running: the text with its values overwritten');
$locker->query_safe('SELECT pg_advisory_unlock(62)');
$runner->query_safe('SELECT pg_advisory_unlock(62)');

my @idle_cases = (
	[ 'activity_idle_create', "SELECT secretenv.secret_create('c_idle', '%s')" ],
	[ 'activity_idle_do', "DO \$\$BEGIN PERFORM secretenv.secret_mask('%s'); END\$\$" ],
	[ 'activity_idle_wrapper', "SELECT app_store_key('w_idle', '%s')" ],
	[ 'activity_idle_execute', "EXECUTE p_idle('%s')" ],
);
$runner->query_safe("PREPARE p_idle(text) AS SELECT secretenv.secret_mask(\$1)");
for my $case (@idle_cases)
{
	my ($label, $template) = @$case;
	my $sql = sprintf($template, plaintext($label));
	$runner->query_safe($sql);
	my $seen = $node->safe_psql('postgres',
		"SELECT state || ': ' || query FROM pg_stat_activity WHERE pid = $runner_pid",
		extra_params => [ '-U', 'monitor' ]);
	$seen =~ s/\s*;\s*$//;    # BackgroundPsql ends each query with a newline and ';'
	(my $expected = $sql) =~ s/'([^']*)'/"'" . ('*' x length($1)) . "'"/ge;
	is($seen, "idle: $expected", "pg_stat_activity idle after $label: values overwritten");
}
$runner->query_safe("SELECT 'unrelated-activity-62'");
like( $node->safe_psql(
		'postgres', "SELECT query FROM pg_stat_activity WHERE pid = $runner_pid",
		extra_params => [ '-U', 'monitor' ]),
	qr/^SELECT 'unrelated-activity-62'\s*;?$/,
	'pg_stat_activity of an unrelated statement is verbatim');
$runner->quit;
$locker->quit;

###########################################################################
# Count every plaintext and the passphrase in every channel.
###########################################################################
my $pgss = $node->safe_psql('postgres',
	'SELECT queryid, calls, query FROM pg_stat_statements ORDER BY queryid',
	extra_params => [ '-U', 'monitor' ]);
like($pgss, qr/^-?\d+\|\d+\|DO \$\$BEGIN PERFORM secretenv\.secret_create\('c_do', '\*+'\); END\$\$$/m,
	'pg_stat_statements keeps the DO block and the name, the plaintext overwritten');
# 16 on, pg_stat_statements itself replaces the constants of CREATE TABLE AS by $n.
like($pgss, qr/\|CREATE TABLE ctas_keys AS SELECT secretenv\.secret_encrypt\((?:'\*+', 'c1', 'n'|\$1, \$2, \$3)\) AS env$/m,
	'pg_stat_statements keeps CREATE TABLE AS, the plaintext overwritten');
like($pgss, qr/\|COPY \(SELECT secretenv\.secret_encrypt\('\*+', 'c2', 'n'\)\) TO STDOUT$/m,
	'pg_stat_statements keeps COPY, the plaintext overwritten');
like($pgss, qr/\|DO \$\$BEGIN PERFORM 'unrelated-do-62'; END\$\$$/m,
	'pg_stat_statements keeps an unrelated DO block verbatim');
like($pgss, qr/\|SELECT \$2, \$1::text$/m,
	'pg_stat_statements tracks the unrelated bind statement');
# A utility statement's query id is a hash of its text: computed over the
# scrubbed text, the two DO blocks that differ only in their plaintext share
# one entry.
like($pgss, qr/^-?\d+\|2\|DO \$\$BEGIN PERFORM secretenv\.secret_mask\('\*+'\); END\$\$$/m,
	'two DO blocks that differ only in their plaintext share one pg_stat_statements entry');
like($pgss, qr/\|DO \$\$BEGIN PERFORM app_store_key\('\*+', '\*+'\); END\$\$$/m,
	'the DO block calling the listed wrapper is tracked, scrubbed');

my $pgss_file = slurp_file($node->data_dir . '/pg_stat_tmp/pgss_query_texts.stat');
like($pgss_file, qr/unrelated-do-62/, 'the query-text file holds the unrelated DO block');

my %channel = (
	'stderr log' => slurp_file($node->data_dir . '/log/server.log'),
	'csvlog' => slurp_file($node->data_dir . '/log/server.csv'),
	'jsonlog' => slurp_file($node->data_dir . '/log/server.json'),
	'pg_stat_statements view' => $pgss,
	'pg_stat_statements query-text file' => $pgss_file,
);

$node->stop;
$channel{'pg_stat_statements saved file'} =
  slurp_file($node->data_dir . '/pg_stat/pg_stat_statements.stat');
%channel = (%channel,
	'stderr log' => slurp_file($node->data_dir . '/log/server.log'),
	'csvlog' => slurp_file($node->data_dir . '/log/server.csv'),
	'jsonlog' => slurp_file($node->data_dir . '/log/server.json'));

my $total = 0;
for my $name (sort keys %channel)
{
	my $text = $channel{$name};
	my @found;
	for my $label (sort keys %pt)
	{
		my $n = () = $text =~ /\Q$pt{$label}\E/g;
		push @found, "$label x$n" if $n;
		$total += $n;
	}
	my $pp = () = $text =~ /\Q$passphrase\E/g;
	push @found, "passphrase x$pp" if $pp;
	is(join(', ', @found), '', "$name: 0 occurrences of the " . scalar(keys %pt) . ' plaintexts and the passphrase');
	like($text, qr/\Q$control\E/, "$name: the control plaintext, sent with redaction off, is there");
}

for my $format ('stderr log', 'csvlog', 'jsonlog')
{
	my $log = $channel{$format};
	like($log, qr/statement: SELECT 'unrelated-select-62'/, "$format: an unrelated statement is logged verbatim");
	like($log, qr/AUDIT: SESSION,\d+,\d+,READ,SELECT,,,SELECT 'unrelated-select-62'/,
		"$format: pgaudit logs the unrelated statement verbatim");
	like($log, qr/Query Text: SELECT 'unrelated-select-62'/,
		"$format: auto_explain logs the unrelated statement verbatim");
	like($log, qr/[Pp]arameters: \$1 = 'unrelated-param-62'/,
		"$format: an unrelated bind parameter is logged verbatim");
	like($log, qr/AUDIT: SESSION,\d+,\d+,READ,SELECT,,,[\\"]*SELECT secretenv\.secret_create\('c_lit', '\*+'\)/,
		"$format: pgaudit SESSION lines of plaintext statements keep the name, not the plaintext");
	like($log, qr/AUDIT: OBJECT,\d+,\d+,WRITE,INSERT,TABLE,public\.app_keys,[\\"]*INSERT INTO app_keys VALUES \('k1', secretenv\.secret_encrypt\('\*+', 'k1', 'n'\)\)/,
		"$format: pgaudit OBJECT lines of plaintext statements keep the names, not the plaintext");
	like($log, qr/duration: [0-9.]+ ms  plan: \[secretenv: redacted\]/,
		"$format: auto_explain plans of plaintext statements are redacted");
}
my $markers = () = $channel{'stderr log'} =~ /\[secretenv: redacted\]/g;
diag(sprintf('channels: %d plaintexts in %d channels, %d occurrences; %d redaction markers in the stderr log; %d pg_stat_statements entries',
	scalar(keys %pt), scalar(keys %channel), $total, $markers, scalar(split /\n/, $pgss)));

done_testing();
