# Copyright (c) secretenv contributors
#
# Redaction is decided by what a statement calls (issue 22, DESIGN §8a):
#
#  - a decrypted value quoted by a cast or function that rejects it
#    (::int, ::uuid, ::date, ::jsonb, ->> then ::int; to_number quotes
#    nothing in PostgreSQL 15), a CHECK
#    constraint, a trigger that raises with it, a deferred unique
#    constraint at COMMIT, on every read path (secret_get uncached and
#    cached, decrypted_secrets, secret_decrypt, a forced parallel query)
#    reaches neither the server log nor the client's SQLSTATE-less text;
#    the SQLSTATE is kept;
#  - every plaintext-taking function (secret_create, secret_update,
#    secret_encrypt, secret_mask, insert_secret, replace_secret_value)
#    failing at parse, analysis, planning, execution, in an aborted
#    transaction and at commit, with standard_conforming_strings on and
#    off (backslash escapes, E'' and dollar quotes): no plaintext in the
#    log, pg_stat_activity or pg_stat_statements;
#  - names are not secrets: the log_statement line, the pgaudit SESSION
#    and OBJECT lines (those of the statements nested in secret_create and
#    secret_update included, with pgaudit.log_parameter on) and
#    pg_stat_statements still name the secret read, created, updated or
#    deleted; a user's PL/pgSQL wrapper that stores the plaintext in its own
#    table still has that statement's parameters redacted;
#  - a comment naming kek_passphrase or secret_create changes nothing;
#  - the catalog convention that finds plaintext-carrying functions (an
#    argument named value or plaintext; a text or jsonb result) selects
#    exactly the functions that carry one.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;

my $node = new_statement_text_node('failure_paths',
	kek_settings('PP-failpaths-2b7e-meadow-kek-passphrase-c03d', 1) . q{
pgaudit.role = 'auditor'
});
$node->start;

my @plaintexts;
sub pt
{
	my $p = 'pt' . random_hex();
	push @plaintexts, $p;
	return $p;
}

$node->safe_psql(
	'postgres', q{
CREATE EXTENSION secretenv;
CREATE EXTENSION pgaudit;
CREATE EXTENSION pg_stat_statements;
CREATE ROLE auditor NOLOGIN;
GRANT SELECT, INSERT, UPDATE, DELETE ON secretenv.secrets TO auditor;
GRANT SELECT ON secretenv.decrypted_secrets TO auditor;
CREATE TABLE chk (v text CHECK (v = 'only-this'));
CREATE TABLE trg (v text);
CREATE FUNCTION trg_raise() RETURNS trigger LANGUAGE plpgsql AS
	$$BEGIN RAISE EXCEPTION 'value % refused', NEW.v; END$$;
CREATE TRIGGER trg_raise BEFORE INSERT ON trg FOR EACH ROW EXECUTE FUNCTION trg_raise();
CREATE TABLE dfr (v text UNIQUE DEFERRABLE INITIALLY DEFERRED);
});

###########################################################################
# The catalog convention
###########################################################################
is( $node->safe_psql(
		'postgres', q{
SELECT string_agg(DISTINCT p.proname, ',' ORDER BY p.proname)
FROM pg_proc p
JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'secretenv'
WHERE p.prorettype IN ('text'::regtype, 'jsonb'::regtype)
   OR EXISTS (SELECT FROM unnest(p.proargnames, coalesce(p.proargmodes, array_fill('i'::"char", ARRAY[coalesce(cardinality(p.proargnames), 0)]))) a(n, m)
              WHERE a.n IN ('value', 'plaintext') AND a.m IN ('i', 'b', 'v'))}),
	'audit_stats,cache_stats,insert_secret,key_config,replace_secret_value,secret_create,secret_decrypt,secret_decrypt_stored,secret_encrypt,secret_get,secret_mask,secret_stage,secret_update,status',
	'the convention selects the functions that take or return a plaintext (and four jsonb reports, harmlessly)');

###########################################################################
# Reads: a cast or a function that quotes the decrypted value
###########################################################################
my %secret;    # name => plaintext
for my $n (1 .. 30)
{
	my $name = "rd_$n";
	$secret{$name} = pt();
	$node->safe_psql('postgres', "SELECT secretenv.secret_create('$name', '$secret{$name}')");
}
my $json_pt = pt();
$node->safe_psql('postgres',
	"SELECT secretenv.secret_create('rd_json', '{\"k\": \"$json_pt\"}'::jsonb)");

