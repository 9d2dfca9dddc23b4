
# Copyright (c) secretenv contributors
#
# Access audit, durability and the log destination (DESIGN §8b):
#  - strict mode: a read returns only once its record is committed (the
#    record is visible right after the call returns); with the writer
#    stopped (its launcher SIGSTOPped) a read waits 5 seconds and fails
#    with 55S02, returning no plaintext, and its record, written once the
#    writer resumes, says failed;
#  - not strict, writer stopped: reads return, the queue keeps its 4096
#    records (6 MB mapped by the postmaster, apart from PostgreSQL's shared
#    memory), the rest are dropped and counted in audit_stats() and
#    status(); once the writer resumes the queued ones are written and
#    the chain verifies;
#  - a writer whose insert fails keeps the records queued, retries, and
#    writes them once the cause is gone;
#  - audit_destination = both: one LOG_SERVER_ONLY line per record with
#    its seq and MAC (the table's), in stderr, csvlog and jsonlog, never a
#    value; = log: lines without a MAC and nothing in the table;
#  - the writer appends by multi-insert: an INSERT trigger on audit_log
#    does not fire, an added column stays NULL; audit_log_time is a BRIN
#    index with autosummarize.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use JSON::PP;
use Time::HiRes qw(time);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SecretenvTest;
use Test::More;

my $value = 'sk-strict-audit-value-0123456789';
my $node = new_secretenv_node('audit_strict',
	conf => kek_settings('audit-strict-test-passphrase-0123456789', 1)
	  . "logging_collector = on\nlog_destination = 'stderr,csvlog,jsonlog'\n"
	  . "log_directory = 'log'\nlog_filename = 'postgresql'\n");
$node->start;
$node->safe_psql('postgres', qq{
CREATE EXTENSION secretenv;
CREATE ROLE app LOGIN IN ROLE secretenv_reader;
SELECT secretenv.secret_create('db-password', '$value');
});
$node->poll_query_until('postgres', 'SELECT count(*) = 1 FROM secretenv.audit_log') or die;

sub set_conf
{
	$node->append_conf('postgresql.conf', $_[0]);
	$node->reload;
	my ($name, $val) = $_[0] =~ /^(\S+) = (\S+)/;
	$node->poll_query_until('postgres', "SELECT current_setting('$name') = '$val'") or die;
}

# --- strict, writer running: the record is committed when the value returns ---
set_conf("secretenv.audit_strict = on\n");
my $s = $node->background_psql('postgres', on_error_stop => 0);
for my $i (1 .. 3)
{
	my $r = $s->query_safe(q{SELECT secretenv.secret_get('db-password') IS NOT NULL});
	my $n = $s->query_safe(q{SELECT count(*) FROM secretenv.audit_log WHERE operation = 'read'});
	is("$r $n", "t $i", "strict: read ${i}'s record is committed before the value returns");
}

# --- strict, writer stopped ---
sub stop_writer
{
	# No writer left (they leave after a second idle), then freeze the launcher.
	$node->poll_query_until('postgres', q{SELECT count(*) = 0 FROM pg_stat_activity
		WHERE backend_type = 'secretenv audit writer'}) or die;
	my $pid = $node->safe_psql('postgres', q{SELECT pid FROM pg_stat_activity
		WHERE backend_type = 'secretenv audit launcher'});
	kill 'STOP', $pid or die "could not stop the launcher $pid";
	return $pid;
}
my $launcher = stop_writer();
my $t0 = time;
my ($ret, $out, $err) = $node->psql('postgres', q{SELECT secretenv.secret_get('db-password')},
	extra_params => [ '-U', 'app' ]);
my $waited = time - $t0;
is($out, '', 'strict, writer stopped: no plaintext');
like($err, qr/ERROR:  could not record the read in the access audit\nDETAIL:  The audit writer did not commit the record in time; it stays queued./,
	'strict, writer stopped: the read fails');
ok($waited >= 4.5 && $waited < 30, sprintf('it waited %.1f s (the bound is 5 s)', $waited));
$node->psql('postgres', q{\set VERBOSITY verbose
	SELECT secretenv.secret_get('db-password')}, extra_params => [ '-U', 'app' ], stderr => \$err);
