
# Copyright (c) secretenv contributors
#
# Access audit, tamper evidence (DESIGN §8b): audit_verify() reports the
# first break of secretenv.audit_log's HMAC chain at the right sequence
# number when a superuser (past the append-only trigger) deletes, alters,
# reorders or inserts a record, deletes the first or the last records, or
# names a KEK version that is not configured; audit_purge() refuses NULL, a
# future cutoff, a non-admin caller and a broken chain (nothing lost), and
# after a purge the rest still verifies; a KEK rotation in the middle of
# the chain verifies, and purging the old KEK's records before retiring
# it keeps the chain verifiable without that KEK.  A forged record numbered
# at the top of int8 makes the writer refuse (2200H) rather than wrap, and
# the queued record is appended once the forged row is deleted.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SecretenvTest;
use Test::More;

my $pass1 = 'audit-chain-test-passphrase-one-0123456789';
my $pass2 = 'audit-chain-test-passphrase-two-0123456789';
my $node = new_secretenv_node('audit_chain', conf => kek_settings($pass1, 1));
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION secretenv;
CREATE ROLE app LOGIN IN ROLE secretenv_reader;
CREATE ROLE auditor LOGIN IN ROLE secretenv_admin;
SELECT secretenv.secret_create('stripe', 'sk-stripe-0123456789abcdef');
SELECT secretenv.secret_get('stripe') FROM generate_series(1, 9);
});

sub wait_records
{
	my ($n) = @_;
	$node->poll_query_until('postgres', "SELECT count(*) = $n FROM secretenv.audit_log")
	  or die "timed out waiting for $n records";
}
sub verify
{
	my ($sql) = @_;
	$sql //= '';
	return $node->safe_psql('postgres', qq{
		BEGIN;
		ALTER TABLE secretenv.audit_log DISABLE TRIGGER audit_log_append_only;
		$sql;
		SELECT concat_ws('|', intact, records, first_break, problem) FROM secretenv.audit_verify();
		ROLLBACK;});
}
wait_records(10);
is(verify(), 't|10', 'ten records: intact');

is(verify('DELETE FROM secretenv.audit_log WHERE seq = 5'),
	'f|4|5|record 5 is missing (the next record is 6)', 'a deleted record is reported at its place');
is(verify(q{UPDATE secretenv.audit_log SET secret_name = 'other' WHERE seq = 6}),
	'f|5|6|record 6 does not match its MAC: it was altered, inserted or moved',
	'an altered name is reported');
is(verify(q{UPDATE secretenv.audit_log SET session_user_name = 'nobody' WHERE seq = 7}),
	'f|6|7|record 7 does not match its MAC: it was altered, inserted or moved',
	'an altered user is reported');
is(verify(q{UPDATE secretenv.audit_log SET event_time = event_time - interval '1 day' WHERE seq = 3}),
	'f|2|3|record 3 does not match its MAC: it was altered, inserted or moved',
	'an altered time is reported');
is(verify(q{UPDATE secretenv.audit_log SET seq = 1000 WHERE seq = 4;
		UPDATE secretenv.audit_log SET seq = 4 WHERE seq = 5;
		UPDATE secretenv.audit_log SET seq = 5 WHERE seq = 1000}),
	'f|3|4|record 4 does not match its MAC: it was altered, inserted or moved',
	'two swapped records are reported at the first');
is(verify(q{INSERT INTO secretenv.audit_log
		SELECT 11, event_time, database_name, session_user_name, current_user_name, secret_id,
			   'forged', operation, via, outcome, application_name, client_addr, backend_pid,
			   purged_through, anchor_mac, mac_kek_version, mac
		FROM secretenv.audit_log WHERE seq = 10}),
	'f|10|11|record 11 does not match its MAC: it was altered, inserted or moved',
	'an inserted record is reported');
