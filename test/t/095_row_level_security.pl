
# Copyright (c) secretenv contributors
#
# Row-level security on secretenv.secrets is honoured on every path (issue
# 16, DESIGN §7f).  Two application roles, app_a and app_b, each a reader
# and a writer, and the policies a DBA would write: each sees the secrets
# whose names start with its own prefix.  Each reads, updates and deletes
# only its own secrets through secret_get, secret_decrypt over the table,
# decrypted_secrets, masked_secrets, secret_update, secret_delete and
# secret_create (the INSERT policy's WITH CHECK); a hidden secret fails
# exactly like an absent one (P0002, same message), so a read reveals
# nothing about whether it exists.  Direct writes of envelopes that do not
# open are refused.  The admin's secret_rotate_all() still rotates every
# row although the admin's own policies show it none.  One connection that
# switches roles (SET ROLE, SET SESSION AUTHORIZATION) never returns the
# other role's value: with the credential cache off (the table paths), and
# with it on (entries keyed by role, every hit re-checked).
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SecretenvTest;
use Test::More;

my $old_passphrase = 'rls-test-passphrase-version-1-0123456789';
my $new_passphrase = 'rls-test-passphrase-version-2-9876543210';

my $node = new_secretenv_node('rls',
	conf => "secretenv.kek_passphrase = '$old_passphrase'\nsecretenv.kek_version = 1\n");
$node->start;

my %value = (
	'app_a/db'  => 'value-of-app-a-db-0123456789',
	'app_a/api' => 'value-of-app-a-api-0123456789',
	'app_b/db'  => 'value-of-app-b-db-0123456789',
	'app_b/api' => 'value-of-app-b-api-0123456789');

$node->safe_psql(
	'postgres', qq{
CREATE EXTENSION secretenv;
SELECT secretenv.secret_create('app_a/db', '$value{'app_a/db'}');
SELECT secretenv.secret_create('app_a/api', '$value{'app_a/api'}');
SELECT secretenv.secret_create('app_b/db', '$value{'app_b/db'}');
SELECT secretenv.secret_create('app_b/api', '{"key": "$value{'app_b/api'}"}'::jsonb);
CREATE ROLE ops LOGIN IN ROLE secretenv_admin;
} . two_tenants_sql());
$value{'app_b/api'} = qq({"key": "$value{'app_b/api'}"});

# Run SQL as a login role in a new session; returns (stdout, stderr).
sub as_role
{
	my ($role, $sql) = @_;
	return run_sql($node, 'postgres', $sql, on_error_stop => 0,
		extra_params => [ '-U', $role, '-v', 'VERBOSITY=verbose' ]);
}