like($err, qr/ERROR:  55S02:/, 'its SQLSTATE is 55S02');
like($node->safe_psql('postgres', q{SELECT secretenv.audit_stats()->>'strict_failures'}),
	qr/^2$/, 'audit_stats() counts the strict failures');
kill 'CONT', $launcher;
$node->poll_query_until('postgres', q{SELECT count(*) = 5 FROM secretenv.audit_log WHERE operation = 'read'}) or die;
is($node->safe_psql('postgres', q{SELECT string_agg(outcome, ',' ORDER BY seq) FROM secretenv.audit_log WHERE operation = 'read'}),
	'ok,ok,ok,failed,failed', 'once the writer resumes, the refused reads are recorded as failed');
set_conf("secretenv.audit_strict = off\n");

# --- not strict, writer stopped: 4096 queued, the rest dropped and counted ---
my $slots = $node->safe_psql('postgres', q{SELECT secretenv.audit_stats()->>'queue_slots'});
is($slots, '4096', 'the queue has 4096 slots');
# The slots live outside PostgreSQL's shared memory, in a mapping of the
# postmaster that a crash restart keeps (TAP 108): about 6 MB there, a few
# kB of control in pg_shmem_allocations.
cmp_ok($node->safe_psql('postgres', q{SELECT size FROM pg_shmem_allocations WHERE name = 'secretenv audit'}),
	'<', 65536, "the queue's control takes under 64 kB of PostgreSQL's shared memory");
my @kept_mappings = grep {
	/^([0-9a-f]+)-([0-9a-f]+) rw-s .*\/dev\/zero \(deleted\)$/
	  && abs((hex($2) - hex($1)) / 1048576 - 6) < 0.5
} split /\n/, slurp_file('/proc/' . $node->{_pid} . '/maps');
is(scalar @kept_mappings, 1, "the postmaster maps the queue's 6 MB of slots itself");
$launcher = stop_writer();
my $reads = $slots + 76;
is($node->safe_psql('postgres', qq{SELECT count(secretenv.secret_get('db-password')) FROM generate_series(1, $reads)}),
	$reads, 'not strict, writer stopped: every read returns');
is($node->safe_psql('postgres', q{SELECT concat_ws(' ', s->>'pending', s->>'dropped') FROM secretenv.audit_stats() s}),
	"$slots 76", 'the queue holds as many records as it has slots, 76 were dropped and counted');
is($node->safe_psql('postgres', q{SELECT secretenv.status()->'audit'->>'dropped'}), '76',
	'status() shows the drops');
kill 'CONT', $launcher;
$node->poll_query_until('postgres', 'SELECT count(*) = ' . ($slots + 5) . q{ FROM secretenv.audit_log WHERE operation = 'read'}) or die;
is($node->safe_psql('postgres', q{SELECT concat_ws('|', intact, records) FROM secretenv.audit_verify()}),
	't|' . ($slots + 6), 'the queued records are written once the writer resumes; the chain verifies');

# --- a writer that fails keeps the records queued and retries ---
$node->safe_psql('postgres', q{
	ALTER TABLE secretenv.audit_log ADD CONSTRAINT poison CHECK (application_name <> 'poison');
	SET application_name = 'poison';
	SELECT secretenv.secret_get('db-password');});
$node->poll_query_until('postgres', q{SELECT (secretenv.audit_stats()->>'write_failures')::int >= 2})
  or die 'the writer did not fail';
is($node->safe_psql('postgres', q{SELECT concat_ws(' ', s->>'pending', s->>'given_up') FROM secretenv.audit_stats() s}),
	'1 0', 'a failing write keeps its record queued (retried every second)');
$node->safe_psql('postgres', 'ALTER TABLE secretenv.audit_log DROP CONSTRAINT poison');
$node->poll_query_until('postgres', q{SELECT count(*) = 1 FROM secretenv.audit_log WHERE application_name = 'poison'})
  or die 'the record was not written after the failure cleared';
is($node->safe_psql('postgres', q{SELECT concat_ws('|', intact, records) FROM secretenv.audit_verify()}),
	't|' . ($slots + 7), 'once the cause is fixed it is written, and the chain verifies');

# --- the log destination ---
set_conf("secretenv.audit_destination = both\n");
$node->safe_psql('postgres', q{SET application_name = 'billing "svc"'; SELECT secretenv.secret_get('db-password')},
	extra_params => [ '-U', 'app' ]);
