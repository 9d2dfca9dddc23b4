
# Copyright (c) secretenv contributors
#
# Secrets never reach the server log (issue 8, DESIGN §4b; issue 13, §7c).
#
# Every statement-logging knob is turned up (log_statement = 'all',
# log_min_duration_statement = 0, log_duration, log_min_messages and
# log_min_error_statement = debug1, log_parameter_max_length and
# log_parameter_max_length_on_error = -1), and secretenv is driven through
#   - psql literals (simple protocol), including SQL-level PREPARE/EXECUTE,
#     multi-statement queries, DO blocks and statements that fail in every
#     way after or around a plaintext;
#   - python3-psycopg2 (its parameters are interpolated client-side, so the
#     server sees literals in simple-protocol queries);
#   - pgbench -M extended and -M prepared: real Bind messages, so the
#     plaintext is a $n parameter ("parameters: $1 = ..." DETAIL, and the
#     "extended query with parameters" CONTEXT of errors);
# covering create, update, encrypt, mask, a failing decrypt, a statement
# that errors after a secret_create in the same query, and an application
# function wrapping secret_create that is listed in secretenv.redact_names
# (an unlisted one is test 063's; the other channels are test 062's).  Then every plaintext
# (and the passphrase) is counted in the log: 0 each.  An unrelated statement
# and an unrelated bind parameter are logged verbatim.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;
use IPC::Run;

my $passphrase = 'PP-redact-q8w3-lantern-kek-passphrase-6d1e9b';

# Plaintexts: "PT" + label + random hex.  The log is searched for the part a
# mask never shows (all but the first 3 and last 4 characters).
my %pt;
sub plaintext
{
	my ($label) = @_;
	return $pt{$label} = "PT-$label-" . random_hex() . "-end";
}
sub core { my ($s) = @_; return substr($s, 3, length($s) - 7); }

my $node = new_secretenv_node('redact', conf => qq{
secretenv.kek_passphrase = '$passphrase'
log_statement = 'all'
log_min_duration_statement = 0
log_duration = on
log_min_messages = debug1
log_min_error_statement = debug1
log_parameter_max_length = -1
log_parameter_max_length_on_error = -1
log_connections = on
secretenv.redact_names = 'app_keep_secret'
});
$node->start;
$node->safe_psql(
	'postgres', q{
CREATE EXTENSION secretenv;
CREATE TABLE app_secrets (id text PRIMARY KEY, name text, env secretenv.envelope);
CREATE TRIGGER app_identity BEFORE UPDATE ON app_secrets FOR EACH ROW
	EXECUTE FUNCTION secretenv.forbid_identity_change('id', 'name');
INSERT INTO app_secrets VALUES ('app-1', 'first', NULL);
CREATE FUNCTION app_keep_secret(n text, v text) RETURNS uuid
	LANGUAGE plpgsql AS $$ BEGIN RETURN secretenv.secret_create(n, v); END $$;
});

my $log_offset = -s $node->logfile;
my $statements = 0;

