
# Copyright (c) secretenv contributors
#
# Access audit, what is recorded (DESIGN §8b): with the default
# secretenv.audit = reads, every operation on a stored secret leaves one
# row in secretenv.audit_log with the right operation, path (via),
# outcome, session_user and current_user, also when the reading
# transaction rolls back, fails, is cancelled or its backend is
# terminated right after the read; cache hits, decrypted_secrets,
# SET ROLE, wrappers and comments are recorded (with the names a role has
# at the time of the read, also after a rename in an open session); a
# non-superuser cannot turn it off; denied, not_found and failed reads are recorded; the
# chain verifies; no record carries a value.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SecretenvTest;
use Test::More;

my $value = 'sk-live-audit-0123456789abcdef';
my $node = new_secretenv_node('audit_records',
	conf => kek_settings('audit-records-test-passphrase-0123456789', 1));
$node->start;

$node->safe_psql('postgres', qq{
CREATE EXTENSION secretenv;
CREATE ROLE app LOGIN IN ROLE secretenv_reader;
CREATE ROLE pooler LOGIN NOINHERIT IN ROLE app;
CREATE ROLE auditor LOGIN IN ROLE secretenv_admin;
CREATE ROLE outsider LOGIN;
GRANT USAGE ON SCHEMA secretenv TO outsider;
GRANT EXECUTE ON FUNCTION secretenv.secret_get(text) TO outsider;
CREATE FUNCTION public.wrapped_get(n text) RETURNS text LANGUAGE sql
	AS 'SELECT secretenv.secret_get(n)';
SELECT secretenv.secret_create('openai-prod', '$value');
});

# Rows of the log after the first $skip, as "operation via outcome session_user current_user name".
my $seen = 0;
sub new_records
{
	my ($n, $label) = @_;
	my $want = $seen + $n;
	$node->poll_query_until('postgres',
		"SELECT count(*) >= $want FROM secretenv.audit_log")
	  or die "$label: timed out waiting for $want audit records";
	my $rows = $node->safe_psql('postgres', qq{
		SELECT string_agg(concat_ws(' ', operation, via, outcome, session_user_name,
									current_user_name, secret_name), E'\\n' ORDER BY seq)
		FROM secretenv.audit_log WHERE seq > $seen});
	$seen = $want;
	return $rows;
}

is(new_records(1, 'create'), 'create table ok postgres postgres openai-prod',
	'secret_create is recorded as a create');

# --- reads whose transaction does not commit ---
$node->psql('postgres', "BEGIN; SELECT secretenv.secret_get('openai-prod'); ROLLBACK;",
	extra_params => [ '-U', 'app' ]);
is(new_records(1, 'rollback'), 'read secret_get ok app app openai-prod',
	'a read inside BEGIN ... ROLLBACK is recorded');

my ($ret, $out, $err) = $node->psql('postgres',
	"\\set VERBOSITY verbose\nBEGIN; SELECT secretenv.secret_get('openai-prod'); SELECT 1/0; COMMIT;",
	extra_params => [ '-U', 'app' ]);
# Errors later in a transaction that read a plaintext are redacted; the SQLSTATE stays.
like($err, qr/ERROR:  22012: /, 'the transaction after the read fails');
is(new_records(1, 'error'), 'read secret_get ok app app openai-prod',
	'a read followed by an error is recorded');

my $s = $node->background_psql('postgres', on_error_stop => 0,
	extra_params => [ '-U', 'app' ]);
$s->query_safe('SELECT secretenv.cache_clear()');
my $pid = $s->query_safe('SELECT pg_backend_pid()');
$s->query_until(qr/started/, qq{BEGIN;
SELECT length(secretenv.secret_get('openai-prod'));
\\echo started
SELECT pg_sleep(60);
});
$node->poll_query_until('postgres',
	"SELECT wait_event = 'PgSleep' FROM pg_stat_activity WHERE pid = $pid");
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
is(new_records(1, 'cancel'), 'read secret_get ok app app openai-prod',
	'a read followed by a cancel is recorded');
$s->quit;

# Terminated right after the read: the record was queued before the value left.
$s = $node->background_psql('postgres', on_error_stop => 0,
	extra_params => [ '-U', 'app' ]);
$pid = $s->query_safe('SELECT pg_backend_pid()');
$s->query_until(qr/started/, qq{BEGIN;
\\echo started
SELECT secretenv.secret_get('openai-prod'), pg_terminate_backend(pg_backend_pid());
});
$node->poll_query_until('postgres',
	"SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $pid)");