$node->poll_query_until('postgres', 'SELECT count(*) = ' . ($slots + 8) . ' FROM secretenv.audit_log') or die;
my ($seq, $mac, $id) = split /\|/, $node->safe_psql('postgres',
	q{SELECT seq, encode(mac, 'hex'), secret_id FROM secretenv.audit_log ORDER BY seq DESC LIMIT 1});
set_conf("secretenv.audit_destination = log\n");
$node->safe_psql('postgres', q{SELECT secretenv.secret_get('db-password')}, extra_params => [ '-U', 'app' ]);
$node->safe_psql('postgres', 'SELECT pg_sleep(1.5)');
is($node->safe_psql('postgres', 'SELECT count(*) FROM secretenv.audit_log'), $slots + 8,
	'destination = log: nothing goes to the table');

my $dir = $node->data_dir . '/log';
my $stderr = slurp_file("$dir/postgresql");
my $line = qr/secretenv audit: seq=$seq time="[^"]+" database="postgres" session_user="app" current_user="app" operation=read via=secret_get outcome=ok secret_id=$id secret_name="db-password" application_name="billing \\"svc\\"" client_addr="" pid=\d+ version=(?:1|-) kek_version=1 mac=$mac/;
like($stderr, $line, 'stderr: the record\'s line, with the table\'s seq and MAC, quotes escaped');
like($stderr, qr/secretenv audit: seq=- time="[^"]+" database="postgres" session_user="app" current_user="app" operation=read via=secret_get outcome=ok secret_id=$id secret_name="db-password" application_name="[^"]*" client_addr="" pid=\d+ version=(?:1|-) kek_version=- mac=-/,
	'destination = log: a line without seq and MAC');
like(slurp_file("$dir/postgresql.csv"), qr/"secretenv audit: seq=$seq time=""[^"]+"" database=""postgres""/,
	'csvlog: the same line, CSV-quoted');
my @json = grep { /secretenv audit: seq=$seq / } split /\n/, slurp_file("$dir/postgresql.json");
is(scalar(@json), 1, 'jsonlog: one entry');
my $entry = decode_json($json[0]);
like($entry->{message}, $line, 'jsonlog: its message is the line');
is($entry->{error_severity}, 'LOG', 'jsonlog: severity LOG');
unlike($stderr . slurp_file("$dir/postgresql.csv") . slurp_file("$dir/postgresql.json"),
	qr/\Q$value\E/, 'no log carries the value');

# --- records go in as a multi-insert: an INSERT trigger does not fire ---
set_conf("secretenv.audit_destination = table\n");
is($node->safe_psql('postgres', q{
	SELECT a.amname || ' ' || array_to_string(c.reloptions, ',')
	FROM pg_class c JOIN pg_am a ON a.oid = c.relam
	WHERE c.oid = 'secretenv.audit_log_time'::regclass}),
	'brin autosummarize=on', 'audit_log_time is a BRIN index that autovacuum summarizes');
my $before = $node->safe_psql('postgres', 'SELECT count(*) FROM secretenv.audit_log');
$node->safe_psql('postgres', q{
	CREATE FUNCTION public.refuse_audit_insert() RETURNS trigger LANGUAGE plpgsql
		AS $$BEGIN RAISE EXCEPTION 'refused'; END$$;
	CREATE TRIGGER refuse BEFORE INSERT ON secretenv.audit_log
		FOR EACH ROW EXECUTE FUNCTION public.refuse_audit_insert();
	ALTER TABLE secretenv.audit_log ADD COLUMN note text DEFAULT 'added';
	SELECT secretenv.secret_get('db-password');});
$node->poll_query_until('postgres', 'SELECT count(*) = ' . ($before + 1) . ' FROM secretenv.audit_log')
  or die 'the record did not reach the table';
is($node->safe_psql('postgres', q{SELECT concat_ws('|', intact, records) FROM secretenv.audit_verify()}),
	't|' . ($before + 1), 'an INSERT trigger on audit_log does not stop the writer; the chain verifies');
is($node->safe_psql('postgres', q{SELECT coalesce(note, 'null') FROM secretenv.audit_log ORDER BY seq DESC LIMIT 1}),
	'null', 'a column added to audit_log is left NULL in the writer\'s rows');

$node->stop;
done_testing();
