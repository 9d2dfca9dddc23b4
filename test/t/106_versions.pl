
# Copyright (c) secretenv contributors
#
# Secret versions and deletion with recovery (DESIGN §8c):
#  - every update keeps the previous value as a version with its own
#    envelope; secret_get(name, version) reads each one byte for byte;
#    secret_versions(name) lists number, state and KEK version, never a
#    value; the history is capped at secretenv.max_versions (oldest
#    destroyed first, 0 keeps none) after a reload;
#  - secret_stage / label => 'pending' / secret_promote / secret_rollback,
#    each change seen at once by another session's credential cache;
#    refusals with their SQLSTATEs (55S05 no pending version, 22023,
#    P0002);
#  - check-and-set: secret_update(..., expected_version => n) refuses with
#    55S03 and changes nothing when the current version is not n;
#  - secret_delete hides (secret_get P0002, masked_secrets, decrypted
#    secrets, secret_versions), re-create refused with 55S04, restore
#    brings back the same bytes and versions; recovery_window => '0' and
#    secret_destroy leave no row (so no wrapped DEK) of the secret in
#    either table, and after VACUUM FULL no page of the two tables holds its
#    wrapped DEKs; purge_deleted() destroys exactly those past the window;
#  - expires_at and labels in masked_secrets, status() counts;
#  - access rules and row-level security hide the versions of a hidden
#    secret; the access audit records stage, promote, rollback, delete,
#    restore and destroy with the version, and reads with the version they
#    returned (table read, cache hit, decrypted_secrets), and the chain
#    verifies;
#  - secret_stage's value is redacted from the server log;
#  - rotation (one-shot and batched) re-wraps every version,
#    secret_reencrypt gives every version a fresh DEK, verify_secrets()
#    names a tampered version, status() counts versions per KEK;
#  - the drop guard refuses while only a deleted secret remains;
#  - a direct DELETE or TRUNCATE of secretenv.secrets deletes the versions.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SecretenvTest;
use Test::More;

my $pass1 = 'versions-test-passphrase-one-0123456789';
my $pass2 = 'versions-test-passphrase-two-9876543210';
my $node = new_secretenv_node('versions',
	conf => kek_settings($pass1, 1) . "log_statement = 'all'\n");
$node->start;

