
# Copyright (c) secretenv contributors
#
# The online rotation runbook end to end, with concurrent readers (issue 4):
#
#   rows under KEK v1
#   -> configure current = v2, previous = v1; reload
#   -> secretenv.secret_rotate_all()  (returns the row count; again: 0)
#   -> remove the previous KEK; reload
#
# while pgbench clients read every secret in a loop, through secret_decrypt
# and through secret_get, each in its own statements (so each applies the
# reloads as a real application backend would).  Every failed read is
# counted in a table; the count must stay 0 in every phase, and every reader
# must have read in every phase.
#
# Then: secret_rotate_all() refuses with 22S04 naming the missing version,
# and changes nothing (md5 of the whole table, xmin included), when a KEK it
# needs is not configured.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time sleep);
use FindBin;
use lib $FindBin::RealBin;
use SecretenvTest;

my $pass1 = 'rotation-test-passphrase-v1-3f9c2a7e1b6d4c8a0e5f';
my $pass2 = 'rotation-test-passphrase-v2-9a1e7c3b5d2f8e4a6c0b';
my $pass3 = 'rotation-test-passphrase-v3-5c8e2a4f6b1d9e3c7a0f';
my $nrows = 30;
my $nreaders = 3;

my $node = new_secretenv_node('rotation',
	conf => kek_settings($pass1, 1) . "secretenv_test.generation = 1\n");
$node->start;

$node->safe_psql(
	'postgres', qq{
CREATE EXTENSION secretenv;
SELECT secretenv.secret_create('s' || lpad(i::text, 3, '0'), 'value-s' || lpad(i::text, 3, '0'))
FROM generate_series(1, $nrows) i;
-- kept aside: a row as version 1 wrote it, for the refusal test at the end
SELECT secretenv.secret_create('legacy', 'value-legacy');
CREATE TABLE saved_legacy AS SELECT * FROM secretenv.secrets WHERE secret_name = 'legacy';
SELECT secretenv.secret_delete('legacy', recovery_window => '0');

CREATE SCHEMA test;
CREATE TABLE test.phase (phase int NOT NULL);
INSERT INTO test.phase VALUES (0);
CREATE UNLOGGED TABLE test.reader_log (
	reader int, phase int, use_get bool, kek_seen int, previous_seen bool,
	ok int, failed int, last_error text, at timestamptz DEFAULT clock_timestamp());

-- One pass over every secret; failures are counted, never raised.
CREATE FUNCTION test.read_all(reader int, use_get bool) RETURNS void
LANGUAGE plpgsql AS \$\$
DECLARE
	r record;
	v text;
	n_ok int := 0;
	n_bad int := 0;
	err text;
	ph int := (SELECT phase FROM test.phase);
BEGIN
	FOR r IN SELECT * FROM secretenv.secrets ORDER BY secret_name LOOP
		BEGIN
			IF use_get THEN
				v := secretenv.secret_get(r.secret_name);
			ELSE
				v := secretenv.secret_decrypt(r.encrypted_value, r.wrapped_dek,
											  r.kek_version, r.secret_id, r.secret_name);
			END IF;
			IF v IS NOT DISTINCT FROM 'value-' || r.secret_name THEN
				n_ok := n_ok + 1;
			ELSE
				n_bad := n_bad + 1;
				err := 'wrong value for ' || r.secret_name;
			END IF;
		EXCEPTION WHEN OTHERS THEN
			n_bad := n_bad + 1;
			err := SQLSTATE || ': ' || SQLERRM;
		END;
	END LOOP;
	INSERT INTO test.reader_log (reader, phase, use_get, kek_seen, previous_seen, ok, failed, last_error)
	VALUES (reader, ph, use_get, secretenv.current_kek_version(),
			secretenv.kek_is_configured(1), n_ok, n_bad, err);
END
\$\$;
});

is($node->safe_psql('postgres',
		'SELECT count(*) FROM secretenv.secrets WHERE kek_version = 1'),
	$nrows, "$nrows rows under KEK version 1");

my $tmp = PostgreSQL::Test::Utils::tempdir;
PostgreSQL::Test::Utils::append_to_file("$tmp/reader.sql",
	"SELECT test.read_all(:client_id, false);\nSELECT test.read_all(:client_id, true);\n");

# Readers: one pgbench client each, one statement per pass, until we stop them.
my ($bench_out, $bench_err) = ('', '');
my $bench = IPC::Run::start(
	[
		'pgbench', '-n', '-c', $nreaders, '-j', $nreaders, '-t', '1000000',
		'-h', $node->host, '-p', $node->port, '-f', "$tmp/reader.sql",
		'postgres'
	],
	'>', \$bench_out, '2>', \$bench_err);

# Wait until every reader has made a pass of both kinds in this phase, with
# the configuration given by $cond (a SQL condition on reader_log).
sub wait_readers
{
	my ($phase, $cond) = @_;
	$cond //= 'true';
	my $ok = $node->poll_query_until('postgres',
		"SELECT count(DISTINCT (reader, use_get)) = 2 * $nreaders FROM test.reader_log "
		  . "WHERE phase = $phase AND $cond");
	return $ok;
}

sub set_phase
{
	my ($phase) = @_;
	$node->safe_psql('postgres', "UPDATE test.phase SET phase = $phase");
}

ok(wait_readers(0, 'kek_seen = 1'), 'phase 0: every reader reads under KEK v1');

# Step 1: the new KEK becomes current, the old one previous.
reload_generation($node, kek_settings($pass2, 2, $pass1, 1), 2);
set_phase(1);
ok(wait_readers(1, 'kek_seen = 2 AND previous_seen'),
	'phase 1: every reader applied the reload (current v2, previous v1) and keeps reading');