is(verify(q{UPDATE secretenv.audit_log SET seq = seq + 1000 WHERE seq >= 8;
		UPDATE secretenv.audit_log SET seq = seq - 999 WHERE seq >= 1000;
		INSERT INTO secretenv.audit_log
		SELECT 8, event_time, database_name, session_user_name, current_user_name, secret_id,
			   secret_name, operation, via, outcome, application_name, client_addr, backend_pid + 1,
			   purged_through, anchor_mac, mac_kek_version, mac
		FROM secretenv.audit_log WHERE seq = 7}),
	'f|7|8|record 8 does not match its MAC: it was altered, inserted or moved',
	'a record inserted in the middle (the rest renumbered) is reported');
is(verify('DELETE FROM secretenv.audit_log WHERE seq <= 2'),
	'f|0|2|record 2 is missing: no purge checkpoint accounts for the records before 3',
	'deleted first records are reported');
is(verify('DELETE FROM secretenv.audit_log WHERE seq >= 9'),
	'f|8|9|records 9 to 10 are missing: this server\'s writer chained them',
	'deleted last records are reported (the writer remembers its head)');
is(verify('DELETE FROM secretenv.audit_log'),
	'f|0|1|records 1 to 10 are missing: the table is empty but this server\'s writer chained them',
	'an emptied table is reported');
is(verify('UPDATE secretenv.audit_log SET mac_kek_version = 7 WHERE seq = 2'),
	'f|1|2|record 2 cannot be checked: KEK version 7 is not configured',
	'a record under a KEK that is not configured cannot be checked');

# A record appended after a tail deletion continues from the writer's head.
$node->safe_psql('postgres', q{
	ALTER TABLE secretenv.audit_log DISABLE TRIGGER audit_log_append_only;
	DELETE FROM secretenv.audit_log WHERE seq = 10;
	ALTER TABLE secretenv.audit_log ENABLE ALWAYS TRIGGER audit_log_append_only;
	SELECT secretenv.secret_get('stripe');});
$node->poll_query_until('postgres', 'SELECT max(seq) = 11 FROM secretenv.audit_log')
  or die 'no record 11';
is($node->safe_psql('postgres', q{SELECT concat_ws('|', intact, records, first_break, problem) FROM secretenv.audit_verify()}),
	'f|9|10|record 10 is missing (the next record is 11)',
	'after a tail deletion the chain continues from the head: the gap stays visible');

# --- purge: bad input changes nothing ---
my $count = $node->safe_psql('postgres', 'SELECT count(*) FROM secretenv.audit_log');
my ($ret, $out, $err) = $node->psql('postgres', 'SELECT secretenv.audit_purge(NULL)',
	extra_params => [ '-U', 'auditor' ]);
like($err, qr/ERROR:  the cutoff of audit_purge must not be null/, 'purge(NULL) is refused');
($ret, $out, $err) = $node->psql('postgres', q{SELECT secretenv.audit_purge(now() + interval '1 hour')},
	extra_params => [ '-U', 'auditor' ]);
like($err, qr/ERROR:  the cutoff of audit_purge must be a time in the past/, 'a future cutoff is refused');
($ret, $out, $err) = $node->psql('postgres', q{SELECT secretenv.audit_purge('infinity')},
	extra_params => [ '-U', 'auditor' ]);
like($err, qr/must be a time in the past/, 'an infinite cutoff is refused');
($ret, $out, $err) = $node->psql('postgres', q{SELECT secretenv.audit_purge(now())},
	extra_params => [ '-U', 'app' ]);
like($err, qr/permission denied for function audit_purge/, 'a non-admin cannot purge');
($ret, $out, $err) = $node->psql('postgres', q{SELECT secretenv.audit_purge(now())},
	extra_params => [ '-U', 'auditor' ]);
like($err, qr/ERROR:  refusing to purge a broken audit chain\nDETAIL:  audit_verify\(\) reports: record 10 is missing/,
	'a broken chain is never purged');
is($node->safe_psql('postgres', 'SELECT count(*) FROM secretenv.audit_log'), $count,
	'nothing was lost');

