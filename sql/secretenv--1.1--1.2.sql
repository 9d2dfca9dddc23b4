/* sql/secretenv--1.1--1.2.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION secretenv UPDATE TO '1.2'" to load this file. \quit

/*
 * Upgrade from 1.1 to 1.2.  After this script a 1.1 database holds exactly
 * the objects, privileges, comments and triggers of a fresh 1.2 install
 * (checked by test/t/070_upgrade_equivalence.pl); stored rows keep their
 * bytes: the on-disk format of a value is the same.
 *
 * Like the install script, this one contains only ASCII and no U&''
 * literal, so that it parses whatever standard_conforming_strings is.
 */

/*
 * From 1.2 on row-level security is always enabled on secretenv.secrets
 * (the access rules below).  Policies written by hand while it was
 * disabled would start to apply without anyone deciding so: refuse, and
 * let the DBA decide.
 */
DO $$
BEGIN
	IF NOT (SELECT c.relrowsecurity FROM pg_catalog.pg_class c
			WHERE c.oid OPERATOR(pg_catalog.=) 'secretenv.secrets'::pg_catalog.regclass)
	   AND EXISTS (SELECT FROM pg_catalog.pg_policy p
				   WHERE p.polrelid OPERATOR(pg_catalog.=) 'secretenv.secrets'::pg_catalog.regclass) THEN
		RAISE EXCEPTION 'cannot update secretenv: secretenv.secrets has row-level security policies but row-level security is disabled'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = 'Version 1.2 enables row-level security on secretenv.secrets, which would make these policies apply.',
				  HINT = 'Enable row-level security on secretenv.secrets if the policies should apply, or drop them; then update again.';
	END IF;
END
$$;

-------------------------------------------------------------------------------
-- Per-application access rules (DESIGN section 8f)
-------------------------------------------------------------------------------

/*
 * Hand-written row-level security on secretenv.secrets is lost by pg_dump
 * (an extension's table: its rows are dumped, its policies and its ENABLE
 * ROW LEVEL SECURITY are not).  Access rules are data in an extension
 * configuration table, dumped with the rows; the policies that enforce them
 * and row-level security itself are created by this script (through
 * enforce_access_rules() below), so the CREATE EXTENSION of a restore brings
 * them back.
 *
 * A rule lets a role (and every role that inherits its privileges) see
 * the secrets whose names match a LIKE pattern; 'write' also lets it
 * create, update and delete them.  A role that has no rule is not
 * restricted by rules at all.  Rules only restrict: no rule gives a role a
 * privilege it does not hold (decrypting still takes secretenv_reader,
 * writing secretenv_writer).
 *
 * The rules are read by access_rule_allows() (access_rules.c) with a fresh
 * snapshot, like a catalog: a committed grant or revoke applies to the
 * next statement of every session, also inside a REPEATABLE READ
 * transaction, as a GRANT does.
 */
CREATE TABLE secretenv.access_grants (
	role regrole NOT NULL,
	name_pattern text NOT NULL,
	privilege text NOT NULL,
	granted_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
	granted_by name NOT NULL DEFAULT SESSION_USER,
	PRIMARY KEY (role, name_pattern, privilege),
	CONSTRAINT access_grants_privilege_valid CHECK (privilege IN ('read', 'write')),
	CONSTRAINT access_grants_pattern_valid CHECK (octet_length(name_pattern) BETWEEN 1 AND 1024)
);
COMMENT ON TABLE secretenv.access_grants IS
	'Access rules of secretenv.secrets: which names each role may read or write (see secretenv.access_rules)';
/*
 * Dumped with pg_dump, but only the rules of roles that still exist: the
 * role column is dumped by name, and a rule of a dropped role would
 * otherwise be dumped as a bare OID that names some other role, or none,
 * in the cluster it is restored into.
 */
SELECT pg_catalog.pg_extension_config_dump('secretenv.access_grants',
	'WHERE EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.oid OPERATOR(pg_catalog.=) role)');

/*
 * Every change of the rules drops every backend's rule cache and
 * credential cache when it commits (a relcache invalidation of
 * secretenv.secrets), and counts as a writer for the cache's coherence
 * protocol (coherence.c), exactly like a change of secretenv.secrets.
 */
CREATE FUNCTION secretenv.access_rules_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'secret_access_rules_changed'
LANGUAGE C;
COMMENT ON FUNCTION secretenv.access_rules_changed() IS
	'Trigger: drop every backend''s cached access rules and secrets when the rules change';