my ($out, $err);
my $absent = qq{ERROR:  P0002: secret "<name>" does not exist};
for my $pair ([ 'app_a', 'app_b' ], [ 'app_b', 'app_a' ])
{
	my ($me, $other) = @$pair;

	# secret_get: own secrets, then the other's and an absent one.
	($out, $err) = as_role($me, qq{SELECT secretenv.secret_get('$me/db'); SELECT secretenv.secret_get('$me/api')});
	is($out, "$value{qq{$me/db}}\n$value{qq{$me/api}}", "$me: secret_get returns its own secrets");
	($out, $err) = as_role($me, qq{SELECT secretenv.secret_get('$other/db')});
	is($out, '', "$me: secret_get of $other/db returns nothing");
	is(error_lines($err, "$other/db"), $absent, "$me: secret_get of $other/db fails with P0002 \"does not exist\"");
	my $hidden_err = error_lines($err, "$other/db");
	($out, $err) = as_role($me, qq{SELECT secretenv.secret_get('$other/nonexistent')});
	is(error_lines($err, "$other/nonexistent"), $hidden_err,
		"$me: a hidden secret and an absent one fail with the same error");

	# secret_decrypt over the table, and the two views.
	($out, $err) = as_role($me, q{
SELECT secret_name || '=' || secretenv.secret_decrypt(encrypted_value, wrapped_dek, kek_version, secret_id, secret_name)
FROM secretenv.secrets ORDER BY 1});
	is($out, "$me/api=$value{qq{$me/api}}\n$me/db=$value{qq{$me/db}}",
		"$me: secret_decrypt over secretenv.secrets sees its own rows only");
	($out, $err) = as_role($me, q{SELECT secret_name || '=' || value FROM secretenv.decrypted_secrets ORDER BY 1});
	is($out, "$me/api=$value{qq{$me/api}}\n$me/db=$value{qq{$me/db}}",
		"$me: decrypted_secrets shows its own rows only");
	($out, $err) = as_role($me, q{SELECT secret_name FROM secretenv.masked_secrets ORDER BY 1});
	is($out, "$me/api\n$me/db", "$me: masked_secrets shows its own rows only");

	# secret_update: own secret changes; the other's behaves as absent.
	($out, $err) = as_role($me, qq{SELECT secretenv.secret_update('$me/db', 'updated-by-$me-0123456789')});
	is($err, '', "$me: secret_update of its own secret succeeds");
	$value{"$me/db"} = "updated-by-$me-0123456789";
	($out, $err) = as_role($me, qq{SELECT secretenv.secret_update('$other/db', 'overwritten-by-$me')});
	is(error_lines($err, "$other/db"), $absent, "$me: secret_update of $other/db fails with P0002 \"does not exist\"");
	($out, $err) = as_role($me, qq{SELECT secretenv.secret_update('$other/nonexistent', 'x')});
	is(error_lines($err, "$other/nonexistent"), $absent, "$me: ... the same error as for an absent secret");

	# secret_delete: the other's secret behaves as absent (false).
	($out, $err) = as_role($me, qq{SELECT secretenv.secret_delete('$other/db'); SELECT secretenv.secret_delete('$other/nonexistent')});
	is($out, "f\nf", "$me: secret_delete of $other/db returns false, as for an absent secret");

	# secret_create: the policy's WITH CHECK (here its USING) applies.
	($out, $err) = as_role($me, qq{SELECT secretenv.secret_create('$other/planted', 'planted-by-$me-0123456789') IS NOT NULL});
	like($err, qr/ERROR:  42501: new row violates row-level security policy for table "secrets"/,
		"$me: secret_create of a name outside its prefix fails with 42501");
	($out, $err) = as_role($me, qq{SELECT secretenv.secret_create('$me/temp', 'temporary-$me-0123456789') IS NOT NULL});
	is($out, 't', "$me: secret_create inside its prefix succeeds");
	($out, $err) = as_role($me, qq{SELECT secretenv.secret_get('$me/temp'); SELECT secretenv.secret_delete('$me/temp')});
	is($out, "temporary-$me-0123456789\nt", "$me: ... reads it back and deletes it");

	# Direct writes: the policies apply, and an envelope must open.
	($out, $err) = as_role($me, qq{WITH u AS (UPDATE secretenv.secrets SET masked_value = '"x"' WHERE secret_name = '$other/db' RETURNING 1) SELECT count(*) FROM u});
	is($out, '0', "$me: a direct UPDATE of $other/db changes no row");
	($out, $err) = as_role($me, qq{UPDATE secretenv.secrets SET wrapped_dek = '\\x00'::bytea WHERE secret_name = '$me/db'});
	like($err, qr/ERROR:  22S01: new row of relation "secrets" holds a malformed envelope/,
		"$me: a direct write of a malformed wrapped DEK is refused (22S01)");
	($out, $err) = as_role($me, qq{UPDATE secretenv.secrets SET wrapped_dek = decode(repeat('ab', 60), 'hex') WHERE secret_name = '$me/db'});
	like($err, qr/ERROR:  22S02: new row of relation "secrets" holds an envelope that does not open/,
		"$me: a direct write of a wrapped DEK that does not open is refused (22S02)");
	($out, $err) = as_role($me, qq{UPDATE secretenv.secrets SET kek_version = 7 WHERE secret_name = '$me/db'});
	like($err, qr/ERROR:  22S04: no KEK is configured for version 7/,
		"$me: a direct write of a KEK version without a KEK is refused (22S04)");
	($out, $err) = as_role($me, qq{
INSERT INTO secretenv.secrets (secret_id, secret_name, encrypted_value, wrapped_dek, kek_version)
SELECT '00000000-0000-0000-0000-00000000000a', '$me/direct', e.encrypted_value, e.wrapped_dek, e.kek_version
FROM secretenv.secret_encrypt('direct-$me-0123456789', '00000000-0000-0000-0000-00000000000b'::uuid, '$me/direct') e});
	like($err, qr/ERROR:  22S03: new row of relation "secrets" holds an envelope that does not open: AAD mismatch/,
		"$me: a direct INSERT of an envelope bound to another id is refused (22S03)");
	($out, $err) = as_role($me, qq{
INSERT INTO secretenv.secrets (secret_id, secret_name, encrypted_value, wrapped_dek, kek_version)
SELECT '00000000-0000-0000-0000-00000000000a', '$me/direct', e.encrypted_value, e.wrapped_dek, e.kek_version
FROM secretenv.secret_encrypt('direct-$me-0123456789', '00000000-0000-0000-0000-00000000000a'::uuid, '$me/direct') e;
SELECT secretenv.secret_get('$me/direct');
SELECT secretenv.secret_delete('$me/direct', recovery_window => '0')});
	is($out, "direct-$me-0123456789\nt", "$me: a direct INSERT of an envelope that opens is accepted");
}

# The table's owner (a superuser here) is not checked: a restore must load
# rows whose KEK is not configured yet.
is($node->safe_psql('postgres', q{
BEGIN;
UPDATE secretenv.secrets SET kek_version = 7 WHERE secret_name = 'app_a/db';
SELECT count(*) FROM secretenv.secrets WHERE kek_version = 7;
ROLLBACK;}), '1', 'the owner\'s write of a KEK version without a KEK is not checked');