my @readers = (
	[ 'secret_get uncached', sub { "secretenv.secret_get('$_[0]')" }, '' ],
	[ 'secret_get cached', sub { "secretenv.secret_get('$_[0]')" },
		"SELECT length(secretenv.secret_get('%s')) > 0;\n" ],
	[ 'decrypted_secrets', sub { "(SELECT value FROM secretenv.decrypted_secrets WHERE secret_name = '$_[0]')" }, '' ],
	[ 'secret_decrypt', sub {
		"(SELECT secretenv.secret_decrypt(encrypted_value, wrapped_dek, kek_version, secret_id, secret_name) FROM secretenv.secrets WHERE secret_name = '$_[0]')"
	}, '' ],
);
my @quoters = (
	[ '::int', sub { "SELECT ($_[0])::int" }, '22P02' ],
	[ '::uuid', sub { "SELECT ($_[0])::uuid" }, '22P02' ],
	[ '::date', sub { "SELECT ($_[0])::date" }, '22007' ],
	[ '::jsonb', sub { "SELECT ($_[0])::jsonb" }, '22P02' ],
	[ 'CHECK', sub { "INSERT INTO chk SELECT $_[0]" }, '23514' ],
	[ 'trigger', sub { "INSERT INTO trg SELECT $_[0]" }, 'P0001' ],
);
my $k = 1;
for my $r (@readers)
{
	my ($rlabel, $expr, $prelude) = @$r;
	for my $q (@quoters)
	{
		my ($qlabel, $stmt, $state) = @$q;
		my $name = 'rd_' . $k++;
		my $sql = ($prelude ? sprintf($prelude, $name) : '') . $stmt->($expr->($name)) . ";\n";
		my (undef, $err) = run_sql($node, 'postgres', $sql);
		like($err, qr/ERROR:  $state/, "$rlabel $qlabel: fails with SQLSTATE $state") if $state;
		unlike($err, qr/\Q$secret{$name}\E/, "$rlabel $qlabel: the client's error does not quote the value");
	}
}
{
	my (undef, $err) = run_sql($node, 'postgres',
		"SELECT (secretenv.secret_get('rd_json')::jsonb ->> 'k')::int;");
	like($err, qr/ERROR:  22P02/, '->> then ::int fails with 22P02');
	unlike($err, qr/\Q$json_pt\E/, '->> then ::int: the client sees no value');
}

# A parallel query: the view scanned by a worker.
{
	my $name = 'rd_' . $k++;
	# PostgreSQL 16 renamed force_parallel_mode to debug_parallel_query.
	my $force = $node->pg_version->major >= 16 ? 'debug_parallel_query' : 'force_parallel_mode';
	my (undef, $err) = run_sql($node, 'postgres', qq{
SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0; SET $force = on;
SELECT value::int FROM secretenv.decrypted_secrets WHERE secret_name = '$name';
});
	like($err, qr/ERROR:  22P02/, 'parallel decrypted_secrets ::int fails with 22P02');
	unlike($err, qr/\Q$secret{$name}\E/, 'parallel: the client sees no value');
}

# A deferred unique constraint fails at COMMIT with the decrypted value.
{
	my $name = 'rd_' . $k++;
	my (undef, $err) = run_sql($node, 'postgres', qq{
BEGIN;
INSERT INTO dfr SELECT secretenv.secret_get('$name');
INSERT INTO dfr SELECT value FROM secretenv.decrypted_secrets WHERE secret_name = '$name';
COMMIT;
});
	like($err, qr/ERROR:  23505/, 'deferred unique at COMMIT fails with 23505');
	unlike($err, qr/\Q$secret{$name}\E/, 'COMMIT: the client sees no value');
}