# A fresh chain for the rest: records of a new database.
$node->safe_psql('postgres', 'CREATE DATABASE chain2');
$node->safe_psql('chain2', q{
	CREATE EXTENSION secretenv;
	SELECT secretenv.secret_create('stripe', 'sk-stripe-0123456789abcdef');
	SELECT secretenv.secret_get('stripe') FROM generate_series(1, 4);});
$node->poll_query_until('chain2', 'SELECT count(*) = 5 FROM secretenv.audit_log') or die;
my $cutoff = $node->safe_psql('chain2', 'SELECT clock_timestamp()');
$node->safe_psql('chain2', q{SELECT secretenv.secret_get('stripe') FROM generate_series(1, 3)});
$node->poll_query_until('chain2', 'SELECT count(*) = 8 FROM secretenv.audit_log') or die;
is($node->safe_psql('chain2', "SELECT secretenv.audit_purge('$cutoff')",
	extra_params => [ '-U', 'auditor' ]), '5', 'purge deletes the 5 records before the cutoff');
is($node->safe_psql('chain2', q{SELECT string_agg(concat_ws(' ', seq, operation, via, session_user_name, purged_through), ',' ORDER BY seq) FROM secretenv.audit_log}),
	'6 read secret_get postgres,7 read secret_get_cached postgres,8 read secret_get_cached postgres,9 purge audit_purge auditor 5',
	'the rest, and a checkpoint by the admin naming the last purged record');
is($node->safe_psql('chain2', q{SELECT concat_ws('|', intact, records, first_break, problem) FROM secretenv.audit_verify()}),
	't|4', 'after a purge the rest verifies');
is($node->safe_psql('chain2', q{SELECT secretenv.audit_purge(now() - interval '1 day')},
	extra_params => [ '-U', 'auditor' ]), '0', 'a purge with nothing to remove removes nothing');