# Every value as stored, read by the superuser (RLS does not apply to it).
is($node->safe_psql('postgres', q{
SELECT string_agg(secret_name || '=' || value, ',' ORDER BY secret_name) FROM secretenv.decrypted_secrets}),
	join(',', map { "$_=$value{$_}" } sort keys %value),
	'every secret holds its owner\'s last value; nothing was planted, overwritten or deleted');

# A role without any policy sees no row (row-level security denies by
# default), yet the admin's rotation, a SECURITY DEFINER function owned by
# the superuser who installed the extension, rotates every row.
($out, $err) = as_role('ops', q{SELECT count(*) FROM secretenv.masked_secrets});
is($out, '0', 'ops (admin, no policy): masked_secrets shows no row');
ok(configure_rotation_keys($node, $new_passphrase, $old_passphrase), 'KEK version 2 is current');
# The four rows, and the versions their updates kept (and the deleted temp rows, restorable).
my $envelopes = $node->safe_psql('postgres', q{
SELECT (SELECT count(*) FROM secretenv.secrets) + (SELECT count(*) FROM secretenv.secret_versions)});
($out, $err) = as_role('ops', q{SELECT secretenv.secret_rotate_all()});
is($out, $envelopes, 'ops: secret_rotate_all() rotates every row and every kept version');
is($node->safe_psql('postgres', q{SELECT string_agg(DISTINCT kek_version::text, ',') FROM secretenv.secrets}),
	'2', 'every row is on KEK version 2');
($out, $err) = as_role('app_a', q{SELECT secretenv.secret_get('app_a/db')});
is($out, $value{'app_a/db'}, 'app_a: its secret still reads after the rotation');

# One connection, switching roles.  First with the cache off: the table
# paths alone.  Then with the cache on (the default), where app_a's second
# read is a cache hit (checked with cache_stats()) and app_b must still not
# be served that entry.
for my $cache ([ 'cache off', 'SET secretenv.cache_max_entries = 0;', 'f' ],
	[ 'cache on', '', 't' ])
{
	my ($label, $setting, $hit) = @$cache;
	for my $switch ([ 'SET ROLE', 'SET ROLE %s', 'RESET ROLE' ],
		[ 'SET SESSION AUTHORIZATION', 'SET SESSION AUTHORIZATION %s', 'RESET SESSION AUTHORIZATION' ])
	{
		my ($how, $set, $reset) = @$switch;
		my $sql = $setting . sprintf(qq{
$set;
SELECT secretenv.secret_get('app_a/db');
SELECT secretenv.secret_get('app_a/db');
$reset;
SELECT (secretenv.cache_stats()->>'hits')::int > 0;
$set;
SELECT secretenv.secret_get('app_a/db');
}, 'app_a', 'app_b');
		($out, $err) = run_sql($node, 'postgres', $sql, on_error_stop => 0);
		my @rows = split /\n/, $out;
		is(join("\n", @rows[ 0 .. 2 ]), "$value{'app_a/db'}\n$value{'app_a/db'}\n$hit",
			"$label, $how: app_a reads app_a/db twice" . ($hit eq 't' ? ', the second time from the cache' : ''));
				is(scalar(@rows), 3, "$label, $how: then app_b, on the same connection, gets no value for app_a/db");
			is(error_lines($err, 'app_a/db'), $absent, "$label, $how: ... but P0002 \"does not exist\"");
	}
}

# The single policy of docs/access.md keyed on current_user, for roles named like
# their prefix, in place of the two.
$node->safe_psql('postgres', q{
DROP POLICY app_a ON secretenv.secrets;
DROP POLICY app_b ON secretenv.secrets;
CREATE POLICY per_role ON secretenv.secrets TO secretenv_reader, secretenv_writer
	USING (starts_with(secret_name, current_user || '/'));
});
for my $me ('app_a', 'app_b')
{
	($out, $err) = as_role($me, q{SELECT string_agg(secret_name, ',' ORDER BY 1) FROM secretenv.decrypted_secrets});
	is($out, "$me/api,$me/db", "one policy on current_user: $me sees its own secrets only");
}

# pg_dump leaves out the policies and the RLS switch of the extension's
# table (PostgreSQL 15 dumps an extension member's ACL, not its policies):
# the backup runbook (docs/runbooks/backup-restore.md) says to re-apply them after a restore.
my ($dump, $dump_err);
IPC::Run::run([ 'pg_dump', '-d', $node->connstr('postgres') ], '>', \$dump, '2>', \$dump_err);
like($dump, qr/COPY secretenv\.secrets /, 'pg_dump dumps the rows of secretenv.secrets');
unlike($dump, qr/ROW LEVEL SECURITY|CREATE POLICY/,
	'... but not its policies nor ENABLE ROW LEVEL SECURITY (re-applied after a restore, docs/runbooks/backup-restore.md)');

$node->stop;
done_testing();