###########################################################################
# Writes: every failure point, both settings of standard_conforming_strings
###########################################################################
$node->safe_psql('postgres', "SELECT secretenv.secret_create('wr_existing', 'x')");
my $activity_seen = '';
my $failures = 0;
for my $scs (qw(on off))
{
	if ($scs eq 'off' && $node->pg_version->major >= 19)
	{
	  SKIP:
		{
			skip 'PostgreSQL 19 refuses standard_conforming_strings = off ("non-standard string literals are not supported")', 1;
		}
		next;
	}
	# [ label, SQL with %s for a string literal holding the plaintext, SQLSTATE ]
	my @writes;
	for my $call (
		[ 'secret_create', "secretenv.secret_create('wr_new_$scs', %s)" ],
		[ 'secret_update', "secretenv.secret_update('wr_existing', %s)" ],
		[ 'secret_encrypt', "secretenv.secret_encrypt(%s, 'id', 'n')" ],
		[ 'secret_mask', "secretenv.secret_mask(%s)" ],
		[ 'insert_secret', "secretenv.insert_secret('wr_ins_$scs', %s, '{}', NULL, NULL)" ],
		[ 'replace_secret_value', "secretenv.replace_secret_value('wr_existing', %s, '{}')" ])
	{
		my ($fn, $c) = @$call;
		push @writes,
		  [ "$fn parse", "SELECT $c FROM", '42601' ],
		  [ "$fn analysis", "SELECT " . ($c =~ s/\)$/, 1, 2, 3, 4)/r), '42883' ],
		  [ "$fn analysis cast", "SELECT " . ($c =~ s/%s/%s::jsonb::text/r), '22P02' ],
		  [ "$fn planning", "SELECT " . ($c =~ s/%s/(%s || '')::jsonb::text/r), '22P02' ],
		  [ "$fn execution", "SELECT $c, 1/0", '22012' ],
		  [ "$fn aborted", "BEGIN; SELECT 1/0; SELECT $c", '25P02' ],
		  [ "$fn commit", "BEGIN; SELECT $c; INSERT INTO dfr VALUES ('same'), ('same'); COMMIT", '23505' ];
	}
	for my $w (@writes)
	{
		my ($label, $template, $state) = @$w;
		my $p = pt();
		my $literal = $scs eq 'off'
		  ? ("E'\\\\$p'", "'\\'$p'", '$q$' . $p . '$q$')[ $failures % 3 ]
		  : ("'$p'", "E'\\\\$p'", '$$' . $p . '$$')[ $failures % 3 ];
		$failures++;
		my $session = $node->background_psql('postgres', on_error_stop => 0);
		session_query($session, "SET standard_conforming_strings = $scs");
		my $pid = session_query($session, 'SELECT pg_backend_pid()');
		my ($out, $err) = session_query($session, sprintf($template, $literal));
		like($err, qr/\b$state\b|ERROR:/, "scs=$scs $label: fails");
		my $activity = $node->safe_psql('postgres',
			"SELECT query FROM pg_stat_activity WHERE pid = $pid");
		unlike($activity, qr/\Q$p\E/, "scs=$scs $label: pg_stat_activity shows no plaintext");
		$activity_seen .= "$activity\n";
		$session->quit;
	}
}