$node->safe_psql('chain2', q{
	ALTER TABLE secretenv.audit_log DISABLE TRIGGER audit_log_append_only;
	UPDATE secretenv.audit_log SET anchor_mac = set_byte(anchor_mac, 0, get_byte(anchor_mac, 0) # 1) WHERE seq = 9;
});
is($node->safe_psql('chain2', q{SELECT concat_ws('|', intact, records, first_break, problem) FROM secretenv.audit_verify()}),
	'f|0|6|record 6 does not match its MAC: it was altered, inserted or moved',
	'a forged checkpoint anchor breaks the chain at the first record it anchors');
$node->safe_psql('chain2', q{
	UPDATE secretenv.audit_log SET anchor_mac = set_byte(anchor_mac, 0, get_byte(anchor_mac, 0) # 1) WHERE seq = 9;
	ALTER TABLE secretenv.audit_log ENABLE ALWAYS TRIGGER audit_log_append_only;
});

# --- KEK rotation in the middle of the chain ---
$node->append_conf('postgresql.conf', kek_settings($pass2, 2, $pass1, 1));
$node->reload;
$node->poll_query_until('chain2', 'SELECT secretenv.current_kek_version() = 2') or die;
my $rotated = $node->safe_psql('chain2', 'SELECT clock_timestamp()');
$node->safe_psql('chain2', q{SELECT secretenv.secret_rotate_all(); SELECT secretenv.secret_get('stripe') FROM generate_series(1, 3)});
$node->poll_query_until('chain2', 'SELECT count(*) = 7 FROM secretenv.audit_log') or die;
is($node->safe_psql('chain2', q{SELECT string_agg(mac_kek_version || ':' || n, ',') FROM
	(SELECT mac_kek_version, count(*) n FROM secretenv.audit_log GROUP BY 1 ORDER BY 1) v}),
	'1:4,2:3', 'records before the rotation are MACed under KEK 1, after under KEK 2');
is($node->safe_psql('chain2', q{SELECT concat_ws('|', intact, records, first_break, problem) FROM secretenv.audit_verify()}),
	't|7', 'a chain across a KEK rotation verifies');

# Retiring KEK 1 without purging: its records can no longer be checked.
$node->append_conf('postgresql.conf', kek_settings($pass2, 2) . "secretenv.kek_previous_version = 0\n");
$node->reload;
$node->poll_query_until('chain2', q{SELECT NOT secretenv.kek_is_configured(1)}) or die;
is($node->safe_psql('chain2', q{SELECT concat_ws('|', intact, records, first_break, problem) FROM secretenv.audit_verify()}),
	'f|0|6|record 6 cannot be checked: KEK version 1 is not configured',
	'with KEK 1 removed, its records are reported as not checkable');
($ret, $out, $err) = $node->psql('chain2', "SELECT secretenv.audit_purge('$rotated')",
	extra_params => [ '-U', 'auditor' ]);
like($err, qr/refusing to purge a broken audit chain/, 'and cannot be purged then');

# The runbook: purge the old KEK's records while it is configured, then retire it.
$node->append_conf('postgresql.conf', kek_settings($pass2, 2, $pass1, 1));
$node->reload;
$node->poll_query_until('chain2', q{SELECT secretenv.kek_is_configured(1)}) or die;
is($node->safe_psql('chain2', "SELECT secretenv.audit_purge('$rotated')",
	extra_params => [ '-U', 'auditor' ]), '4', 'purge the records MACed under KEK 1');
$node->append_conf('postgresql.conf', kek_settings($pass2, 2) . "secretenv.kek_previous_version = 0\n");
$node->reload;
$node->poll_query_until('chain2', q{SELECT NOT secretenv.kek_is_configured(1)}) or die;
is($node->safe_psql('chain2', q{SELECT concat_ws('|', intact, records, first_break, problem) FROM secretenv.audit_verify()}),
	't|4', 'then the chain verifies without KEK 1');

# --- A forged record numbered at the top of int8 ---
# The writer refuses to number past it (no wrap to negative numbers), keeps
# the record queued, and appends it once the forged row is gone.
my $last = $node->safe_psql('chain2', 'SELECT max(seq) FROM secretenv.audit_log');
$node->safe_psql('chain2', qq{
	INSERT INTO secretenv.audit_log
	SELECT 9223372036854775807, event_time, database_name, session_user_name, current_user_name,
		   secret_id, secret_name, operation, via, outcome, application_name, client_addr,
		   backend_pid, purged_through, anchor_mac, mac_kek_version, mac
	FROM secretenv.audit_log WHERE seq = $last});
my $log_offset = -s $node->logfile;
is($node->safe_psql('chain2', q{SELECT secretenv.secret_get('stripe')}),
	'sk-stripe-0123456789abcdef', 'top seq forged: the read returns its value (not strict)');
ok( $node->wait_for_log(
		qr/could not write 1 audit records: secretenv\.audit_log has no record numbers left/,
		$log_offset),
	'the writer refuses to number past the forged record');
is($node->safe_psql('chain2', 'SELECT count(*) || \'|\' || min(seq) FROM secretenv.audit_log'),
	"5|" . ($last - 3), 'and wrote nothing: no record numbered past it or wrapped around');
is($node->safe_psql('chain2', q{SELECT concat_ws('|', intact, first_break, problem) FROM secretenv.audit_verify()}),
	'f|' . ($last + 1) . '|record ' . ($last + 1)
	  . ' is missing (the next record is 9223372036854775807)',
	'audit_verify() reports the gap before the forged record');
$node->safe_psql('chain2', q{
	BEGIN;
	ALTER TABLE secretenv.audit_log DISABLE TRIGGER audit_log_append_only;
	DELETE FROM secretenv.audit_log WHERE seq = 9223372036854775807;
	ALTER TABLE secretenv.audit_log ENABLE ALWAYS TRIGGER audit_log_append_only;
	COMMIT;});
$node->poll_query_until('chain2', 'SELECT max(seq) = ' . ($last + 1) . ' FROM secretenv.audit_log')
  or die 'the queued record was not appended';
is($node->safe_psql('chain2', q{SELECT concat_ws('|', intact, records, first_break, problem) FROM secretenv.audit_verify()}),
	't|5', 'with the forged row deleted, the queued record is appended and the chain verifies');

$node->stop;
done_testing();