CREATE TRIGGER access_grants_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON secretenv.access_grants
	FOR EACH STATEMENT EXECUTE FUNCTION secretenv.access_rules_changed();
ALTER TABLE secretenv.access_grants ENABLE ALWAYS TRIGGER access_grants_changed;

CREATE FUNCTION secretenv.access_rule_allows(secret_name text, write boolean)
RETURNS boolean
AS 'MODULE_PATHNAME', 'secret_access_rule_allows'
LANGUAGE C STRICT STABLE PARALLEL RESTRICTED;
COMMENT ON FUNCTION secretenv.access_rule_allows(text, boolean) IS
	'Policy: whether the current role''s access rules let it see (or, with write, change) a secret of this name; true for a role without rules';

CREATE FUNCTION secretenv.access_default_open()
RETURNS boolean
AS 'MODULE_PATHNAME', 'secret_access_default_open'
LANGUAGE C STRICT STABLE PARALLEL RESTRICTED;
COMMENT ON FUNCTION secretenv.access_default_open() IS
	'Policy: true while secretenv.secrets has no permissive policy other than secretenv_default';

/*
 * The policies and row-level security, created here and by a superuser
 * whenever they were lost (the 55S01 error says so).  Permissive policies
 * OR together and restrictive ones AND:
 *	- secretenv_default (permissive) lets every role see every row, as 1.1
 *	  without row-level security did, while no other permissive policy
 *	  exists; once a hand-written permissive policy exists, the hand-written
 *	  ones decide alone, as in 1.1 with row-level security (so the default
 *	  never widens them);
 *	- secretenv_rules_* (restrictive) apply the access rules to every
 *	  command, beside whatever the permissive policies allow.
 * Superusers, the table's owner and roles with BYPASSRLS bypass all of it.
 */
CREATE FUNCTION secretenv.enforce_access_rules()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	p record;
BEGIN
	FOR p IN
		SELECT * FROM (VALUES
			('secretenv_default', 'ALL', 'PERMISSIVE',
			 'USING ((SELECT secretenv.access_default_open()))'),
			('secretenv_rules_select', 'SELECT', 'RESTRICTIVE',
			 'USING (secretenv.access_rule_allows(secret_name, false))'),
			('secretenv_rules_insert', 'INSERT', 'RESTRICTIVE',
			 'WITH CHECK (secretenv.access_rule_allows(secret_name, true))'),
			('secretenv_rules_update', 'UPDATE', 'RESTRICTIVE',
			 'USING (secretenv.access_rule_allows(secret_name, true)) WITH CHECK (secretenv.access_rule_allows(secret_name, true))'),
			('secretenv_rules_delete', 'DELETE', 'RESTRICTIVE',
			 'USING (secretenv.access_rule_allows(secret_name, true))')) v(name, cmd, kind, clauses)
	LOOP
		IF EXISTS (SELECT FROM pg_policy pp
				   WHERE pp.polrelid OPERATOR(pg_catalog.=) 'secretenv.secrets'::regclass
					 AND pp.polname OPERATOR(pg_catalog.=) p.name) THEN
			EXECUTE format('DROP POLICY %I ON secretenv.secrets', p.name);
		END IF;
		EXECUTE format('CREATE POLICY %I ON secretenv.secrets AS %s FOR %s TO PUBLIC %s',
					   p.name, p.kind, p.cmd, p.clauses);
	END LOOP;
	ALTER TABLE secretenv.secrets ENABLE ROW LEVEL SECURITY;
END
$$;
COMMENT ON FUNCTION secretenv.enforce_access_rules() IS
	'Re-create the policies that enforce the access rules and enable row-level security on secretenv.secrets (superuser)';

