
# Copyright (c) secretenv contributors
#
# No privilege escalation through secretenv (issue 11, DESIGN §7a).
#
# An ordinary member of each secretenv role, with CREATE on a schema of its
# own, puts that schema first on its search_path (ahead of pg_catalog) with
# shadowing operators (=, <> for int4, text, bytea and uuid) and functions
# whose bodies record who runs them, with which arguments, and try to make
# the caller a superuser and a member of every secretenv role.  It then
# calls every secretenv function and view it may use, first thing after a
# restart and after a reload with new keys, with and without preload.
#
# The role must never gain anything: not superuser, no new membership, no
# new table privilege; no shadow ever ran as another role; no shadow saw a
# plaintext it could not read itself.  Every function of the schema must be
# covered below, so a new function cannot escape this test.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SecretenvTest;
use Test::More;

my $victim_plaintext = 'victim-plaintext-7Qk2Zr9Lm4Xw';
my $victim_json = 'victim-json-plaintext-3Hd8Ns1Vb6';

# Shadows of operators and functions, created by each attacker in its schema.
sub shadow_sql
{
	my ($atk) = @_;
	my $sql = qq{
CREATE TABLE $atk.spy_log (who name, sess name, fn text, args text);
GRANT INSERT, SELECT ON $atk.spy_log TO PUBLIC;
CREATE FUNCTION $atk.spy(fn text, args text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS \$\$
BEGIN
	INSERT INTO $atk.spy_log VALUES (current_user, session_user, fn, args);
	BEGIN
		EXECUTE pg_catalog.format('ALTER ROLE %I SUPERUSER', session_user);
	EXCEPTION WHEN OTHERS THEN NULL;
	END;
	BEGIN
		EXECUTE pg_catalog.format('GRANT secretenv_reader, secretenv_writer, secretenv_admin TO %I', session_user);
	EXCEPTION WHEN OTHERS THEN NULL;
	END;
END \$\$;
GRANT EXECUTE ON FUNCTION $atk.spy(text, text) TO PUBLIC;
};
	for my $type ('int4', 'text', 'bytea', 'uuid')
	{
		for my $op ([ '=', 'eq' ], [ '<>', 'ne' ])
		{
			my ($sym, $name) = @$op;
			$sql .= qq{
CREATE FUNCTION $atk.${name}_$type(a $type, b $type) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog AS \$\$
BEGIN
	PERFORM $atk.spy('$sym $type', a::text || ' / ' || b::text);
	RETURN a OPERATOR(pg_catalog.$sym) b;
END \$\$;
CREATE OPERATOR $atk.$sym (LEFTARG = $type, RIGHTARG = $type, FUNCTION = $atk.${name}_$type);
};
		}
	}
	# Functions the install script and the C code could call unqualified.
	for my $f (
		[ 'now()',                 'timestamptz', 'pg_catalog.now()' ],
		[ 'gen_random_uuid()',     'uuid',        'pg_catalog.gen_random_uuid()' ],
		[ 'to_jsonb(a text)',      'jsonb',       'pg_catalog.to_jsonb(a)' ],
		[ 'encode(a bytea, b text)', 'text',      'pg_catalog.encode(a, b)' ],
		[ 'decode(a text, b text)', 'bytea',      'pg_catalog.decode(a, b)' ],
		[ 'length(a text)',        'int4',        'pg_catalog.length(a)' ],
		[ 'octet_length(a bytea)', 'int4',        'pg_catalog.octet_length(a)' ],
		[ 'current_setting(a text)', 'text',      'pg_catalog.current_setting(a)' ],
		[ 'lower(a text)',         'text',        'pg_catalog.lower(a)' ],
		[ 'btrim(a text)',         'text',        'pg_catalog.btrim(a)' ],
		[ 'textcat(a text, b text)', 'text',      'pg_catalog.textcat(a, b)' ])
	{
		my ($sig, $ret, $real) = @$f;
		my ($name) = $sig =~ /^(\w+)/;
		$sql .= qq{
CREATE FUNCTION $atk.$sig RETURNS $ret
LANGUAGE plpgsql SET search_path = pg_catalog AS \$\$
BEGIN
	PERFORM $atk.spy('$name', pg_catalog.concat_ws(' / ', VARIADIC ARRAY[\$1::text]));
	RETURN $real;
END \$\$;
};
	}
	return $sql;
}

# Every function of the schema, and how the attacker calls it.  Functions
# that can only run as triggers or are internal to others are listed with
# undef: their privileges are checked instead.
my %calls = (
	'secretenv.secret_get(text)' => "SELECT secretenv.secret_get('victim')",
	'secretenv.secret_decrypt(bytea,bytea,integer,uuid,text)' =>
	  "SELECT secretenv.secret_decrypt(s.encrypted_value, s.wrapped_dek, s.kek_version, s.secret_id, s.secret_name) FROM secretenv.secrets s",
	'secretenv.secret_decrypt(bytea,bytea,integer,text,text)' =>
	  "SELECT secretenv.secret_decrypt(s.encrypted_value, s.wrapped_dek, s.kek_version, s.secret_id::text, s.secret_name) FROM secretenv.secrets s",
	'secretenv.secret_decrypt(secretenv.envelope,uuid,text)' =>
	  "SELECT secretenv.secret_decrypt(ROW(s.encrypted_value, s.wrapped_dek, s.kek_version)::secretenv.envelope, s.secret_id, s.secret_name) FROM secretenv.secrets s",
	'secretenv.secret_decrypt(secretenv.envelope,text,text)' =>
	  "SELECT secretenv.secret_decrypt(ROW(s.encrypted_value, s.wrapped_dek, s.kek_version)::secretenv.envelope, s.secret_id::text, s.secret_name) FROM secretenv.secrets s",
	'secretenv.secret_encrypt(text,uuid,text)' =>
	  "SELECT secretenv.secret_encrypt('atk-value', '00000000-0000-0000-0000-000000000001'::uuid, 'atk')",
	'secretenv.secret_encrypt(text,text,text)' => "SELECT secretenv.secret_encrypt('atk-value', 'atk-id', 'atk')",
	'secretenv.secret_encrypt(jsonb,uuid,text)' =>
	  "SELECT secretenv.secret_encrypt('{\"k\": \"atk\"}'::jsonb, '00000000-0000-0000-0000-000000000001'::uuid, 'atk')",
	'secretenv.secret_encrypt(jsonb,text,text)' =>
	  "SELECT secretenv.secret_encrypt('{\"k\": \"atk\"}'::jsonb, 'atk-id', 'atk')",
	'secretenv.secret_create(text,text,text,text,timestamp with time zone,jsonb)' =>
	  "SELECT secretenv.secret_create('atk-text-' || session_user, 'atk-value-123456789', 'p', 'd')",
	'secretenv.secret_create(text,jsonb,text,text,timestamp with time zone,jsonb)' =>
	  "SELECT secretenv.secret_create('atk-json-' || session_user, '{\"k\": \"atk-value\"}'::jsonb)",
	'secretenv.secret_update(text,text,integer,timestamp with time zone,jsonb)' => "SELECT secretenv.secret_update('atk-text-' || session_user, 'overwritten-by-attacker')",
	'secretenv.secret_update(text,jsonb,integer,timestamp with time zone,jsonb)' =>
	  "SELECT secretenv.secret_update('atk-json-' || session_user, '{\"k\": \"overwritten\"}'::jsonb)",
	'secretenv.secret_delete(text,interval)' => "SELECT secretenv.secret_delete('no-such-secret')",
	'secretenv.secret_rewrap(bytea,integer)' =>
	  "SELECT secretenv.secret_rewrap(s.wrapped_dek, s.kek_version) FROM secretenv.secrets s",
	'secretenv.secret_rotate_all()' => 'SELECT secretenv.secret_rotate_all()',
	'secretenv.verify_secrets()' => 'SELECT * FROM secretenv.verify_secrets()',
	'secretenv.status()' => 'SELECT secretenv.status()',
	'secretenv.key_config()' => 'SELECT secretenv.key_config()',
	'secretenv.key_inventory()' => 'SELECT * FROM secretenv.key_inventory()',
	'secretenv.kek_is_configured(integer)' => 'SELECT secretenv.kek_is_configured(1)',
	'secretenv.kek_opens(bytea,integer)' =>
	  'SELECT secretenv.kek_opens(s.wrapped_dek, s.kek_version) FROM secretenv.secrets s',
	'secretenv.current_kek_version()' => 'SELECT secretenv.current_kek_version()',
	'secretenv.cache_clear()' => 'SELECT secretenv.cache_clear()',
	'secretenv.cache_stats()' => 'SELECT secretenv.cache_stats()',
	'secretenv.loaded_kek_version()' => 'SELECT secretenv.loaded_kek_version()',
	'secretenv.secret_rotate(integer)' => 'CALL secretenv.secret_rotate(1)',
	'secretenv.secret_reencrypt(timestamp with time zone,integer)' =>
	  "CALL secretenv.secret_reencrypt('-infinity', 1)",
	'secretenv.rotate_table(regclass,name,name,integer)' =>
	  "CALL secretenv.rotate_table('secretenv.secrets', 'wrapped_dek', 'kek_version', 1)",
	'secretenv.rotate_secrets_batch(bigint,bigint)' => 'SELECT * FROM secretenv.rotate_secrets_batch(0, 1000)',
	'secretenv.reencrypt_secrets_batch(timestamp with time zone,bigint,bigint)' =>
	  "SELECT * FROM secretenv.reencrypt_secrets_batch('-infinity', 0, 1000)",
	'secretenv.rotate_table_batch(regclass,name,name,bigint,bigint)' =>
	  "SELECT * FROM secretenv.rotate_table_batch('secretenv.secrets', 'wrapped_dek', 'kek_version', 0, 1000)",
	'secretenv.batch_run_start(text,regclass,name,name,timestamp with time zone,integer)' =>
	  "SELECT secretenv.batch_run_start('rotate', 'secretenv.secrets', NULL, NULL, NULL, 1)",
	'secretenv.batch_run_step(secretenv.batch_run)' =>
	  "SELECT secretenv.batch_run_step(secretenv.batch_run_start('rotate', 'secretenv.secrets', NULL, NULL, NULL, 1))",
	'secretenv.reencrypt_envelope(bytea,bytea,integer,uuid,text)' => undef,
	'secretenv.secret_mask(text)' => "SELECT secretenv.secret_mask('atk-value-123456789')",
	'secretenv.secret_mask(jsonb)' => "SELECT secretenv.secret_mask('{\"k\": \"atk-value\"}'::jsonb)",
	'secretenv.forbid_identity_change()' => undef,
	'secretenv.check_envelope()' => undef,
	'secretenv.drop_guard()' => undef,
	'secretenv.invalidate_secret_caches()' => undef,
	'secretenv.stamp_value_encrypted()' => undef,
	'secretenv.insert_secret(text,text,jsonb,text,text,timestamp with time zone,jsonb)' => undef,
	'secretenv.replace_secret_value(text,text,jsonb,integer,timestamp with time zone,jsonb,boolean)' => undef,
	'secretenv.lock_live_secret(text)' => undef,
	'secretenv.keep_versions()' => undef,
	'secretenv.audit_version_write()' => undef,
	'secretenv.destroy_versions()' => undef,
	'secretenv.note_version_operation(text)' => undef,
	'secretenv.max_versions()' => 'SELECT secretenv.max_versions()',
	'secretenv.delete_recovery_window()' => 'SELECT secretenv.delete_recovery_window()',
	'secretenv.secret_get(text,integer)' => "SELECT secretenv.secret_get('victim', 1)",
	'secretenv.secret_get(text,text)' => "SELECT secretenv.secret_get('victim', label => 'current')",
	'secretenv.secret_versions(text)' => "SELECT * FROM secretenv.secret_versions('victim')",
	'secretenv.secret_stage(text,text)' => "SELECT secretenv.secret_stage('atk-text-' || session_user, 'staged-by-attacker')",
	'secretenv.secret_stage(text,jsonb)' =>
	  "SELECT secretenv.secret_stage('atk-json-' || session_user, '{\"k\": \"staged\"}'::jsonb)",
	'secretenv.secret_promote(text)' => "SELECT secretenv.secret_promote('atk-text-' || session_user)",
	'secretenv.secret_rollback(text,integer)' => "SELECT secretenv.secret_rollback('atk-text-' || session_user, 1)",
	'secretenv.secret_restore(text)' => "SELECT secretenv.secret_restore('no-such-secret')",
	'secretenv.secret_destroy(text)' => "SELECT secretenv.secret_destroy('no-such-secret')",
	'secretenv.purge_deleted()' => 'CALL secretenv.purge_deleted()',
	'secretenv.rotate_versions_batch(bigint,bigint)' => 'SELECT * FROM secretenv.rotate_versions_batch(0, 1000)',
	'secretenv.reencrypt_versions_batch(timestamp with time zone,bigint,bigint)' =>
	  "SELECT * FROM secretenv.reencrypt_versions_batch('-infinity', 0, 1000)",
	'secretenv.access_rules_changed()' => undef,
	'secretenv.access_rule_allows(text,boolean)' => "SELECT secretenv.access_rule_allows('victim', false)",
	'secretenv.access_default_open()' => 'SELECT secretenv.access_default_open()',
	'secretenv.enforce_access_rules()' => 'SELECT secretenv.enforce_access_rules()',
	'secretenv.grant_secrets(regrole,text,text)' =>
	  "SELECT secretenv.grant_secrets(session_user::regrole, 'atk-%', 'write')",
	'secretenv.revoke_secrets(regrole,text,text)' =>
	  "SELECT secretenv.revoke_secrets(session_user::regrole, 'atk-%', 'write')",
	'secretenv.secret_decrypt_stored(bytea,bytea,integer,uuid,text,integer)' =>
	  "SELECT secretenv.secret_decrypt_stored(s.encrypted_value, s.wrapped_dek, s.kek_version, s.secret_id, s.secret_name, s.current_version) FROM secretenv.secrets s",
	'secretenv.audit_verify()' => 'SELECT * FROM secretenv.audit_verify()',
	'secretenv.audit_purge(timestamp with time zone)' => "SELECT secretenv.audit_purge(now() - interval '1 hour')",
	'secretenv.audit_stats()' => 'SELECT secretenv.audit_stats()',
	'secretenv.audit_secret_write()' => undef,
	'secretenv.audit_log_guard()' => undef);
my @views = ('secretenv.masked_secrets', 'secretenv.decrypted_secrets', 'secretenv.access_rules',
	'secretenv.deleted_secrets');

sub privileges_of
{
	my ($node, $atk) = @_;
	return $node->safe_psql('postgres', qq{
SELECT format('super=%s createrole=%s createdb=%s bypassrls=%s repl=%s', rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolreplication)
	|| ' member_of=' || COALESCE((SELECT string_agg(m.roleid::regrole::text, ',' ORDER BY m.roleid::regrole::text)
		FROM pg_auth_members m WHERE m.member = r.oid), '')
	|| ' table=' || has_table_privilege(r.oid, 'secretenv.secrets', 'INSERT') || has_table_privilege(r.oid, 'secretenv.secrets', 'UPDATE')
	|| has_table_privilege(r.oid, 'secretenv.secrets', 'DELETE') || has_table_privilege(r.oid, 'secretenv.secrets', 'TRUNCATE')
FROM pg_roles r WHERE r.rolname = '$atk'});
}

for my $preload (1, 0)
{
	my $mode = $preload ? 'preloaded' : 'not preloaded';
	my $node = new_secretenv_node("hostile_$preload", preload => $preload,
		# Without preload a written passphrase is refused: the command.
		conf => ($preload ? \&kek_settings : \&kek_command_settings)->('hostile-passphrase-one-0123456789abcdef', 1));
	$node->start;
	$node->safe_psql('postgres', qq{
CREATE EXTENSION secretenv;
SELECT secretenv.secret_create('victim', '$victim_plaintext');
SELECT secretenv.secret_create('victim-json', '{"k": "$victim_json"}'::jsonb);
});

	my %role_of = (atk_reader => 'secretenv_reader', atk_writer => 'secretenv_writer', atk_admin => 'secretenv_admin');
	for my $atk (sort keys %role_of)
	{
		$node->safe_psql('postgres', qq{
CREATE ROLE $atk LOGIN;
GRANT $role_of{$atk} TO $atk;
CREATE SCHEMA $atk AUTHORIZATION $atk;
ALTER ROLE $atk SET search_path = $atk, pg_catalog;
});
		$node->safe_psql('postgres', "SET ROLE $atk;\n" . shadow_sql($atk));
	}

	# Every function of the schema is covered by %calls.
	my @functions = split /\n/, $node->safe_psql('postgres',
		"SELECT p.oid::regprocedure FROM pg_proc p WHERE p.pronamespace = 'secretenv'::regnamespace ORDER BY 1");
	is_deeply([ grep { !exists $calls{$_} } @functions ], [],
		"$mode: every secretenv function is exercised by this test");

	# Fresh key configurations: a restart, then a reload with a new current KEK.
	for my $fresh ('restart', 'reload')
	{
		if ($fresh eq 'restart')
		{
			$node->restart;
		}
		else
		{
			$node->append_conf('postgresql.conf',
				"secretenv.kek_passphrase = 'hostile-passphrase-two-abcdef0123456789'\nsecretenv.kek_version = 2\n"
				  . "secretenv.kek_previous_passphrase = 'hostile-passphrase-one-0123456789abcdef'\nsecretenv.kek_previous_version = 1\n");
			$node->reload;
			$node->poll_query_until('postgres', "SELECT current_setting('secretenv.kek_version')", '2')
			  or die 'reload not applied';
		}

		for my $atk (sort keys %role_of)
		{
			my $before = privileges_of($node, $atk);
			my $outputs = '';
			for my $sig (sort keys %calls)
			{
				next unless defined $calls{$sig};
				my ($out, $err) = run_sql($node, 'postgres', $calls{$sig},
					connstr => $node->connstr('postgres') . " user=$atk");
				$outputs .= "$out\n";
			}
			for my $view (@views)
			{
				my ($out, $err) = run_sql($node, 'postgres', "SELECT * FROM $view",
					connstr => $node->connstr('postgres') . " user=$atk");
				$outputs .= "$out\n";
			}

			is(privileges_of($node, $atk), $before,
				"$mode, after a $fresh: $atk gained no attribute, membership or table privilege");
			is($node->safe_psql('postgres',
					"SELECT count(*) FROM $atk.spy_log WHERE who <> '$atk' OR sess <> '$atk'"),
				'0', "$mode, after a $fresh: no shadow of $atk ran as another role");
			is($node->safe_psql('postgres',
					"SELECT count(*) FROM $atk.spy_log WHERE args LIKE '%victim%plaintext%'"),
				'0', "$mode, after a $fresh: no shadow of $atk saw a stored plaintext");
			if ($atk ne 'atk_reader')
			{
				unlike($outputs, qr/victim-(?:json-)?plaintext/,
					"$mode, after a $fresh: $atk obtained no plaintext it may not read");
			}
		}
	}

	# Internal and trigger functions are not executable by the attackers.
	# insert_secret and replace_secret_value run with the caller's rights
	# (so that row-level security applies, issue 16) and are called by
	# secret_create and secret_update: a writer may execute them, no one else.
	for my $atk (sort keys %role_of)
	{
		is($node->safe_psql('postgres', qq{
SELECT count(*) FROM pg_proc p
WHERE p.pronamespace = 'secretenv'::regnamespace
   AND (p.proname IN ('invalidate_secret_caches', 'reencrypt_envelope', 'access_rules_changed',
					   'enforce_access_rules', 'stamp_value_encrypted', 'audit_secret_write',
					   'audit_log_guard', 'keep_versions', 'audit_version_write',
					   'note_version_operation', 'destroy_versions')
	   OR (p.proname IN ('insert_secret', 'replace_secret_value', 'lock_live_secret')
		   AND NOT pg_has_role('$atk', 'secretenv_writer', 'USAGE')))
  AND has_function_privilege('$atk', p.oid, 'EXECUTE')}),
			'0', "$mode: $atk cannot execute the internal functions");
	}
	is($node->safe_psql('postgres', 'SELECT secretenv.secret_get(\'victim\')'),
		$victim_plaintext, "$mode: the victim's secret is intact");
	$node->stop;
}

done_testing();