###########################################################################
# Names are not secrets; comments change nothing
###########################################################################
my $offset = -s $node->logfile;
my $named = pt();
my $do_pt = pt();
my $named_pt = pt();
my $lang_pt = pt();
# The first statement of the session: the catalog was read when the
# connection's first transaction committed.
$node->safe_psql('postgres', qq{
SELECT secretenv.secret_create('audit_created', '$named');
DO \$\$BEGIN PERFORM secretenv.secret_create('audit_do', '$do_pt'); END\$\$;
SELECT secretenv.secret_create(value => '$named_pt', secret_name => 'audit_named');
SELECT secretenv.secret_mask(value := '$named_pt' || 'y');
DO LANGUAGE plpgsql \$\$BEGIN PERFORM secretenv.secret_mask('$lang_pt'); END\$\$;
SELECT secretenv.secret_update('audit_created', '$named' || 'x');
SELECT length(secretenv.secret_get('audit_created'));
SELECT length(value) FROM secretenv.decrypted_secrets WHERE secret_name = 'audit_created';
SELECT secretenv.secret_delete('audit_created', recovery_window => '0');
SELECT 'comment-probe' AS probe, length(secretenv.secret_get('rd_1')) -- kek_passphrase secret_create
;
SELECT 'column-probe' AS secret_create, 'kek_passphrase' AS secret_update;
});
my $log = slurp_file($node->logfile, $offset);
for my $fn (qw(secret_create secret_update secret_get decrypted_secrets secret_delete))
{
	like($log, qr/statement: SELECT .*\Q$fn\E\S*\('audit_created'|statement: SELECT .*\Q$fn\E WHERE secret_name = 'audit_created'/,
		"$fn: the log_statement line names the secret");
	like($log, qr/AUDIT: SESSION,[^\n]*\Q$fn\E[^\n]*audit_created/,
		"$fn: the pgaudit SESSION line names the secret");
}
like($log, qr/statement: SELECT secretenv\.secret_create\(value => '\*+', secret_name => 'audit_named'\)/,
	'named notation: the argument named value is overwritten, the name stays');
like($log, qr/statement: SELECT secretenv\.secret_mask\(value := '\*+' \|\| '\*'\)/,
	'named notation with := : the argument is overwritten');
like($log, qr/statement: DO LANGUAGE plpgsql \$\$BEGIN PERFORM secretenv\.secret_mask\('\*+'\); END\$\$/,
	'DO LANGUAGE: the body is read as code, its plaintext argument overwritten');
like($log, qr/AUDIT: OBJECT,[^\n]*decrypted_secrets[^\n]*audit_created/,
	'the pgaudit OBJECT line of a read names the secret');

# Each call's records, from its log_statement line to the next one.
my %call_log;
for my $record (split /(?=^\S+ \S+ UTC [^\[\n]*\[\d+\] \S+ LOG:  statement: )/m, $log)
{
	next unless $record =~ /LOG:  statement: SELECT .*?(secret_\w+|decrypted_secrets)\b[^\n]*'audit_created'/;
	$call_log{$1} .= $record;
}
# The parameter list of a pgaudit line on secretenv.secrets (the last
# fields after the statement text, which may span lines).
my $on_secrets = qr/secretenv\.secrets,(?:"(?:[^"]|"")*"|[^,\n]*),[^\n]*audit_created/;
# secret_get reads the table by an index scan of its own, outside the
# executor (without row-level security): pgaudit logs its call only.
like($call_log{secret_get} // '',
	qr/AUDIT: SESSION,\d+,\d+,FUNCTION,EXECUTE,FUNCTION,secretenv\.secret_get,[^\n]*audit_created/,
	'secret_get: the SESSION line of its call names the secret');
for my $fn (qw(secret_create secret_update secret_delete decrypted_secrets))
{
	my $records = $call_log{$fn} // '';
	for my $class (qw(SESSION OBJECT))
	{
		like($records, qr/AUDIT: $class,\d+,\d+,[A-Z]+,[A-Z ]+,(?:TABLE|VIEW),secretenv\.(?:secrets|decrypted_secrets),[^\n]*(?:\n\t[^\n]*)*audit_created/,
			"$fn: a $class line of its statement on secretenv.secrets names the secret");
	}
}
like($call_log{secret_create} // '',
	qr/AUDIT: SESSION,\d+,\d+,WRITE,INSERT,TABLE,$on_secrets/,
	'secret_create: the SESSION line of its INSERT keeps the parameters, the name among them');
like($call_log{secret_create} // '',
	qr/AUDIT: OBJECT,\d+,\d+,WRITE,INSERT,TABLE,$on_secrets/,
	'secret_create: the OBJECT line of its INSERT keeps the parameters, the name among them');
like($call_log{secret_update} // '',
	qr/AUDIT: OBJECT,\d+,\d+,WRITE,UPDATE,TABLE,secretenv\.secrets,"UPDATE[^"]*",(?!\[secretenv)/,
	'secret_update: the OBJECT line of its UPDATE keeps the parameters');
# (secret_delete's DELETE is a PL/pgSQL statement: its parameters are the function's.)
like($log, qr/AUDIT: OBJECT,\d+,\d+,WRITE,DELETE,TABLE,secretenv\.secrets,[^\n]*(?:\n\t[^\n]*)*,"?audit_created[,"\n]/,
	'the pgaudit OBJECT line of a delete names the secret');

# A bind parameter: only the one that fills the plaintext argument goes.
my $bound = pt();
pgbench_check($node, PostgreSQL::Test::Utils::tempdir, 'bind_named',
	"\\set n random(1, 2000000000)\nSELECT secretenv.secret_create(:harmless || :n, :value);\n",
	value => $bound, harmless => 'bindname-067-');
like(slurp_file($node->logfile, $offset),
	qr/[Pp]arameters: \$1 = 'bindname-067-', \$2 = '\d+', \$3 = \[secretenv: redacted\]/,
	'bind parameters: the name stays, the plaintext is overwritten');
like(slurp_file($node->logfile, $offset),
	qr/AUDIT: SESSION,\d+,\d+,READ,SELECT,,,"SELECT secretenv\.secret_create\(\$1 \|\| \$2, \$3\)","bindname-067-,\d+,\[secretenv: redacted\]"/,
	'pgaudit parameters: the name stays, the plaintext is overwritten');
like($log, qr/statement: SELECT 'comment-probe'/,
	'a comment naming kek_passphrase does not hide the statement');