CREATE FUNCTION secretenv.grant_secrets(role regrole, name_pattern text, privilege text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r record;
	matches bigint;
BEGIN
	IF role IS NULL OR name_pattern IS NULL OR privilege IS NULL THEN
		RAISE EXCEPTION 'role, name pattern and privilege must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF privilege NOT IN ('read', 'write') THEN
		RAISE EXCEPTION 'unrecognized secret privilege "%"', privilege
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'The privilege is read or write; write includes read.';
	END IF;
	IF octet_length(name_pattern) NOT BETWEEN 1 AND 1024 THEN
		RAISE EXCEPTION 'name pattern must be between 1 and 1024 bytes'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	/* LIKE would raise this at every read of the role; chr(92) is '\'. */
	IF (length(name_pattern) - length(rtrim(name_pattern, chr(92)))) % 2 = 1 THEN
		RAISE EXCEPTION 'LIKE pattern must not end with escape character'
			USING ERRCODE = 'invalid_escape_sequence';
	END IF;

	SELECT a.rolname, a.rolsuper, a.rolbypassrls INTO r
	FROM pg_catalog.pg_roles a WHERE a.oid OPERATOR(pg_catalog.=) role;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'role with OID % does not exist', role::oid
			USING ERRCODE = 'undefined_object';
	END IF;
	IF r.rolsuper OR r.rolbypassrls
	   OR role::oid OPERATOR(pg_catalog.=) (SELECT c.relowner FROM pg_catalog.pg_class c
							  WHERE c.oid OPERATOR(pg_catalog.=) 'secretenv.secrets'::pg_catalog.regclass) THEN
		RAISE EXCEPTION 'role "%" bypasses row-level security', r.rolname
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'Superusers, roles with BYPASSRLS and the owner of secretenv.secrets are never subject to row-level security, so no access rule could restrict this role.',
				  HINT = 'Give the application a role of its own without these attributes.';
	END IF;

	/* Rules of roles dropped since are inert; remove them. */
	DELETE FROM secretenv.access_grants g
	WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles a WHERE a.oid OPERATOR(pg_catalog.=) g.role);

	INSERT INTO secretenv.access_grants AS g (role, name_pattern, privilege)
	VALUES (grant_secrets.role, grant_secrets.name_pattern, grant_secrets.privilege)
	ON CONFLICT ON CONSTRAINT access_grants_pkey DO NOTHING;

	SELECT count(*) INTO matches FROM secretenv.secrets s
	WHERE s.secret_name OPERATOR(pg_catalog.~~) grant_secrets.name_pattern;
	IF matches OPERATOR(pg_catalog.=) 0 THEN
		RAISE NOTICE 'name pattern "%" matches no stored secret yet', name_pattern;
	END IF;
END
$$;
COMMENT ON FUNCTION secretenv.grant_secrets(regrole, text, text) IS
	'Let a role read (or read and write) the secrets whose names match a LIKE pattern; a role with rules sees only what its rules match';