$node->safe_psql('postgres', q{
CREATE EXTENSION secretenv;
CREATE ROLE app LOGIN IN ROLE secretenv_reader, secretenv_writer;
CREATE ROLE tenant LOGIN IN ROLE secretenv_reader, secretenv_writer;
CREATE ROLE ops LOGIN IN ROLE secretenv_admin;
CREATE ROLE watcher LOGIN IN ROLE secretenv_reader, secretenv_admin;
GRANT USAGE ON SCHEMA public TO app, tenant, ops;
-- 'OK:' || result, or 'ERR:' || SQLSTATE
CREATE FUNCTION public.try(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE r text;
BEGIN
	EXECUTE q INTO r;
	RETURN 'OK:' || COALESCE(r, '<null>');
EXCEPTION WHEN OTHERS THEN
	RETURN 'ERR:' || SQLSTATE;
END $$;
GRANT EXECUTE ON FUNCTION public.try(text) TO PUBLIC;
});

sub q_app { return $node->safe_psql('postgres', $_[0], extra_params => [ '-U', $_[1] // 'app' ]); }
sub q_su { return $node->safe_psql('postgres', $_[0]); }
sub try_as
{
	my ($role, $sql) = @_;
	return q_app("SELECT public.try(" . sql_string($sql) . ")", $role);
}

# --- history, reads by version, secret_versions, the cap ---
q_app(q{SELECT secretenv.secret_create('stripe', 'sk_live_v1_aaaaaaaaaaaa')});
q_app(qq{SELECT secretenv.secret_update('stripe', 'sk_live_v${_}_aaaaaaaaaaaa')}) for 2 .. 4;
is(q_app(q{SELECT secretenv.secret_get('stripe')}), 'sk_live_v4_aaaaaaaaaaaa', 'secret_get returns the newest value');
is(q_app(q{SELECT string_agg(encode(convert_to(secretenv.secret_get('stripe', v), 'UTF8'), 'hex'), ',' ORDER BY v) FROM generate_series(1, 4) v}),
	join(',', map { unpack('H*', "sk_live_v${_}_aaaaaaaaaaaa") } 1 .. 4),
	'secret_get(name, version) returns the bytes of each of the four versions');
is(q_app(q{SELECT string_agg(concat_ws(':', version, state, kek_version, created_by), ' ' ORDER BY version) FROM secretenv.secret_versions('stripe')}),
	'1:deprecated:1:app 2:deprecated:1:app 3:previous:1:app 4:current:1:app',
	'secret_versions lists number, state, KEK version and author');
is(q_app(q{SELECT count(*) FROM pg_catalog.pg_get_function_result('secretenv.secret_versions(text)'::regprocedure) r WHERE r ~ 'value|encrypted|wrapped'}),
	'0', 'secret_versions returns no value nor envelope column');
is(q_su(q{SELECT count(DISTINCT wrapped_dek) FROM (SELECT wrapped_dek FROM secretenv.secret_versions UNION ALL SELECT wrapped_dek FROM secretenv.secrets) e}),
	'4', 'each version has an envelope of its own (four distinct wrapped DEKs)');
is(q_app(q{SELECT secretenv.secret_get('stripe', label => 'previous')}), 'sk_live_v3_aaaaaaaaaaaa',
	"label => 'previous' reads the version before the current one");
is(try_as('app', q{SELECT secretenv.secret_get('stripe', 9)}), 'ERR:P0002', 'a version that never existed: P0002');
is(try_as('app', q{SELECT secretenv.secret_get('stripe', 0)}), 'ERR:22023', 'version 0: 22023');
is(try_as('app', q{SELECT secretenv.secret_get('stripe', label => 'latest')}), 'ERR:22023', 'an unknown label: 22023');

$node->append_conf('postgresql.conf', "secretenv.max_versions = 2\n");
$node->reload;
$node->poll_query_until('postgres', 'SELECT secretenv.max_versions() = 2') or die;
q_app(q{SELECT secretenv.secret_update('stripe', 'sk_live_v5_aaaaaaaaaaaa')});
is(q_su(q{SELECT string_agg(version::text || state, ',' ORDER BY version) FROM secretenv.secret_versions}),
	'3deprecated,4previous', 'with max_versions = 2 two versions are kept, the oldest destroyed first');
is(try_as('app', q{SELECT secretenv.secret_get('stripe', 1)}), 'ERR:P0002', 'a destroyed version reads as absent');
$node->append_conf('postgresql.conf', "secretenv.max_versions = 0\n");
$node->reload;
$node->poll_query_until('postgres', 'SELECT secretenv.max_versions() = 0') or die;
q_app(q{SELECT secretenv.secret_update('stripe', 'sk_live_v6_aaaaaaaaaaaa')});
is(q_su(q{SELECT count(*) FROM secretenv.secret_versions}), '0', 'max_versions = 0 keeps no version (1.1 overwrite)');
is(q_app(q{SELECT secretenv.secret_get('stripe') || ' ' || (SELECT version FROM secretenv.secret_versions('stripe'))}),
	'sk_live_v6_aaaaaaaaaaaa 6', 'the version number still advances');
$node->append_conf('postgresql.conf', "secretenv.max_versions = 10\n");
$node->reload;
$node->poll_query_until('postgres', 'SELECT secretenv.max_versions() = 10') or die;

# --- staging, promote, rollback, seen by another session's cache ---
my $reader = $node->background_psql('postgres', on_error_stop => 0, extra_params => [ '-U', 'watcher' ]);
is(session_query($reader, q{SELECT secretenv.secret_get('stripe'); SELECT secretenv.secret_get('stripe')}),
	"sk_live_v6_aaaaaaaaaaaa\nsk_live_v6_aaaaaaaaaaaa", 'reader reads the current value twice');
is(session_query($reader, q{SELECT (secretenv.cache_stats()->>'hits')::int}), '1', 'the second read was a cache hit');
is(q_app(q{SELECT secretenv.secret_stage('stripe', 'sk_live_v7_pending_bbbbbbbb')}), '7', 'secret_stage returns the new version number');
is(session_query($reader, q{SELECT secretenv.secret_get('stripe')}), 'sk_live_v6_aaaaaaaaaaaa', 'plain secret_get does not return the pending version');
is(session_query($reader, q{SELECT secretenv.secret_get('stripe', label => 'pending')}), 'sk_live_v7_pending_bbbbbbbb',
	"label => 'pending' returns it");
is(q_app(q{SELECT secretenv.secret_stage('stripe', 'sk_live_v8_pending_cccccccc')}), '8', 'a second stage replaces the pending version');
is(q_su(q{SELECT string_agg(version::text, ',') FROM secretenv.secret_versions WHERE state = 'pending'}), '8', 'one pending version remains');
is(q_app(q{SELECT secretenv.secret_promote('stripe')}), '8', 'secret_promote returns the version made current');
is(session_query($reader, q{SELECT secretenv.secret_get('stripe')}), 'sk_live_v8_pending_cccccccc',
	'the other session sees the promoted value at once (cache invalidated)');
is(q_app(q{SELECT string_agg(version || ':' || state, ' ' ORDER BY version DESC) FROM secretenv.secret_versions('stripe')}),
	'8:current 6:previous', 'the old current becomes previous');
is(try_as('app', q{SELECT secretenv.secret_promote('stripe')}), 'ERR:55S05', 'promote without a pending version: 55S05');
is(try_as('app', q{SELECT secretenv.secret_get('stripe', label => 'pending')}), 'ERR:P0002', 'no pending version to read: P0002');
q_app(q{SELECT secretenv.secret_rollback('stripe', 6)});
is(session_query($reader, q{SELECT secretenv.secret_get('stripe')}), 'sk_live_v6_aaaaaaaaaaaa',
	'after secret_rollback the other session reads the old value at once');
is(q_app(q{SELECT string_agg(version || ':' || state, ' ' ORDER BY version DESC) FROM secretenv.secret_versions('stripe')}),
	'8:previous 6:current', 'rollback: 6 current, 8 previous');
is(try_as('app', q{SELECT secretenv.secret_rollback('stripe', 6)}), 'ERR:22023', 'rollback to the current version: 22023');
is(try_as('app', q{SELECT secretenv.secret_rollback('stripe', 2)}), 'ERR:P0002', 'rollback to a version not kept: P0002');
q_app(q{SELECT secretenv.secret_stage('stripe', 'sk_live_v9_pending_dddddddd')});
is(try_as('app', q{SELECT secretenv.secret_rollback('stripe', 9)}), 'ERR:22023', 'rollback to the pending version: 22023');
q_app(q{SELECT secretenv.secret_rollback('stripe', 8)});
is(q_app(q{SELECT secretenv.secret_get('stripe') || ' ' || secretenv.secret_get('stripe', label => 'pending')}),
	'sk_live_v8_pending_cccccccc sk_live_v9_pending_dddddddd', 'a rollback leaves the pending version pending');

# --- check-and-set ---
my ($out, $err) = run_sql($node, 'postgres',
	q{SELECT secretenv.secret_update('stripe', 'sk_live_cas_eeeeeeeeeeee', expected_version => 6)},
	extra_params => [ '-U', 'app', '-v', 'VERBOSITY=verbose' ]);
like($err, qr/ERROR:  55S03: secret "stripe" is at version 8, not 6/, 'check-and-set conflict: 55S03 names both versions');
is(q_app(q{SELECT secretenv.secret_get('stripe')}), 'sk_live_v8_pending_cccccccc', 'the conflicting update changed nothing');
q_app(q{SELECT secretenv.secret_update('stripe', 'sk_live_cas_eeeeeeeeeeee', expected_version => 8)});
is(q_app(q{SELECT secretenv.secret_get('stripe') || ' ' || (SELECT max(version) FROM secretenv.secret_versions('stripe') WHERE state = 'current')}),
	'sk_live_cas_eeeeeeeeeeee 10', 'with the right expected version the update succeeds (version 10)');

# --- deletion with recovery, restore, destroy, purge ---
my $versions_before = q_su(q{SELECT string_agg(version || state || encode(wrapped_dek, 'hex'), ',' ORDER BY version) FROM secretenv.secret_versions});
my $row_before = q_su(q{SELECT encode(encrypted_value, 'hex') || encode(wrapped_dek, 'hex') FROM secretenv.secrets WHERE secret_name = 'stripe'});
is(q_app(q{SELECT secretenv.secret_delete('stripe')}), 't', 'secret_delete returns true');
is(try_as('app', q{SELECT secretenv.secret_get('stripe')}), 'ERR:P0002', 'a deleted secret reads as absent');
is(try_as('app', q{SELECT secretenv.secret_get('stripe', 8)}), 'ERR:P0002', 'so do its versions');
is(q_app(q{SELECT count(*) FROM secretenv.masked_secrets WHERE secret_name = 'stripe'}) . q_app(q{SELECT count(*) FROM secretenv.decrypted_secrets WHERE secret_name = 'stripe'})
	. q_app(q{SELECT count(*) FROM secretenv.secret_versions('stripe')}), '000', 'masked_secrets, decrypted_secrets and secret_versions hide it');
is(q_app(q{SELECT destroy_after - deleted_at FROM secretenv.deleted_secrets WHERE secret_name = 'stripe'}), '7 days',
	'deleted_secrets shows it, destroyed after the default window of 7 days');
($out, $err) = run_sql($node, 'postgres', q{SELECT secretenv.secret_create('stripe', 'sk_new_ffffffffffff')},
	extra_params => [ '-U', 'app', '-v', 'VERBOSITY=verbose' ]);
like($err, qr/ERROR:  55S04: secret "stripe" is deleted but not destroyed/, 're-creating a deleted name: 55S04');
is(q_app(q{SELECT secretenv.secret_delete('stripe')}), 'f', 'deleting it again returns false');
is(q_app(q{SELECT secretenv.secret_restore('stripe')}), 't', 'secret_restore returns true');
is(q_app(q{SELECT secretenv.secret_get('stripe')}), 'sk_live_cas_eeeeeeeeeeee', 'restored: the same value');
is(q_su(q{SELECT encode(encrypted_value, 'hex') || encode(wrapped_dek, 'hex') FROM secretenv.secrets WHERE secret_name = 'stripe'}),
	$row_before, 'restored: the same envelope bytes');
is(q_su(q{SELECT string_agg(version || state || encode(wrapped_dek, 'hex'), ',' ORDER BY version) FROM secretenv.secret_versions}),
	$versions_before, 'restored: the same versions');
is(q_app(q{SELECT secretenv.secret_restore('stripe')}), 'f', 'restoring a live secret returns false');

my $id = q_su(q{SELECT secret_id FROM secretenv.secrets WHERE secret_name = 'stripe'});
my @deks = split /\n/, q_su(qq{SELECT encode(wrapped_dek, 'hex') FROM secretenv.secrets WHERE secret_id = '$id'
	UNION ALL SELECT encode(wrapped_dek, 'hex') FROM secretenv.secret_versions WHERE secret_id = '$id'});
is(scalar(@deks), 4, 'four envelopes of the secret before destroy');
q_app(q{SELECT secretenv.secret_create('bystander', 'bystander-value-0123')});
my $bystander = q_su(q{SELECT encode(wrapped_dek, 'hex') FROM secretenv.secrets WHERE secret_name = 'bystander'});
is(try_as('app', q{SELECT secretenv.secret_destroy('stripe')}), 'ERR:42501', 'secret_destroy is for secretenv_admin only');
q_app(q{SELECT secretenv.secret_delete('stripe')});
is(q_app(q{SELECT secretenv.secret_destroy('stripe')}, 'ops'), 't', 'secretenv_admin destroys a deleted secret');
is(q_su(qq{SELECT (SELECT count(*) FROM secretenv.secrets WHERE secret_id = '$id') + (SELECT count(*) FROM secretenv.secret_versions WHERE secret_id = '$id')}),
	'0', 'no row of the destroyed secret remains in either table');
is(try_as('app', q{SELECT secretenv.secret_get('stripe', 10)}), 'ERR:P0002', 'every version of it is unreadable');
# VACUUM FULL copies the tuples some snapshot may still see: wait for none.
$node->poll_query_until('postgres', q{SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_xmin IS NOT NULL AND pid <> pg_backend_pid()})
  or diag(q_su(q{SELECT string_agg(concat_ws(' ', pid, backend_type, state, backend_xmin, query), E'\n') FROM pg_stat_activity WHERE backend_xmin IS NOT NULL}));
q_su('VACUUM FULL secretenv.secrets, secretenv.secret_versions');
q_su('CHECKPOINT');
my $files = q_su(q{SELECT string_agg(pg_relation_filepath(c), ' ') FROM unnest(ARRAY['secretenv.secrets'::regclass, 'secretenv.secret_versions'::regclass]) c});
my $pages = '';
for my $f (split / /, $files)
{
	$pages .= slurp_file($node->data_dir . "/$f") if -e $node->data_dir . "/$f";
}
ok(index($pages, pack('H*', $bystander)) >= 0, "the table's pages hold a live secret's wrapped DEK (the search works)");
ok(!grep({ index($pages, pack('H*', $_)) >= 0 } @deks),
	'after VACUUM FULL no page of the two tables holds any of its wrapped DEKs');
is(q_app(q{SELECT secretenv.secret_create('stripe', 'sk_new_ffffffffffff') IS NOT NULL}), 't', 'the name can be created again once destroyed');
is(q_app(q{SELECT string_agg(version || state, ',') FROM secretenv.secret_versions('stripe')}), '1current', 'the new secret starts at version 1');

q_app(q{SELECT secretenv.secret_create('tmp-now', 'tmp-now-value-123')});
q_app(q{SELECT secretenv.secret_update('tmp-now', 'tmp-now-value-456')});
is(q_app(q{SELECT secretenv.secret_delete('tmp-now', recovery_window => '0')}), 't', "secret_delete(name, recovery_window => '0') returns true");
is(q_su(q{SELECT (SELECT count(*) FROM secretenv.secrets WHERE secret_name = 'tmp-now') + (SELECT count(*) FROM secretenv.secret_versions WHERE secret_name = 'tmp-now')}),
	'0', '... and destroys the secret and its versions at once');
is(try_as('app', q{SELECT secretenv.secret_delete('stripe', recovery_window => '-1 day')}), 'ERR:22023', 'a negative window: 22023');

q_app(q{SELECT secretenv.secret_create('short-window', 'short-window-value-1'); SELECT secretenv.secret_create('long-window', 'long-window-value-1')});
q_app(q{SELECT secretenv.secret_delete('short-window', recovery_window => '1 second'); SELECT secretenv.secret_delete('long-window')});
sleep(2);
my ($ret, $stdout, $stderr) = $node->psql('postgres', 'CALL secretenv.purge_deleted()', extra_params => [ '-U', 'ops' ]);
like($stderr, qr/destroyed 1 deleted secrets past their recovery window/, 'purge_deleted destroys one secret and says so');
is(q_su(q{SELECT string_agg(secret_name, ',') FROM secretenv.secrets WHERE secret_name LIKE '%-window'}), 'long-window',
	'the one within its window remains');
is(try_as('app', q{CALL secretenv.purge_deleted()}), 'ERR:42501', 'purge_deleted is for secretenv_admin only');

# --- expires_at, labels, status() ---
q_app(q{SELECT secretenv.secret_create('exp-past', 'expired-value-123', expires_at => now() - interval '1 day', labels => '{"team": "pay"}')});
q_app(q{SELECT secretenv.secret_create('exp-soon', 'expiring-value-123', expires_at => now() + interval '10 days')});
q_app(q{SELECT secretenv.secret_create('exp-later', 'later-value-123', expires_at => now() + interval '90 days')});
is(q_app(q{SELECT labels::text || ' ' || (expires_at < now()) FROM secretenv.masked_secrets WHERE secret_name = 'exp-past'}),
	'{"team": "pay"} true', 'masked_secrets shows labels and expires_at');
q_app(q{SELECT secretenv.secret_update('exp-soon', 'expiring-value-456', labels => '{"rotated": true}')});
is(q_app(q{SELECT labels::text || ' ' || (expires_at > now()) FROM secretenv.masked_secrets WHERE secret_name = 'exp-soon'}),
	'{"rotated": true} true', 'secret_update sets labels and keeps expires_at');
is(q_app(q{SELECT (s->>'expired_secrets') || ' ' || (s->>'expiring_within_30_days') || ' ' || (s->>'deleted_secrets') FROM secretenv.status() s}, 'ops'),
	'1 1 1', 'status() counts expired, expiring within 30 days and deleted secrets');
is(try_as('app', q{SELECT secretenv.secret_create('bad-labels', 'bad-labels-value', labels => '[1]')}), 'ERR:22023', 'labels must be an object: 22023');

# --- access rules and row-level security hide versions ---
q_app(q{SELECT secretenv.secret_create('tenant-a-key', 'tenant-a-value-1'); SELECT secretenv.secret_update('tenant-a-key', 'tenant-a-value-2')});
q_su(q{SELECT secretenv.grant_secrets('tenant', 'tenant-b-%', 'write')});
is(try_as('tenant', q{SELECT secretenv.secret_get('tenant-a-key', 1)}), 'ERR:P0002', 'a role whose rules hide a secret cannot read its versions');
is(q_app(q{SELECT count(*) FROM secretenv.secret_versions WHERE secret_name = 'tenant-a-key'}, 'tenant'), '0',
	'nor select them from secretenv.secret_versions');
is(q_app(q{SELECT count(*) FROM secretenv.secret_versions WHERE secret_name = 'tenant-a-key'}, 'app'), '1', 'a role without rules sees the kept version');
is(try_as('tenant', q{SELECT secretenv.secret_stage('tenant-a-key', 'tenant-a-staged')}), 'ERR:P0002', 'nor stage a version of it');

# --- the access audit ---
$node->poll_query_until('postgres', q{SELECT secretenv.audit_stats()->>'queued' = (secretenv.audit_stats()->>'written')}) ;
my $audit = sub {
	my ($name) = @_;
	$node->poll_query_until('postgres', "SELECT (SELECT count(*) FROM secretenv.audit_log WHERE secret_name = '$name') >= $_[1]") or die "audit of $name";
	return q_su(qq{SELECT string_agg(operation || ':' || COALESCE(version::text, '-'), ' ' ORDER BY seq) FROM secretenv.audit_log WHERE secret_name = '$name' AND operation <> 'read'});
};
q_app(q{SELECT secretenv.secret_create('audited', 'audited-value-1');
	SELECT secretenv.secret_update('audited', 'audited-value-2');
	SELECT secretenv.secret_stage('audited', 'audited-value-3');
	SELECT secretenv.secret_promote('audited');
	SELECT secretenv.secret_rollback('audited', 2);
	SELECT secretenv.secret_delete('audited');
	SELECT secretenv.secret_restore('audited');
	SELECT secretenv.secret_get('audited', 3);});
q_app(q{SELECT secretenv.secret_destroy('audited')}, 'ops');
is($audit->('audited', 9), 'create:1 update:2 stage:3 promote:3 rollback:2 delete:2 restore:2 destroy:2',
	'the audit records create, update, stage, promote, rollback, delete, restore and destroy, each with its version');
is(q_su(q{SELECT operation || ':' || version FROM secretenv.audit_log WHERE secret_name = 'audited' AND operation = 'read'}), 'read:3',
	'a read of a version is recorded with that version');
# A cache hit and a decrypted_secrets read name the version they returned,
# also right after an update (the cache entry filled after it, not before).
my $reads = sub {
	$node->poll_query_until('postgres', "SELECT (SELECT count(*) FROM secretenv.audit_log WHERE secret_name = 'audited-read' AND operation = 'read') >= $_[0]") or die "audit of reads";
	return q_su(q{SELECT string_agg(via || ':' || COALESCE(version::text, '-'), ' ' ORDER BY seq) FROM secretenv.audit_log WHERE secret_name = 'audited-read' AND operation = 'read'});
};
q_app(q{SELECT secretenv.secret_create('audited-read', 'read-value-1');
	SELECT secretenv.secret_update('audited-read', 'read-value-2');});
is(q_app(q{SELECT secretenv.secret_get('audited-read');
	SELECT secretenv.secret_get('audited-read');
	SELECT secretenv.secret_update('audited-read', 'read-value-3');
	SELECT secretenv.secret_get('audited-read');
	SELECT secretenv.secret_get('audited-read');
	SELECT value FROM secretenv.decrypted_secrets WHERE secret_name = 'audited-read'}),
	"read-value-2\nread-value-2\n\nread-value-3\nread-value-3\nread-value-3", 'the reads return versions 2 and 3');
is($reads->(5), 'secret_get:2 secret_get_cached:2 secret_get:3 secret_get_cached:3 decrypted_secrets:3',
	'a cache hit and a decrypted_secrets read are recorded with the version they returned');
is(q_su(q{SELECT intact FROM secretenv.audit_verify()}), 't', 'the audit chain verifies');

# --- redaction of secret_stage ---
my $log_before = -s $node->logfile;
q_app(q{SELECT secretenv.secret_stage('exp-later', 'staged-plaintext-must-not-be-logged')});
q_app(q{SELECT secretenv.secret_update('exp-later', 'updated-plaintext-must-not-be-logged', expected_version => 1)});
my $log = substr(slurp_file($node->logfile), $log_before);
like($log, qr/secret_stage/, 'the secret_stage statement is logged');
unlike($log, qr/must-not-be-logged/, 'its plaintext (and that of a check-and-set update) is not');

# --- rotation, re-encryption, verify over every version ---
q_su(q{DELETE FROM secretenv.access_grants});
is(q_su(q{SELECT count(*) FROM secretenv.secret_versions}) > 0 ? 'yes' : 'no', 'yes', 'versions exist before the rotation');
configure_rotation_keys($node, $pass2, $pass1) or die;
my $expected_all = q_su(q{SELECT count(*) FROM secretenv.secrets}) + q_su(q{SELECT count(*) FROM secretenv.secret_versions});
is(q_app(q{SELECT secretenv.secret_rotate_all()}, 'ops'), $expected_all, 'secret_rotate_all re-wraps every secret and every kept version');
is(q_su(q{SELECT count(*) FROM secretenv.secret_versions WHERE kek_version <> 2}), '0', 'no version remains on KEK 1');
is(q_app(q{SELECT secretenv.secret_get('tenant-a-key', 1) || secretenv.secret_get('exp-later', label => 'pending')}),
	'tenant-a-value-1staged-plaintext-must-not-be-logged', 'rotated versions read back');
# Batched: back to version 1 as current (3 with 2 as previous).
$node->append_conf('postgresql.conf', kek_settings($pass1, 3, $pass2, 2));
$node->reload;
$node->poll_query_until('postgres', 'SELECT secretenv.current_kek_version() = 3') or die;
($ret, $stdout, $stderr) = $node->psql('postgres', 'CALL secretenv.secret_rotate(2)', extra_params => [ '-U', 'ops' ]);
like($stderr, qr/finished: \d+ versions re-wrapped/, 'secret_rotate also re-wraps the versions, in batches');
is(q_su(q{SELECT count(*) FROM (SELECT kek_version FROM secretenv.secrets UNION ALL SELECT kek_version FROM secretenv.secret_versions) e WHERE kek_version <> 3}),
	'0', 'after secret_rotate every version is on KEK 3');
is(q_app(q{SELECT (v->>'rows')::int FROM secretenv.status() s, jsonb_array_elements(s->'versions') v WHERE (v->>'kek_version')::int = 3}, 'ops'),
	$expected_all, 'status() counts the kept versions per KEK version');

my $before = q_su(q{SELECT string_agg(version || encode(wrapped_dek, 'hex') || encode(encrypted_value, 'hex'), ',' ORDER BY secret_name, version) FROM secretenv.secret_versions});
q_app(q{CALL secretenv.secret_reencrypt(now())}, 'ops');
is(q_su(qq{SELECT count(*) FROM secretenv.secret_versions v WHERE strpos('$before', encode(v.wrapped_dek, 'hex')) > 0 OR strpos('$before', encode(v.encrypted_value, 'hex')) > 0}),
	'0', 'secret_reencrypt gives every version a fresh DEK and ciphertext');
is(q_app(q{SELECT secretenv.secret_get('tenant-a-key', 1)}), 'tenant-a-value-1', 'a re-encrypted version reads back');
is(q_app(q{SELECT count(*) FROM secretenv.verify_secrets()}, 'ops'), '0', 'verify_secrets finds nothing wrong');
q_su(q{UPDATE secretenv.secret_versions SET encrypted_value = set_byte(encrypted_value, 20, get_byte(encrypted_value, 20) # 1) WHERE secret_name = 'tenant-a-key' AND version = 1});
is(q_app(q{SELECT secret_name || ' ' || version || ' ' || failed_check FROM secretenv.verify_secrets()}, 'ops'),
	'tenant-a-key 1 AAD mismatch or tampered value', 'verify_secrets names a tampered kept version');

# --- the drop guard counts a deleted secret ---
q_su(q{DELETE FROM secretenv.secrets WHERE secret_name <> 'long-window'});
($ret, $stdout, $stderr) = $node->psql('postgres', 'DROP EXTENSION secretenv CASCADE');
like($stderr, qr/cannot drop secretenv while secretenv.secrets holds secrets/, 'the drop guard refuses while a deleted secret is not destroyed');

# --- a direct DELETE or TRUNCATE of secretenv.secrets takes the versions along ---
is(q_su(q{SELECT count(*) FROM secretenv.secret_versions WHERE secret_name <> 'long-window'}), '0',
	'a direct DELETE of secrets deletes their versions too');
q_app(q{SELECT secretenv.secret_create('truncated', 'truncated-1'); SELECT secretenv.secret_update('truncated', 'truncated-2')});
is(q_su(q{SELECT count(*) > 0 FROM secretenv.secret_versions WHERE secret_name = 'truncated'}), 't', 'a version is kept before the TRUNCATE');
q_su(q{TRUNCATE secretenv.secrets});
is(q_su(q{SELECT (SELECT count(*) FROM secretenv.secrets) + (SELECT count(*) FROM secretenv.secret_versions)}), '0',
	'TRUNCATE secretenv.secrets (no CASCADE) empties secretenv.secret_versions too');

$reader->quit;
$node->stop;
done_testing();