like($log, qr/AUDIT: SESSION,[^\n]*'comment-probe'[^\n]*rd_1/,
	'a comment naming kek_passphrase does not hide it from pgaudit');
like($log, qr/statement: SELECT 'column-probe' AS secret_create, 'kek_passphrase' AS secret_update;/,
	'a column or a string named like a plaintext function changes nothing');
my $pgss = $node->safe_psql('postgres',
	"SELECT string_agg(query, chr(10)) FROM pg_stat_statements");
like($pgss, qr/secretenv\.secret_create\(\$1, \$2\)/,
	'pg_stat_statements: a plannable call, normalised as ever');
like($pgss, qr/PERFORM secretenv\.secret_create\('audit_do', '\*+'\)/,
	'pg_stat_statements: a DO block keeps the name, not the plaintext');

# With quote_all_identifiers on, the CONTEXT frame quotes the schema and
# the function's name: still secretenv's own statement.
$offset = -s $node->logfile;
my $quoted_pt = pt();
$node->safe_psql('postgres',
	"SET quote_all_identifiers = on; SELECT secretenv.secret_create('audit_quoted', '$quoted_pt');");
like(slurp_file($node->logfile, $offset),
	qr/AUDIT: OBJECT,\d+,\d+,WRITE,INSERT,TABLE,"""secretenv"".""secrets""",(?:"(?:[^"]|"")*"),"audit_quoted,/,
	'quote_all_identifiers: the OBJECT line of the INSERT still names the secret');

# A user's PL/pgSQL wrapper, unlisted, that keeps a copy of the plaintext
# in its own table: the statement is marked by the secret_create before
# it, and its parameters are redacted, whatever the wrapper's name (one
# spelt like secretenv's own, in a schema of the user's).  The plaintext
# is made on the server, so that no text the test sends holds it.
$node->safe_psql('postgres', q{
CREATE TABLE app_copy (n text, v text);
GRANT SELECT, INSERT ON app_copy TO auditor;
CREATE FUNCTION app_keep(n text, v text) RETURNS void LANGUAGE plpgsql AS
	$$BEGIN PERFORM secretenv.secret_create(n, v); INSERT INTO app_copy VALUES (n, v); END$$;
CREATE FUNCTION "secretenv.insert_secret"(n text, v text) RETURNS void LANGUAGE plpgsql AS
	$$BEGIN PERFORM secretenv.secret_create(n, v); INSERT INTO app_copy VALUES (n, v); END$$;
});
$offset = -s $node->logfile;
$node->safe_psql('postgres', q{
SELECT app_keep('wrapped_a', 'pt' || md5(random()::text));
SELECT "secretenv.insert_secret"('wrapped_b', 'pt' || md5(random()::text));
});
my $wrapper_log = slurp_file($node->logfile, $offset);
my $copies = $node->safe_psql('postgres', 'SELECT v FROM app_copy ORDER BY n');
push @plaintexts, split /\n/, $copies;
is(scalar(split /\n/, $copies), 2, 'the wrappers stored their copies');
my $copy_lines = () = $wrapper_log =~
  /AUDIT: (?:SESSION|OBJECT),\d+,\d+,WRITE,INSERT,TABLE,public\.app_copy,[^\n]*,\[secretenv: redacted\]\n/g;
is($copy_lines, 4,
	"a user's wrapper: the SESSION and OBJECT lines of its INSERT have their parameters redacted");
is(scalar(grep { index($wrapper_log, $_) >= 0 } split /\n/, $copies), 0,
	"a user's wrapper: its plaintexts are nowhere in the log");

###########################################################################
# No plaintext anywhere
###########################################################################
$node->stop;
my $all_log = slurp_file($node->logfile);
$node->start;
my $pgss_all = $node->safe_psql('postgres', "SELECT string_agg(query, chr(10)) FROM pg_stat_statements");
my ($in_log, $in_activity, $in_pgss) = (0, 0, 0);
for my $p (@plaintexts)
{
	$in_log++ if index($all_log, $p) >= 0;
	$in_activity++ if index($activity_seen, $p) >= 0;
	$in_pgss++ if index($pgss_all, $p) >= 0;
}
is($in_log, 0, 'no plaintext in the server log (' . scalar(@plaintexts) . ' checked)');
is($in_activity, 0, 'no plaintext in pg_stat_activity');
is($in_pgss, 0, 'no plaintext in pg_stat_statements');
like($all_log, qr/\[secretenv: redacted\]/, 'the log holds redaction markers');

$node->stop;
done_testing();