CREATE FUNCTION secretenv.revoke_secrets(role regrole, name_pattern text, privilege text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	found_one boolean;
BEGIN
	IF role IS NULL OR name_pattern IS NULL OR privilege IS NULL THEN
		RAISE EXCEPTION 'role, name pattern and privilege must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF privilege NOT IN ('read', 'write') THEN
		RAISE EXCEPTION 'unrecognized secret privilege "%"', privilege
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'The privilege is read or write; write includes read.';
	END IF;
	WITH d AS (
		DELETE FROM secretenv.access_grants g
		WHERE g.role OPERATOR(pg_catalog.=) revoke_secrets.role
		  AND g.name_pattern OPERATOR(pg_catalog.=) revoke_secrets.name_pattern
		  AND g.privilege OPERATOR(pg_catalog.=) revoke_secrets.privilege
		RETURNING 1)
	SELECT count(*) OPERATOR(pg_catalog.>) 0 INTO found_one FROM d;
	RETURN found_one;
END
$$;
COMMENT ON FUNCTION secretenv.revoke_secrets(regrole, text, text) IS
	'Remove one access rule; returns whether it existed (the role''s last rule removed, it is no longer restricted by rules)';

CREATE VIEW secretenv.access_rules AS
	SELECT g.role, g.name_pattern, g.privilege,
		   EXISTS (SELECT FROM pg_catalog.pg_roles a WHERE a.oid OPERATOR(pg_catalog.=) g.role) AS role_exists,
		   (SELECT count(*) FROM secretenv.secrets s
			WHERE s.secret_name OPERATOR(pg_catalog.~~) g.name_pattern) AS matching_secrets,
		   g.granted_at, g.granted_by
	FROM secretenv.access_grants g;
COMMENT ON VIEW secretenv.access_rules IS
	'Access rules: role, LIKE pattern, privilege, whether the role still exists, how many stored secrets match';

SELECT secretenv.enforce_access_rules();

REVOKE ALL ON secretenv.access_grants, secretenv.access_rules FROM PUBLIC;
REVOKE ALL ON FUNCTION
	secretenv.access_rules_changed(),
	secretenv.access_rule_allows(text, boolean),
	secretenv.access_default_open(),
	secretenv.enforce_access_rules(),
	secretenv.grant_secrets(regrole, text, text),
	secretenv.revoke_secrets(regrole, text, text)
	FROM PUBLIC;
-- The policies call these as the role a statement runs as: every role that
-- holds a privilege on secretenv.secrets.  They tell a role about its own
-- rules only.  A role given a privilege on the table by hand needs them too.
GRANT EXECUTE ON FUNCTION
	secretenv.access_rule_allows(text, boolean),
	secretenv.access_default_open()
	TO secretenv_reader, secretenv_writer, secretenv_admin;
GRANT EXECUTE ON FUNCTION
	secretenv.grant_secrets(regrole, text, text),
	secretenv.revoke_secrets(regrole, text, text)
	TO secretenv_admin;
GRANT SELECT ON secretenv.access_rules TO secretenv_admin;

/*
 * secret_rotate_all(): its hint for a version without a KEK names the
 * passphrase command too (a server that does not preload secretenv refuses
 * a passphrase written in the configuration).
 */
CREATE OR REPLACE FUNCTION secretenv.secret_rotate_all()
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	/* The key settings the server last loaded, not a stale view. */
	current_version int4 := secretenv.loaded_kek_version();
	missing text;
	rotated bigint;
BEGIN
	/*
	 * Name every version that cannot be opened before touching anything;
	 * the UPDATE would fail on the first such row anyway, but less helpfully.
	 */
	SELECT string_agg(v::text, ', ' ORDER BY v) INTO missing
	FROM (SELECT DISTINCT kek_version AS v FROM secretenv.secrets
		  WHERE kek_version <> current_version) old
	WHERE NOT secretenv.kek_is_configured(v);

	IF missing IS NOT NULL THEN
		RAISE EXCEPTION 'cannot rotate secrets: no KEK is configured for version %', missing
			USING ERRCODE = '22S04',
				  DETAIL = pg_catalog.format('Rows of KEK version %s cannot be unwrapped; nothing was changed.', missing),
				  HINT = 'Configure the KEK that wrote them as the previous one (secretenv.kek_previous_version, with secretenv.kek_previous_passphrase on a server that preloads secretenv, or a secretenv.kek_passphrase_command that prints its passphrase), reload, and retry.';
	END IF;

	/* One statement: all rows are re-wrapped, or none is. */
	UPDATE secretenv.secrets
	SET wrapped_dek = secretenv.secret_rewrap(wrapped_dek, kek_version),
		kek_version = current_version
	WHERE kek_version <> current_version;
	GET DIAGNOSTICS rotated = ROW_COUNT;
	RETURN rotated;
END
$$;

/*
 * Session independence: the 1.1 objects that held U&'' literals (which
 * fail under standard_conforming_strings = off) are replaced by the same
 * rules written with chr() of the code points.
 */
ALTER TABLE secretenv.secrets DROP CONSTRAINT secrets_name_valid,
	ADD CONSTRAINT secrets_name_valid CHECK (octet_length(secret_name) <= 1024 AND
		btrim(secret_name, E' \t\n\r\f\v' ||
			  pg_catalog.chr(133) || pg_catalog.chr(160) || pg_catalog.chr(5760) || pg_catalog.chr(8192) || pg_catalog.chr(8193) || pg_catalog.chr(8194) ||
			  pg_catalog.chr(8195) || pg_catalog.chr(8196) || pg_catalog.chr(8197) || pg_catalog.chr(8198) || pg_catalog.chr(8199) || pg_catalog.chr(8200) ||
			  pg_catalog.chr(8201) || pg_catalog.chr(8202) || pg_catalog.chr(8232) || pg_catalog.chr(8233) || pg_catalog.chr(8239) || pg_catalog.chr(8287) ||
			  pg_catalog.chr(12288)) <> '');

CREATE OR REPLACE FUNCTION secretenv.insert_secret(secret_name text, plaintext text, masked jsonb,
										provider text, description text)
RETURNS uuid
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	new_id uuid := gen_random_uuid();
	e secretenv.envelope;
BEGIN
	IF secret_name IS NULL OR plaintext IS NULL THEN
		RAISE EXCEPTION 'secret name and value must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF octet_length(secret_name) > 1024 THEN
		RAISE EXCEPTION 'secret name exceeds the maximum length of 1024 bytes'
			USING ERRCODE = 'program_limit_exceeded',
				  DETAIL = format('A secret name may be at most 1024 bytes; this one has %s.',
								  octet_length(secret_name));
	END IF;
	IF btrim(secret_name, E' \t\n\r\f\v' ||
				 pg_catalog.chr(133) || pg_catalog.chr(160) || pg_catalog.chr(5760) || pg_catalog.chr(8192) || pg_catalog.chr(8193) || pg_catalog.chr(8194) ||
				 pg_catalog.chr(8195) || pg_catalog.chr(8196) || pg_catalog.chr(8197) || pg_catalog.chr(8198) || pg_catalog.chr(8199) || pg_catalog.chr(8200) ||
				 pg_catalog.chr(8201) || pg_catalog.chr(8202) || pg_catalog.chr(8232) || pg_catalog.chr(8233) || pg_catalog.chr(8239) || pg_catalog.chr(8287) ||
				 pg_catalog.chr(12288)) = '' THEN
		RAISE EXCEPTION 'secret name must not be empty or only whitespace'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	/* One call, one DEK: the value and its wrapped DEK must come from the same call. */
	e := secretenv.secret_encrypt(plaintext, new_id, secret_name);
	/*
	 * ON CONFLICT rather than an exception block: no subtransaction per
	 * secret, and a concurrent create of the same name is waited for.
	 */
	INSERT INTO secretenv.secrets (secret_id, secret_name, encrypted_value, wrapped_dek,
								   kek_version, masked_value, provider, description,
								   created_by, last_updated_by)
	VALUES (new_id, insert_secret.secret_name, e.encrypted_value, e.wrapped_dek,
			e.kek_version, masked, insert_secret.provider, insert_secret.description,
			session_user, session_user)
	ON CONFLICT ON CONSTRAINT secrets_secret_name_key DO NOTHING;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'secret "%" already exists', insert_secret.secret_name
			USING ERRCODE = 'unique_violation',
				  HINT = 'Change its value with secretenv.secret_update, or delete it first with secretenv.secret_delete.';
	END IF;
	RETURN new_id;
END
$$;
COMMENT ON FUNCTION secretenv.insert_secret(text, text, jsonb, text, text) IS
	'Internal to secret_create: encrypt and insert one secret';

CREATE OR REPLACE FUNCTION secretenv.replace_secret_value(secret_name text, plaintext text, masked jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	target_id uuid;
	e secretenv.envelope;
BEGIN
	IF secret_name IS NULL OR plaintext IS NULL THEN
		RAISE EXCEPTION 'secret name and value must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF octet_length(secret_name) > 1024 THEN
		RAISE EXCEPTION 'secret name exceeds the maximum length of 1024 bytes'
			USING ERRCODE = 'program_limit_exceeded',
				  DETAIL = format('A secret name may be at most 1024 bytes; this one has %s.',
								  octet_length(secret_name));
	END IF;
	IF btrim(secret_name, E' \t\n\r\f\v' ||
				 pg_catalog.chr(133) || pg_catalog.chr(160) || pg_catalog.chr(5760) || pg_catalog.chr(8192) || pg_catalog.chr(8193) || pg_catalog.chr(8194) ||
				 pg_catalog.chr(8195) || pg_catalog.chr(8196) || pg_catalog.chr(8197) || pg_catalog.chr(8198) || pg_catalog.chr(8199) || pg_catalog.chr(8200) ||
				 pg_catalog.chr(8201) || pg_catalog.chr(8202) || pg_catalog.chr(8232) || pg_catalog.chr(8233) || pg_catalog.chr(8239) || pg_catalog.chr(8287) ||
				 pg_catalog.chr(12288)) = '' THEN
		RAISE EXCEPTION 'secret name must not be empty or only whitespace'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	/* Lock the row first: the AAD needs its id, and a rename cannot happen. */
	SELECT s.secret_id INTO target_id FROM secretenv.secrets s
	WHERE s.secret_name = replace_secret_value.secret_name
	FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'secret "%" does not exist', replace_secret_value.secret_name
			USING ERRCODE = 'no_data_found';
	END IF;

	e := secretenv.secret_encrypt(plaintext, target_id, replace_secret_value.secret_name);
	UPDATE secretenv.secrets
	SET encrypted_value = e.encrypted_value,
		wrapped_dek = e.wrapped_dek,
		kek_version = e.kek_version,
		masked_value = masked,
		last_updated_at = now(),
		last_updated_by = session_user
	WHERE secret_id = target_id;
END
$$;
COMMENT ON FUNCTION secretenv.replace_secret_value(text, text, jsonb) IS
	'Internal to secret_update: re-encrypt one secret under a fresh DEK';

/*
 * When each value was last encrypted, recorded where only secretenv writes
 * it (see the install script and src/encryption_time.c).  Rows written by
 * 1.0 or 1.1 get NULL: their encryption time is unknown, so the next
 * secret_reencrypt re-encrypts them whatever its cutoff.
 */
ALTER TABLE secretenv.secrets ADD COLUMN value_encrypted_at timestamptz;

CREATE FUNCTION secretenv.stamp_value_encrypted()
RETURNS trigger
AS 'MODULE_PATHNAME', 'secret_stamp_value_encrypted'
LANGUAGE C;
COMMENT ON FUNCTION secretenv.stamp_value_encrypted() IS
	'Row trigger of secretenv.secrets: record when the value was last encrypted under a fresh DEK, ignoring what the statement wrote';

CREATE TRIGGER secrets_value_encrypted_at
	BEFORE INSERT OR UPDATE ON secretenv.secrets
	FOR EACH ROW EXECUTE FUNCTION secretenv.stamp_value_encrypted();
ALTER TABLE secretenv.secrets ENABLE ALWAYS TRIGGER secrets_value_encrypted_at;

CREATE OR REPLACE FUNCTION secretenv.reencrypt_secrets_batch(since timestamptz, first_block int8, blocks int8,
												  OUT changed int8, OUT seen int8)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	current_version int4 := secretenv.loaded_kek_version();
	lo tid := format('(%s,0)', first_block)::tid;
	hi tid := format('(%s,0)', first_block OPERATOR(pg_catalog.+) blocks)::tid;
BEGIN
	SELECT count(*) INTO seen FROM secretenv.secrets s
	WHERE s.ctid OPERATOR(pg_catalog.>=) lo AND s.ctid OPERATOR(pg_catalog.<) hi;

	UPDATE secretenv.secrets s
	SET (encrypted_value, wrapped_dek, kek_version) =
			(SELECT e.encrypted_value, e.wrapped_dek, e.kek_version
			 FROM secretenv.reencrypt_envelope(s.encrypted_value, s.wrapped_dek, s.kek_version,
											   s.secret_id, s.secret_name) e),
		last_updated_at = now()
	WHERE s.ctid OPERATOR(pg_catalog.>=) lo AND s.ctid OPERATOR(pg_catalog.<) hi
	  AND (s.value_encrypted_at IS NULL OR s.value_encrypted_at OPERATOR(pg_catalog.<) since);
	GET DIAGNOSTICS changed = ROW_COUNT;
END
$$;
COMMENT ON FUNCTION secretenv.reencrypt_secrets_batch(timestamptz, int8, int8) IS
	'Internal to secret_reencrypt: give the rows of a block range encrypted before the cutoff a fresh DEK and ciphertext';

REVOKE ALL ON FUNCTION secretenv.stamp_value_encrypted() FROM PUBLIC;
GRANT SELECT (value_encrypted_at) ON secretenv.secrets TO secretenv_writer, secretenv_admin;


/*
 * decrypted_secrets' value: secret_decrypt of the stored row with an
 * access audit record (a direct call is recorded too).  PARALLEL
 * RESTRICTED: it runs in the leader, whose client the record names.
 */
CREATE FUNCTION secretenv.secret_decrypt_stored(encrypted_value bytea, wrapped_dek bytea,
												kek_version int4, secret_id uuid, secret_name text)
RETURNS text
AS 'MODULE_PATHNAME', 'secret_decrypt_stored'
LANGUAGE C STRICT STABLE PARALLEL RESTRICTED;
COMMENT ON FUNCTION secretenv.secret_decrypt_stored(bytea, bytea, int4, uuid, text) IS
	'Decrypt a row of secretenv.secrets for decrypted_secrets, with its access audit record';

CREATE OR REPLACE VIEW secretenv.decrypted_secrets WITH (security_invoker = true) AS
	SELECT secret_id, secret_name,
		   secretenv.secret_decrypt_stored(encrypted_value, wrapped_dek, kek_version,
										   secret_id, secret_name) AS value,
		   provider, description, kek_version, last_updated_at
	FROM secretenv.secrets;

-------------------------------------------------------------------------------
-- Access audit (README "Access audit")
-------------------------------------------------------------------------------

/*
 * One row per operation on a stored secret, written by secretenv's audit
 * writer (a background worker, in a transaction of its own) so that a
 * record outlives the reading transaction.  Each row's mac is
 * HMAC-SHA256 under the audit key of KEK version mac_kek_version over
 * the previous row's mac and this row's canonical encoding; audit_verify()
 * recomputes the chain.  A purge checkpoint (operation 'purge') names the
 * last record it removed (purged_through) and that record's mac
 * (anchor_mac), so the rest still verifies.  Never a value, never key
 * material.
 */
CREATE TABLE secretenv.audit_log (
	seq int8 PRIMARY KEY,
	event_time timestamptz NOT NULL,
	database_name text NOT NULL,
	session_user_name text NOT NULL,
	current_user_name text NOT NULL,
	secret_id uuid,
	secret_name text,
	operation text NOT NULL,
	via text NOT NULL,
	outcome text NOT NULL,
	application_name text NOT NULL,
	client_addr text,
	backend_pid int4 NOT NULL,
	purged_through int8,
	anchor_mac bytea,
	mac_kek_version int4 NOT NULL,
	mac bytea NOT NULL
);
COMMENT ON TABLE secretenv.audit_log IS
	'Access audit: one HMAC-chained record per operation on a stored secret; append-only, verified by audit_verify()';
-- By time only: records arrive in time order, so each insert lands on the
-- rightmost leaf (an index on the name would cost the writer a descent
-- and comparisons per record, about half of its work per read recorded);
-- "who read X last week" scans the week's range and filters by name.
CREATE INDEX audit_log_time ON secretenv.audit_log (event_time);
-- Records are data: pg_dump keeps them, and a restore under the same KEK
-- configuration verifies (TAP 104).
SELECT pg_catalog.pg_extension_config_dump('secretenv.audit_log', '');

CREATE FUNCTION secretenv.audit_log_guard()
RETURNS trigger
AS 'MODULE_PATHNAME', 'audit_log_guard'
LANGUAGE C;
COMMENT ON FUNCTION secretenv.audit_log_guard() IS
	'Trigger: secretenv.audit_log is append-only; only audit_purge() deletes';
CREATE TRIGGER audit_log_append_only
	BEFORE UPDATE OR DELETE ON secretenv.audit_log
	FOR EACH ROW EXECUTE FUNCTION secretenv.audit_log_guard();
CREATE TRIGGER audit_log_no_truncate
	BEFORE TRUNCATE ON secretenv.audit_log
	FOR EACH STATEMENT EXECUTE FUNCTION secretenv.audit_log_guard();
-- Also under session_replication_role = replica.
ALTER TABLE secretenv.audit_log ENABLE ALWAYS TRIGGER audit_log_append_only;
ALTER TABLE secretenv.audit_log ENABLE ALWAYS TRIGGER audit_log_no_truncate;

CREATE FUNCTION secretenv.audit_secret_write()
RETURNS trigger
AS 'MODULE_PATHNAME', 'audit_secret_write'
LANGUAGE C;
COMMENT ON FUNCTION secretenv.audit_secret_write() IS
	'Trigger: an audit record for each create, value update and delete of a stored secret';
-- Origin only: a logical-replication subscriber's applied rows were recorded at the origin.
CREATE TRIGGER secrets_audit_write
	AFTER INSERT OR UPDATE OR DELETE ON secretenv.secrets
	FOR EACH ROW EXECUTE FUNCTION secretenv.audit_secret_write();

CREATE FUNCTION secretenv.audit_verify()
RETURNS TABLE (intact boolean, records bigint, first_break bigint, problem text)
AS 'MODULE_PATHNAME', 'audit_verify'
LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION secretenv.audit_verify() IS
	'Check the audit chain: intact, or the first missing, altered, inserted or reordered record';

CREATE FUNCTION secretenv.audit_purge(before timestamptz)
RETURNS bigint
AS 'MODULE_PATHNAME', 'audit_purge'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION secretenv.audit_purge(timestamptz) IS
	'Delete the audit records up to the last one older than before, leaving a checkpoint that keeps the rest verifiable; refuses a broken chain';

CREATE FUNCTION secretenv.audit_stats()
RETURNS jsonb
AS 'MODULE_PATHNAME', 'audit_stats'
LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION secretenv.audit_stats() IS
	'Access audit settings and counters of the queue: queued, written, dropped, given up, failures';

-- status() shows the audit counters.
CREATE OR REPLACE FUNCTION secretenv.status()
RETURNS jsonb
LANGUAGE sql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
	/* Act on the key settings the server last loaded, not a stale view. */
	SELECT secretenv.loaded_kek_version();
	/* Once: key_config() reads the settings this session now has. */
	WITH cfg AS MATERIALIZED (SELECT secretenv.key_config() AS c),
	versions AS (
		SELECT c.kek_version, c.n,
			   secretenv.kek_is_configured(c.kek_version) AS configured,
			   secretenv.kek_opens((SELECT s.wrapped_dek FROM secretenv.secrets s
									WHERE s.kek_version OPERATOR(pg_catalog.=) c.kek_version
									LIMIT 1), c.kek_version) AS opens
		FROM (SELECT s.kek_version, count(*) AS n
			  FROM secretenv.secrets s GROUP BY s.kek_version) c
	)
	SELECT (SELECT cfg.c FROM cfg)
		|| jsonb_build_object(
			'versions', COALESCE((
				SELECT jsonb_agg(jsonb_build_object(
							'kek_version', v.kek_version,
							'rows', v.n,
							'kek_configured', v.configured,
							'kek_opens_sample', v.opens)
						ORDER BY v.kek_version)
				FROM versions v), '[]'::jsonb),
			/* Rows a read refuses (22S05) until they are rotated. */
			'retired_rows', COALESCE((
				SELECT sum(v.n) FROM versions v
				WHERE v.kek_version OPERATOR(pg_catalog.<)
					  (SELECT (cfg.c OPERATOR(pg_catalog.->>) 'min_kek_version')::int4 FROM cfg)), 0),
			/*
			 * Rows whose value was encrypted at an unknown time (written
			 * directly, or before 1.2): any secret_reencrypt re-encrypts them.
			 */
			'unknown_encryption_time_rows', (SELECT count(*) FROM secretenv.secrets s
											 WHERE s.value_encrypted_at IS NULL),
			'oldest_value_encrypted_at', (SELECT min(s.value_encrypted_at) FROM secretenv.secrets s),
			/* Complete: every row on the current KEK, and that KEK opens them. */
			'rotation_complete', NOT EXISTS (
				SELECT 1 FROM versions v
				WHERE v.kek_version OPERATOR(pg_catalog.<>) secretenv.current_kek_version()
				   OR v.opens IS DISTINCT FROM true),
			'databases', COALESCE((
				SELECT jsonb_agg(jsonb_build_object(
							'database', d.database,
							'kek_version', d.kek_version,
							'rows', d.rows,
							'kek_state', d.kek_state,
							'checked_at', d.checked_at)
						ORDER BY d.database, d.kek_version)
				FROM (SELECT i.database, i.kek_version, i.rows, i.kek_state, i.checked_at
					  FROM secretenv.key_inventory() i
					  WHERE i.database OPERATOR(pg_catalog.<>) current_database()::text
					  UNION ALL
					  /* This database as counted now, not at the worker's last visit. */
					  SELECT current_database()::text, v.kek_version, v.n,
							 CASE WHEN NOT v.configured THEN 'not configured'
								  WHEN v.opens THEN 'opens'
								  ELSE 'does not open' END,
							 now()
					  FROM versions v) d), '[]'::jsonb),
			'cache', secretenv.cache_stats(),
			'audit', secretenv.audit_stats())
$$;
COMMENT ON FUNCTION secretenv.status() IS
	'Key versions and fingerprints, default-passphrase use, preload, rows, retirement and key health per version and per database, cache counters; never key material';

REVOKE ALL ON secretenv.audit_log FROM PUBLIC;
GRANT SELECT ON secretenv.audit_log TO secretenv_admin;
REVOKE ALL ON FUNCTION
	secretenv.audit_log_guard(),
	secretenv.audit_secret_write(),
	secretenv.audit_verify(),
	secretenv.audit_purge(timestamptz),
	secretenv.audit_stats(),
	secretenv.secret_decrypt_stored(bytea, bytea, int4, uuid, text)
	FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
	secretenv.audit_verify(),
	secretenv.audit_purge(timestamptz),
	secretenv.audit_stats()
	TO secretenv_admin;
GRANT EXECUTE ON FUNCTION secretenv.secret_decrypt_stored(bytea, bytea, int4, uuid, text)
	TO secretenv_reader;