###########################################################################
# psql literals (simple protocol)
###########################################################################
my @literal = (
	# [ label, SQL with %s for the plaintext, expected outcome regex on stderr or '' ]
	[ 'create_text', "SELECT secretenv.secret_create('lit_text', '%s')", '' ],
	[ 'create_json', "SELECT secretenv.secret_create('lit_json', '{\"token\": \"%s\"}'::jsonb)", '' ],
	[ 'update', "SELECT secretenv.secret_update('lit_text', '%s')", '' ],
	[ 'update_json', "SELECT secretenv.secret_update('lit_json', '{\"token\": \"%s\"}'::jsonb)", '' ],
	[ 'encrypt', "SELECT (secretenv.secret_encrypt('%s', 'id-enc', 'n-enc')).kek_version", '' ],
	[ 'encrypt_json', "SELECT (secretenv.secret_encrypt('{\"k\": \"%s\"}'::jsonb, gen_random_uuid(), 'n')).kek_version", '' ],
	[ 'mask', "SELECT secretenv.secret_mask('%s')", '' ],
	[ 'mask_json', "SELECT secretenv.secret_mask('{\"a\": \"%s\"}'::jsonb)", '' ],
	[ 'upper_case', "SELECT SECRETENV.SECRET_CREATE('lit_upper', '%s')", '' ],
	[ 'quoted_ident', "SELECT \"secretenv\".\"secret_create\"('lit_quoted', '%s')", '' ],
	[
		'failing_decrypt',
		"SELECT secretenv.secret_decrypt(e, 'id-dec', 'wrong-name') FROM secretenv.secret_encrypt('%s', 'id-dec', 'n-dec') e",
		qr/22S03/
	],
	[ 'create_then_div0', "SELECT secretenv.secret_create('lit_div0', '%s'), 1/0", qr/22012/ ],
	[
		'create_then_secretenv_error',
		"SELECT secretenv.secret_create('lit_sev', '%s'), secretenv.secret_decrypt('\\x00'::bytea, '\\x00'::bytea, 1, 'a', 'b')",
		qr/22S01/
	],
	[ 'duplicate_name', "SELECT secretenv.secret_create('lit_text', '%s')", qr/23505/ ],
	[ 'syntax_error', "SELECT secretenv.secret_create('lit_syntax', '%s' ", qr/42601/ ],
	[ 'bad_json', "SELECT secretenv.secret_create('lit_badjson', '{\"k\": %s}'::jsonb)", qr/22P02/ ],
	[ 'bad_cast', "SELECT secretenv.secret_encrypt('%s'::int::text, 'i', 'n')", qr/22P02/ ],
	[ 'pipe_in_id', "SELECT secretenv.secret_encrypt('%s', 'bad|id', 'n')", qr/22023/ ],
	[ 'update_missing', "SELECT secretenv.secret_update('no_such_secret', '%s')", qr/P0002/ ],
	[
		'identity_change',
		"UPDATE app_secrets SET name = 'renamed', env = secretenv.secret_encrypt('%s', id, 'renamed') WHERE id = 'app-1'",
		qr/23S01/
	],
	[ 'do_block', "DO \$\$BEGIN PERFORM secretenv.secret_create('lit_do', '%s'); END\$\$", '' ],
	[ 'multi_statement', "SELECT 1 \\; SELECT secretenv.secret_create('lit_multi', '%s')", '' ],
	[ 'in_transaction', "BEGIN; SELECT secretenv.secret_create('lit_tx', '%s'); SELECT 1/0; ROLLBACK;", qr/22012/ ],
	[ 'wrapper', "SELECT app_keep_secret('lit_wrap', '%s')", '' ],
	[ 'wrapper_upper', "SELECT APP_KEEP_SECRET('lit_wrap_up', '%s')", '' ],
	[ 'wrapper_then_div0', "SELECT app_keep_secret('lit_wrap0', '%s'), 1/0", qr/22012/ ],
	[ 'wrapper_duplicate', "SELECT app_keep_secret('lit_wrap', '%s')", qr/23505/ ],
);