is($node->safe_psql('postgres', "SELECT secretenv.status()->>'rotation_complete'"),
	'false', 'status(): rotation not complete before secret_rotate_all');

# Step 2: rotate, while the readers read.
my $t0 = time;
is($node->safe_psql('postgres', 'SELECT secretenv.secret_rotate_all()'),
	$nrows, "secret_rotate_all() returns the row count ($nrows)");
diag(sprintf('secret_rotate_all() of %d rows took %.0f ms', $nrows, 1000 * (time - $t0)));
is($node->safe_psql('postgres', 'SELECT secretenv.secret_rotate_all()'),
	'0', 'a second secret_rotate_all() returns 0');
set_phase(2);
ok(wait_readers(2), 'phase 2: every reader keeps reading after the rotation');

# Step 3: retire the previous KEK.
reload_generation($node, "secretenv.kek_previous_passphrase = ''\nsecretenv.kek_previous_version = 0\n", 3);
set_phase(3);
ok(wait_readers(3, 'kek_seen = 2 AND NOT previous_seen'),
	'phase 3: every reader applied the reload without the previous KEK and keeps reading');

# Stop the readers (the pgbench we started, by its handle).
$bench->signal('TERM');
$bench->finish;
unlike($bench_err, qr/aborted|ERROR/,
	'no reader client was aborted by an error');

my $summary = $node->safe_psql('postgres',
	"SELECT phase, count(*), sum(ok), sum(failed) FROM test.reader_log GROUP BY phase ORDER BY phase");
diag("reader passes per phase (phase|passes|reads ok|reads failed):\n$summary");
my $errors = $node->safe_psql('postgres',
	"SELECT phase, kek_seen, previous_seen, use_get, count(*), min(last_error) FROM test.reader_log WHERE failed > 0 GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4");
diag("failing passes (phase|kek_seen|previous_seen|use_get|passes|error):\n$errors") if $errors ne '';
is($node->safe_psql('postgres', 'SELECT coalesce(sum(failed), -1) FROM test.reader_log'),
	'0', 'readers: zero failed reads throughout');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM test.reader_log WHERE ok <> $nrows"),
	'0',
	"readers: every pass read all $nrows secrets");
my $first_error = $node->safe_psql('postgres',
	'SELECT last_error FROM test.reader_log WHERE failed > 0 ORDER BY at LIMIT 1');
is($first_error, '', 'readers: no error recorded');

is( $node->safe_psql('postgres',
		'SELECT kek_version, count(*) FROM secretenv.secrets GROUP BY 1 ORDER BY 1'),
	"2|$nrows",
	'every row is at version 2');
my ($rc, $out, $err) = $node->psql('postgres',
	"SELECT count(*) FROM secretenv.secrets WHERE secretenv.secret_decrypt(encrypted_value, wrapped_dek, kek_version, secret_id, secret_name) = 'value-' || secret_name"
);
is($out, $nrows, 'every row decrypts to its value under KEK v2 alone');
is($err, '', '... with no warning or error');
($rc, $out, $err) = $node->psql('postgres', 'SELECT count(*) FROM secretenv.verify_secrets()');
is($out, '0', 'verify_secrets() reports nothing');
is( $node->safe_psql('postgres',
		"SELECT s->>'rotation_complete', s->>'previous_version', s->'versions' FROM secretenv.status() s"
	),
	qq(true||[{"rows": $nrows, "kek_version": 2, "kek_configured": true, "kek_opens_sample": true}]),
	'status(): rotation complete, only version 2, healthy');

###########################################################################
# Refusal: a KEK that is needed is missing.
###########################################################################
my $fingerprint =
  "SELECT md5(string_agg(t::text || ':' || t.xmin::text || ':' || t.ctid::text, '|' ORDER BY secret_name)) FROM secretenv.secrets t";

# Put back the row as version 1 wrote it; make v3 current, v2 previous.
$node->safe_psql('postgres',
	'INSERT INTO secretenv.secrets SELECT * FROM saved_legacy');
reload_generation($node, kek_settings($pass3, 3, $pass2, 2), 4);

my $before = $node->safe_psql('postgres', $fingerprint);
($rc, $out, $err) = $node->psql(
	'postgres', 'SELECT secretenv.secret_rotate_all()',
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
isnt($rc, 0, 'secret_rotate_all() fails when version 1 has no KEK');
my ($msg) = $err =~ /ERROR:  22S04: ([^\n]*)/;
like($msg // $err, qr/no KEK is configured for version 1$/,
	'refusal: SQLSTATE 22S04 and the message names version 1 (and only it)');
is($node->safe_psql('postgres', $fingerprint),
	$before, 'refusal: the table is byte for byte unchanged (md5 incl. xmin, ctid)');
is( $node->safe_psql('postgres',
		'SELECT kek_version, count(*) FROM secretenv.secrets GROUP BY 1 ORDER BY 1'),
	"1|1\n2|$nrows",
	'refusal: the rotatable version-2 rows were not rotated either');

# Two versions missing: both are named.
reload_generation($node, "secretenv.kek_previous_passphrase = ''\nsecretenv.kek_previous_version = 0\n", 5);
$before = $node->safe_psql('postgres', $fingerprint);
($rc, $out, $err) = $node->psql(
	'postgres', 'SELECT secretenv.secret_rotate_all()',
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
($msg) = $err =~ /ERROR:  22S04: ([^\n]*)/;
like($msg // $err, qr/no KEK is configured for version 1, 2$/,
	'refusal with two missing versions names both');
is($node->safe_psql('postgres', $fingerprint),
	$before, 'refusal: again nothing changed');

$node->stop;
done_testing();