is(new_records(1, 'terminate'), 'read secret_get ok app app openai-prod',
	'a read whose backend is terminated right after it is recorded');
eval { $s->quit };    # its server connection is gone

# --- the cache does not skip the record ---
$node->safe_psql('postgres', q{
	SELECT secretenv.secret_get('openai-prod');
	SELECT secretenv.secret_get('openai-prod');
	SELECT secretenv.secret_get('openai-prod');
}, extra_params => [ '-U', 'app' ]);
is(new_records(3, 'cache'), join("\n",
	'read secret_get ok app app openai-prod',
	'read secret_get_cached ok app app openai-prod',
	'read secret_get_cached ok app app openai-prod'),
	'a cache hit is recorded, as secret_get_cached');
is($node->safe_psql('postgres', q{
	SELECT count(DISTINCT secret_id) || ' ' || bool_and(secret_id = (SELECT secret_id FROM secretenv.secrets))
	FROM secretenv.audit_log WHERE operation = 'read'}),
	'1 true', 'hits and misses carry the secret id');

# --- every path and role ---
$node->safe_psql('postgres', q{
	SELECT value FROM secretenv.decrypted_secrets WHERE secret_name = 'openai-prod';
	SELECT count(*) FROM secretenv.decrypted_secrets;
}, extra_params => [ '-U', 'app' ]);
is(new_records(1, 'view'), 'read decrypted_secrets ok app app openai-prod',
	'decrypted_secrets is recorded; a count that never decrypts is not');

$node->safe_psql('postgres', q{
	SET ROLE app;
	SELECT secretenv.secret_get('openai-prod');
	RESET ROLE;
	BEGIN; SET LOCAL ROLE app; SELECT value FROM secretenv.decrypted_secrets; COMMIT;
}, extra_params => [ '-U', 'pooler' ]);
is(new_records(2, 'set role'), join("\n",
	'read secret_get ok pooler app openai-prod',
	'read decrypted_secrets ok pooler app openai-prod'),
	'after SET ROLE: session_user is the login, current_user the role');

# A backend keeps the names it recorded, until a role is renamed (by
# another session): the next record of the same session has the new names.
$s = $node->background_psql('postgres', extra_params => [ '-U', 'pooler' ]);
$s->query_safe("SET ROLE app");
$s->query_safe("SELECT length(secretenv.secret_get('openai-prod'))");
$node->safe_psql('postgres',
	'ALTER ROLE app RENAME TO app_renamed; ALTER ROLE pooler RENAME TO pooler_renamed');
$s->query_safe("SELECT length(secretenv.secret_get('openai-prod'))");
$node->safe_psql('postgres',
	'ALTER ROLE app_renamed RENAME TO app; ALTER ROLE pooler_renamed RENAME TO pooler');
$s->query_safe("SELECT length(secretenv.secret_get('openai-prod'))");
$s->quit;
# (A hit or a miss: the rename may empty the cache; the names are the point.)
like(new_records(3, 'rename'), qr/\Aread secret_get\S* ok pooler app openai-prod
read secret_get\S* ok pooler_renamed app_renamed openai-prod
read secret_get\S* ok pooler app openai-prod\z/,
	'a role renamed while a session reads: its next record carries the new name');

# A parallel plan: the value is decrypted (and recorded) in the leader.
# The access-rule policies are parallel restricted, so only a role that
# row-level security does not bind gets a parallel scan of the table.
$node->safe_psql('postgres', 'CREATE ROLE bulk LOGIN BYPASSRLS IN ROLE secretenv_reader');
my $parallel = $node->safe_psql('postgres', q{
	SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;
	SET min_parallel_table_scan_size = 0; SET max_parallel_workers_per_gather = 2;
	SET parallel_leader_participation = off;
	EXPLAIN (COSTS OFF) SELECT value FROM secretenv.decrypted_secrets;
	SELECT pg_backend_pid() || ' ' || length(value) FROM secretenv.decrypted_secrets;
}, extra_params => [ '-U', 'bulk' ]);
like($parallel, qr/Gather.*Parallel Seq Scan on secrets/s, 'the view is read by a parallel plan');
my ($leader) = $parallel =~ /^(\d+) \d+$/m;
is(new_records(1, 'parallel'), 'read decrypted_secrets ok bulk bulk openai-prod',
	'a read under a parallel plan is recorded');
is($node->safe_psql('postgres', 'SELECT backend_pid FROM secretenv.audit_log ORDER BY seq DESC LIMIT 1'),
	$leader, 'by the leader, whose client it names');