my %outcome;
for my $case (@literal)
{
	my ($label, $template, $expect) = @$case;
	my $sql = sprintf($template, plaintext($label));
	my ($rc, $out, $err) = $node->psql('postgres', $sql,
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	$statements++;
	if ($expect)
	{
		like($err, $expect, "literal $label: fails as intended");
	}
	else
	{
		is($err, '', "literal $label: succeeds");
	}
}

# SQL-level PREPARE / EXECUTE: the EXECUTE text carries the plaintext but
# not the function name.
my $prep = sprintf(
	q{PREPARE p_create(text) AS SELECT secretenv.secret_create('prep_' || md5($1), $1);
EXECUTE p_create('%s');
PREPARE p_fail(text) AS SELECT secretenv.secret_create('prepf_' || md5($1), $1), 1/0;
EXECUTE p_fail('%s');
EXECUTE p_create('%s');
EXECUTE p_create('%s');
PREPARE p_dec(text) AS SELECT secretenv.secret_decrypt(e, 'i', 'wrong') FROM secretenv.secret_encrypt($1, 'i', 'n') e;
EXECUTE p_dec('%s');
},
	plaintext('prepare_execute'), plaintext('prepare_execute_div0'),
	plaintext('prepare_execute_dup'), $pt{prepare_execute_dup},
	plaintext('prepare_execute_decrypt'));
{
	my ($rc, $out, $err) = $node->psql('postgres', $prep,
		on_error_stop => 0,
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	$statements += 8;
	like($err, qr/22012.*23505.*22S03/s,
		'PREPARE/EXECUTE: the failing EXECUTEs fail as intended (22012, 23505, 22S03)');
}

# Unrelated statements are logged verbatim.
$node->safe_psql('postgres', "SELECT 'unrelated-marker-42'");
$statements++;

###########################################################################
# python3-psycopg2
###########################################################################
my $tmp = PostgreSQL::Test::Utils::tempdir;
my $py = "$tmp/driver.py";
PostgreSQL::Test::Utils::append_to_file(
	$py, q{
import json, sys
import psycopg2

host, port = sys.argv[1], sys.argv[2]
p = dict(zip(sys.argv[3::2], sys.argv[4::2]))
conn = psycopg2.connect(host=host, port=port, dbname='postgres')
conn.autocommit = True
cur = conn.cursor()
ran = 0
failed = []

def run(label, sql, params):
	global ran
	ran += 1
	try:
		cur.execute(sql, params)
		if cur.description:
			cur.fetchall()
	except psycopg2.Error as e:
		failed.append('%s:%s' % (label, e.pgcode))

run('create', 'SELECT secretenv.secret_create(%s, %s)', ('py_text', p['py_create']))
run('create_json', 'SELECT secretenv.secret_create(%s, %s::jsonb)',
	('py_json', json.dumps({'token': p['py_create_json']})))
run('update', 'SELECT secretenv.secret_update(%s, %s)', ('py_text', p['py_update']))
run('encrypt', 'SELECT (secretenv.secret_encrypt(%s, %s, %s)).kek_version',
	(p['py_encrypt'], 'py-id', 'py-name'))
run('mask', 'SELECT secretenv.secret_mask(%s)', (p['py_mask'],))
run('failing_decrypt',
	'SELECT secretenv.secret_decrypt(e, %s, %s) FROM secretenv.secret_encrypt(%s, %s, %s) e',
	('py-id', 'wrong', p['py_failing_decrypt'], 'py-id', 'py-name'))
run('create_then_div0', 'SELECT secretenv.secret_create(%s, %s), 1/0',
	('py_div0', p['py_create_then_div0']))
run('decrypt_wrong_aad',
	"SELECT secretenv.secret_decrypt(encrypted_value, wrapped_dek, kek_version, secret_id, 'wrong') "
	"FROM secretenv.secrets WHERE secret_name = %s", ('py_text',))
run('get', 'SELECT secretenv.secret_get(%s)', ('py_text',))
print('ran=%d failed=%s' % (ran, ','.join(failed)))
});
my @py_labels = qw(py_create py_create_json py_update py_encrypt py_mask
  py_failing_decrypt py_create_then_div0);
my ($py_out, $py_err) = ('', '');
IPC::Run::run(
	[
		'/usr/bin/python3', $py, $node->host, $node->port,
		map { ($_, plaintext($_)) } @py_labels
	],
	'>', \$py_out, '2>', \$py_err);
like($py_out,
	qr/^ran=9 failed=failing_decrypt:22S03,create_then_div0:22012,decrypt_wrong_aad:22S03$/m,
	'psycopg2: 9 statements ran; exactly the intended ones failed')
  or diag("python: $py_out $py_err");
$statements += 9;

###########################################################################
# pgbench -M extended / -M prepared: real bind parameters
###########################################################################
sub pgbench_run
{
	my ($mode, $label, $script, $expect_fail) = @_;
	my @n = ($script =~ /;/g);
	$statements += 2 * scalar(@n);
	pgbench_check($node, $tmp, $label, $script,
		mode => $mode,
		value => plaintext($label),
		harmless => 'harmless-param-77',
		fails => $expect_fail);
}

for my $mode (qw(extended prepared))
{
	pgbench_run($mode, "pgb_${mode}_create",
		"\\set n random(1, 2000000000)\nSELECT secretenv.secret_create('pgb_$mode' || :n, :value);\n");
	pgbench_run($mode, "pgb_${mode}_create_json",
		"\\set n random(1, 2000000000)\nSELECT secretenv.secret_create('pgbj_$mode' || :n, jsonb_build_object('token', :value::text));\n");
	pgbench_run($mode, "pgb_${mode}_update",
		"SELECT secretenv.secret_update('lit_json', jsonb_build_object('token', :value::text));\n");
	pgbench_run($mode, "pgb_${mode}_encrypt",
		"SELECT (secretenv.secret_encrypt(:value, 'pgb-id', 'pgb-name')).kek_version;\n");
	pgbench_run($mode, "pgb_${mode}_mask",
		"SELECT secretenv.secret_mask(:value::text);\n");
	pgbench_run($mode, "pgb_${mode}_wrapper",
		"\\set n random(1, 2000000000)\nSELECT app_keep_secret('pgbw_$mode' || :n, :value);\n");
	pgbench_run($mode, "pgb_${mode}_unrelated",
		"SELECT 'unrelated-marker-43', :harmless::text;\n");
	pgbench_run($mode, "pgb_${mode}_failing_decrypt",
		"SELECT secretenv.secret_decrypt(e, 'pgb-id', 'wrong') FROM secretenv.secret_encrypt(:value, 'pgb-id', 'pgb-name') e;\n",
		qr/22S03|AAD mismatch/);
	pgbench_run($mode, "pgb_${mode}_create_then_div0",
		"\\set n random(1, 2000000000)\nSELECT secretenv.secret_create('pgbd_$mode' || :n, :value), 1/0;\n",
		qr/ERROR:  \[secretenv: redacted\]/);
	pgbench_run($mode, "pgb_${mode}_create_then_secretenv_error",
		"\\set n random(1, 2000000000)\nSELECT secretenv.secret_create('pgbs_$mode' || :n, :value), secretenv.secret_decrypt('\\x00'::bytea, '\\x00'::bytea, 1, 'a', 'b');\n",
		qr/malformed envelope/);
}

###########################################################################
# Count.
###########################################################################
$node->safe_psql('postgres', "SELECT 'end-of-test-marker'");
my $log = substr(slurp_file($node->logfile), $log_offset);
my @lines = split /\n/, $log;

my $total = 0;
my @leaks;
for my $label (sort keys %pt)
{
	my $needle = core($pt{$label});
	my @hits = grep { /\Q$needle\E/ } @lines;
	$total += scalar(@hits);
	push @leaks, map { "[$label] $_" } @hits;
	is(scalar(@hits), 0, "log: plaintext of $label appears 0 times")
	  or diag("leaking log lines:\n" . join("\n", @hits));
}
my @pass_hits = grep { /\Q${\ substr($passphrase, 3, 30)}\E/ } @lines;
is(scalar(@pass_hits), 0, 'log: the passphrase appears 0 times')
  or diag(join("\n", @pass_hits));

like($log, qr/LOG:  statement: SELECT 'unrelated-marker-42'$/m,
	'an unrelated simple-protocol statement is logged verbatim');
like($log, qr/execute [^\n]*: SELECT 'unrelated-marker-43', \$1::text;?\n[^\n]*DETAIL:  [Pp]arameters: \$1 = 'harmless-param-77'/,
	'an unrelated extended-protocol statement and its parameter are logged verbatim');
my $markers = () = $log =~ /\[secretenv: redacted\]/g;
cmp_ok($markers, '>', 0, 'redacted records are marked');
diag(sprintf(
	'log redaction: %d statements run, %d log lines read, %d redaction markers, %d plaintext occurrences (%d plaintexts checked), %d passphrase occurrences',
	$statements, scalar(@lines), $markers, $total, scalar(keys %pt), scalar(@pass_hits)));
diag("first leaking lines:\n" . join("\n", @leaks[ 0 .. ($#leaks < 14 ? $#leaks : 14) ]))
  if @leaks;

$node->stop;
done_testing();