# --- comments, wrappers, SET cannot suppress a record ---
($ret, $out, $err) = $node->psql('postgres', q{SET secretenv.audit = off},
	extra_params => [ '-U', 'app' ]);
like($err, qr/parameter "secretenv.audit" cannot be changed now/,
	'SET secretenv.audit by a role is refused');
($ret, $out, $err) = $node->psql('postgres', q{SET secretenv.audit_destination = log},
	extra_params => [ '-U', 'app' ]);
like($err, qr/cannot be changed now/, 'SET secretenv.audit_destination is refused');
$node->safe_psql('postgres', q{
	/* secretenv.audit = off */ SELECT public.wrapped_get('openai-prod') -- no audit please
}, extra_params => [ '-U', 'app' ]);
is(new_records(1, 'wrapper'), 'read secret_get ok app app openai-prod',
	'a read through a wrapper, in a commented statement, is recorded');

# --- outcomes ---
$node->psql('postgres', q{SELECT secretenv.secret_get('openai-prod')},
	extra_params => [ '-U', 'outsider' ]);
$node->psql('postgres', q{SELECT secretenv.secret_get('no-such-secret')},
	extra_params => [ '-U', 'app' ]);
$node->safe_psql('postgres', q{
	UPDATE secretenv.secrets
	SET encrypted_value = set_byte(encrypted_value, 20, get_byte(encrypted_value, 20) # 1)});
($ret, $out, $err) = $node->psql('postgres', q{SELECT secretenv.secret_get('openai-prod')},
	extra_params => [ '-U', 'app' ]);
like($err, qr/AAD mismatch or tampered value/, 'a tampered value fails to decrypt');
is(new_records(4, 'outcomes'), join("\n",
	'read secret_get denied outsider outsider openai-prod',
	'read secret_get not_found app app no-such-secret',
	'update table ok postgres postgres openai-prod',
	'read secret_get failed app app openai-prod'),
	'denied, not_found, a direct update and failed are recorded');

# --- writes ---
$node->safe_psql('postgres', q{
	SELECT secretenv.secret_update('openai-prod', 'sk-live-audit-rotated-0123456789');
	SELECT secretenv.secret_rotate_all();
	SELECT secretenv.secret_delete('openai-prod');
});
is(new_records(2, 'writes'), join("\n",
	'update table ok postgres postgres openai-prod',
	'delete table ok postgres postgres openai-prod'),
	'update and delete are recorded; a rotation that re-wraps only is not');

# --- audit = writes, then off ---
$node->safe_psql('postgres', q{SELECT secretenv.secret_create('second', 'second-value-0123456789')});
is(new_records(1, 'create 2'), 'create table ok postgres postgres second', 'create');
$node->append_conf('postgresql.conf', "secretenv.audit = writes\n");
$node->reload;
$node->safe_psql('postgres', q{
	SELECT secretenv.secret_get('second');
	SELECT secretenv.secret_update('second', 'second-value-updated-0123456789');
});
is(new_records(1, 'writes only'), 'update table ok postgres postgres second',
	'audit = writes: the write is recorded, the read is not');
$node->append_conf('postgresql.conf', "secretenv.audit = off\n");
$node->reload;
$node->safe_psql('postgres', q{
	SELECT secretenv.secret_get('second');
	SELECT secretenv.secret_update('second', 'second-value-updated-again-0123456789');
});
$node->append_conf('postgresql.conf', "secretenv.audit = reads\n");
$node->reload;
$node->safe_psql('postgres', q{SELECT secretenv.secret_get('second')});
is(new_records(1, 'back on'), 'read secret_get ok postgres postgres second',
	'audit = off recorded nothing; back on, the next read is recorded');

# --- secret_decrypt() of a stored secret's envelope is a read of it ---
my $dec = q{SELECT secretenv.secret_decrypt(encrypted_value, wrapped_dek, kek_version, secret_id, secret_name)
	FROM secretenv.secrets WHERE secret_name = 'second'};
is($node->safe_psql('postgres', $dec, extra_params => [ '-U', 'app' ]),
	'second-value-updated-again-0123456789',
	'a reader decrypts the stored columns with secret_decrypt');
is(new_records(1, 'secret_decrypt'), 'read secret_decrypt ok app app second',
	'secret_decrypt of a stored secret is recorded as a read');
$node->safe_psql('postgres', q{SELECT secretenv.secret_decrypt(
		(encrypted_value, wrapped_dek, kek_version)::secretenv.envelope, secret_id::text, secret_name)
	FROM secretenv.secrets WHERE secret_name = 'second'}, extra_params => [ '-U', 'app' ]);
is(new_records(1, 'secret_decrypt envelope'), 'read secret_decrypt ok app app second',
	'so is the envelope form with the id as text');
($ret, $out, $err) = $node->psql('postgres', q{SELECT secretenv.secret_decrypt(encrypted_value, wrapped_dek,
		kek_version, secret_id, 'second-other') FROM secretenv.secrets WHERE secret_name = 'second'},
	extra_params => [ '-U', 'app' ]);
like($err, qr/ERROR/, 'a stored envelope under another name does not open');
is(new_records(1, 'secret_decrypt failed'), 'read secret_decrypt failed app app second-other',
	'and is recorded as a failed read of that id');
# Application tables built on the primitives are not stored secrets.
$node->safe_psql('postgres', q{
	CREATE TABLE public.app_rows AS
	SELECT id, 'row-' || i AS name, secretenv.secret_encrypt('app-value-' || i, id, 'row-' || i) AS e
	FROM (SELECT gen_random_uuid() AS id, i FROM generate_series(1, 50) i) s;
	GRANT SELECT ON public.app_rows TO app;
});
is($node->safe_psql('postgres', q{SELECT count(secretenv.secret_decrypt(e, id, name)) FROM public.app_rows},
	extra_params => [ '-U', 'app' ]), '50', 'fifty application rows decrypt');
$node->safe_psql('postgres', q{SELECT secretenv.secret_get('second')}, extra_params => [ '-U', 'app' ]);
is(new_records(1, 'after app rows'), 'read secret_get ok app app second',
	'decrypting application rows records nothing');
# A secret created while a session is open: its next decrypt knows it.
my $d = $node->background_psql('postgres', extra_params => [ '-U', 'app' ]);
$d->query_safe($dec);
new_records(1, 'open session decrypt');
$node->safe_psql('postgres', q{SELECT secretenv.secret_create('late', 'late-value-0123456789')});
new_records(1, 'late create');
$d->query_safe(q{SELECT secretenv.secret_decrypt(encrypted_value, wrapped_dek, kek_version, secret_id, secret_name)
	FROM secretenv.secrets WHERE secret_name = 'late'});
$d->quit;
is(new_records(1, 'late decrypt'), 'read secret_decrypt ok app app late',
	'a secret stored after the session began is recognised');
# Under a parallel plan (workers decrypt): application rows still record
# nothing, stored secrets one record each.
my $par = q{SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;
	SET min_parallel_table_scan_size = 0; SET max_parallel_workers_per_gather = 2;
	SET parallel_leader_participation = off;};
$node->safe_psql('postgres', 'GRANT SELECT ON public.app_rows TO bulk');
like($node->safe_psql('postgres', $par . q{
	EXPLAIN (COSTS OFF) SELECT count(secretenv.secret_decrypt(e, id, name)) FROM public.app_rows;
	SELECT count(secretenv.secret_decrypt(e, id, name)) FROM public.app_rows;},
	extra_params => [ '-U', 'bulk' ]), qr/Gather.*\n50$/s,
	'a parallel plan decrypts the fifty application rows');
$node->safe_psql('postgres', $par . q{
	SELECT count(secretenv.secret_decrypt(encrypted_value, wrapped_dek, kek_version, secret_id, secret_name))
	FROM secretenv.secrets}, extra_params => [ '-U', 'bulk' ]);
# openai-prod was deleted above but is kept for its recovery window: its
# envelope is still stored, so decrypting it is a read too.
is(join("\n", sort split /\n/, new_records(3, 'parallel decrypt')), join("\n",
	'read secret_decrypt ok bulk bulk late',
	'read secret_decrypt ok bulk bulk openai-prod',
	'read secret_decrypt ok bulk bulk second'),
	'a parallel decrypt of the stored secrets (a deleted one in its window included) records each, and nothing for the application rows');

# --- writes refused, of a missing secret, or failing: one record each ---
$node->safe_psql('postgres', q{
	CREATE ROLE teamw LOGIN IN ROLE secretenv_writer, secretenv_reader;
	SELECT secretenv.grant_secrets('teamw', 'team/%', 'write');
});
($ret, $out, $err) = $node->psql('postgres', q{SELECT secretenv.secret_create('denied-1', 'v-0123456789')},
	extra_params => [ '-U', 'outsider' ]);
like($err, qr/permission denied for function secret_create/, 'a role without EXECUTE cannot create');
is(new_records(1, 'denied execute'), 'create table denied outsider outsider denied-1',
	'the refused create is recorded as denied, with its name');
$node->safe_psql('postgres', q{SELECT secretenv.secret_create('team/ok', 'v-0123456789')},
	extra_params => [ '-U', 'teamw' ]);
($ret, $out, $err) = $node->psql('postgres', q{SELECT secretenv.secret_create('other/x', 'v-0123456789')},
	extra_params => [ '-U', 'teamw' ]);
like($err, qr/row-level security/, 'an access rule refuses a create outside the pattern');
is(new_records(2, 'denied rule'), join("\n",
	'create table ok teamw teamw team/ok',
	'create table denied teamw teamw other/x'),
	'the create the rule allows is recorded ok, the refused one denied');
($ret, $out, $err) = $node->psql('postgres', q{INSERT INTO secretenv.secrets (secret_id, secret_name,
	encrypted_value, wrapped_dek, kek_version) VALUES (gen_random_uuid(), 'direct', '\x00', '\x00', 1)},
	extra_params => [ '-U', 'app' ]);
like($err, qr/permission denied for table secrets/, 'a reader cannot insert into the table');
is(new_records(1, 'denied insert'), 'create table denied app app',
	'the refused INSERT is recorded as denied (its name is not known before it runs)');
$node->psql('postgres', q{SELECT secretenv.secret_update('no-such-secret', 'v-0123456789')});
is(new_records(1, 'update missing'), 'update table not_found postgres postgres no-such-secret',
	'an update of a missing secret is recorded as not_found');
($ret, $out, $err) = $node->psql('postgres', q{SELECT secretenv.secret_create('team/ok', 'v-0123456789')});
like($err, qr/already exists/, 'a duplicate create fails');
is(new_records(1, 'duplicate'), 'create table failed postgres postgres team/ok',
	'and is recorded as failed');
($ret, $out, $err) = $node->psql('postgres',
	"\\set VERBOSITY verbose\nSELECT secretenv.secret_create('both', 'v-0123456789'), 1 / (random() * 0)::int");
like($err, qr/ERROR:  22012: /, 'a statement fails after its create');
$node->safe_psql('postgres', q{SELECT secretenv.secret_get('second')});
is(new_records(2, 'create then error'), join("\n",
	'create table ok postgres postgres both',
	'read secret_get ok postgres postgres second'),
	'the create it made is recorded once, as ok (its transaction rolled back)');

# --- no value in any record, and the chain verifies ---
is($node->safe_psql('postgres', qq{
	SELECT count(*) FROM secretenv.audit_log a
	WHERE strpos(a::text, 'sk-live') > 0 OR strpos(a::text, 'second-value') > 0
	   OR strpos(a::text, 'value-') > 0}),
	'0', 'no record carries a value');
is($node->safe_psql('postgres', q{SELECT intact, records, first_break FROM secretenv.audit_verify()},
	extra_params => [ '-U', 'auditor' ]),
	"t|$seen|", 'audit_verify(): the chain of every record is intact');
is($node->safe_psql('postgres', q{SELECT string_agg(DISTINCT (client_addr IS NULL AND backend_pid > 0
	AND application_name <> '' AND database_name = 'postgres' AND mac_kek_version = 1
	AND octet_length(mac) = 32 AND event_time <= now())::text, ',') FROM secretenv.audit_log}),
	'true', 'every record has its database, pid, application_name, KEK version and MAC');

# --- the table is admin-only and append-only ---
($ret, $out, $err) = $node->psql('postgres', q{SELECT count(*) FROM secretenv.audit_log},
	extra_params => [ '-U', 'app' ]);
like($err, qr/permission denied for table audit_log/, 'a reader cannot read the log');
($ret, $out, $err) = $node->psql('postgres', q{DELETE FROM secretenv.audit_log},
	extra_params => [ '-U', 'auditor' ]);
like($err, qr/permission denied for table audit_log/, 'an admin cannot delete from it');
for my $stmt ('DELETE FROM secretenv.audit_log', 'UPDATE secretenv.audit_log SET outcome = \'ok\'',
	'TRUNCATE secretenv.audit_log',
	"SET session_replication_role = replica; DELETE FROM secretenv.audit_log")
{
	($ret, $out, $err) = $node->psql('postgres', $stmt);
	like($err, qr/secretenv.audit_log is append-only/, "superuser: $stmt is refused");
}
is($node->safe_psql('postgres', q{SELECT count(*) FROM secretenv.audit_log}), $seen,
	'nothing was removed');

$node->stop;
done_testing();
