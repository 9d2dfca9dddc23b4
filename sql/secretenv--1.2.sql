/* sql/secretenv--1.2.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION secretenv" to load this file. \quit

/*
 * The stored format is UTF-8 bytes (MLflow's format).  In a UTF8 database
 * text is used byte for byte, with no conversion that could fail halfway or
 * quote secret bytes in an error message.
 */
DO $encoding$
BEGIN
	IF pg_catalog.current_setting('server_encoding') <> 'UTF8' THEN
		RAISE EXCEPTION 'secretenv requires a UTF8 database'
			USING ERRCODE = 'feature_not_supported',
				  DETAIL = pg_catalog.format('This database''s encoding is %s.',
											 pg_catalog.current_setting('server_encoding')),
				  HINT = 'Create the database with ENCODING ''UTF8''.';
	END IF;
END
$encoding$;

/*
 * Refuse to adopt squatted roles or a squatted schema (DESIGN section 7a).  The
 * three roles are cluster-wide and the schema may exist before CREATE
 * EXTENSION, so either may have been prepared by someone else:
 *  - a role that can log in, or holds SUPERUSER, CREATEROLE, CREATEDB,
 *    REPLICATION or BYPASSRLS, is someone's account or a cluster-wide power,
 *    and would receive secretenv's privileges; a role that is already a
 *    member of another role would pass that role's privileges on to everyone
 *    later granted the secretenv role;
 *  - the owner of the schema, and any other role holding CREATE on it, can
 *    place objects beside secretenv's (and the owner can drop them), and
 *    objects another role placed there earlier would stay.
 * Superusers gain nothing from either, so the schema, its CREATE grants and
 * its objects may belong to any superuser (this script runs as one: when the
 * schema did not exist, CREATE EXTENSION created it owned by the installing
 * role; a dump restored by another superuser recreates it with its original
 * owner) or to the extension's owner.  The same block runs in the install
 * script (after the encoding check) and in the upgrade from 1.0, before
 * anything is created, so a refusal leaves the database as it was.  Every
 * name and operator is pg_catalog-qualified: the search_path here is the
 * extension's schema, which may be the squatted one.
 */
DO $squatting$
DECLARE
	secretenv_roles CONSTANT pg_catalog.name[] :=
		ARRAY['secretenv_reader', 'secretenv_writer', 'secretenv_admin'];
	r record;
	attrs pg_catalog.text;
	ext_owner pg_catalog.oid;
BEGIN
	FOR r IN
		SELECT a.rolname, a.rolcanlogin, a.rolsuper, a.rolcreaterole, a.rolcreatedb,
			   a.rolreplication, a.rolbypassrls
		FROM pg_catalog.pg_roles a
		WHERE a.rolname OPERATOR(pg_catalog.=) ANY (secretenv_roles)
		ORDER BY a.rolname
	LOOP
		attrs := pg_catalog.concat_ws(' ',
			CASE WHEN r.rolcanlogin THEN 'LOGIN' END,
			CASE WHEN r.rolsuper THEN 'SUPERUSER' END,
			CASE WHEN r.rolcreaterole THEN 'CREATEROLE' END,
			CASE WHEN r.rolcreatedb THEN 'CREATEDB' END,
			CASE WHEN r.rolreplication THEN 'REPLICATION' END,
			CASE WHEN r.rolbypassrls THEN 'BYPASSRLS' END);
		IF attrs OPERATOR(pg_catalog.<>) '' THEN
			RAISE EXCEPTION 'role "%" cannot be used by secretenv', r.rolname
				USING ERRCODE = 'insufficient_privilege',
					  DETAIL = pg_catalog.format('The role has %s; secretenv''s roles must be group roles without login and without cluster-wide attributes.',
												 attrs),
					  HINT = pg_catalog.format('Drop the role, or remove the attributes with ALTER ROLE %I%s, and retry.',
											   r.rolname,
											   pg_catalog.replace(' ' OPERATOR(pg_catalog.||) attrs, ' ', ' NO'));
		END IF;
	END LOOP;

	FOR r IN
		SELECT m.rolname AS member, g.rolname AS grp
		FROM pg_catalog.pg_auth_members am
			 JOIN pg_catalog.pg_roles m ON m.oid OPERATOR(pg_catalog.=) am.member
			 JOIN pg_catalog.pg_roles g ON g.oid OPERATOR(pg_catalog.=) am.roleid
		WHERE m.rolname OPERATOR(pg_catalog.=) ANY (secretenv_roles)
		  AND NOT g.rolname OPERATOR(pg_catalog.=) ANY (secretenv_roles)
		ORDER BY m.rolname, g.rolname
	LOOP
		RAISE EXCEPTION 'role "%" cannot be used by secretenv', r.member
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = pg_catalog.format('The role is a member of role "%s", whose privileges every member of "%s" would inherit.',
											 r.grp, r.member),
				  HINT = pg_catalog.format('Revoke the membership with REVOKE %I FROM %I, and retry.',
										   r.grp, r.member);
	END LOOP;

	/* CREATE EXTENSION inserts the extension's row before running this. */
	ext_owner := COALESCE((SELECT e.extowner FROM pg_catalog.pg_extension e
						   WHERE e.extname OPERATOR(pg_catalog.=) 'secretenv'),
						  0::pg_catalog.oid);
	FOR r IN
		SELECT o.rolname AS owner
		FROM pg_catalog.pg_namespace n
			 JOIN pg_catalog.pg_roles o ON o.oid OPERATOR(pg_catalog.=) n.nspowner
		WHERE n.nspname OPERATOR(pg_catalog.=) 'secretenv'
		  AND NOT o.rolsuper
		  AND n.nspowner OPERATOR(pg_catalog.<>) ext_owner
	LOOP
		RAISE EXCEPTION 'schema "secretenv" cannot be used by secretenv'
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = pg_catalog.format('The schema already exists and is owned by role "%s", which is not a superuser.',
											 r.owner),
				  HINT = pg_catalog.format('Drop the schema, or give it to the installing role with ALTER SCHEMA secretenv OWNER TO %I, and retry.',
										   CURRENT_USER);
	END LOOP;

	FOR r IN
		SELECT CASE WHEN g.grantee OPERATOR(pg_catalog.=) 0::pg_catalog.oid THEN 'PUBLIC'
					ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(g.grantee)) END AS grantee
		FROM pg_catalog.pg_namespace n,
			 LATERAL pg_catalog.aclexplode(n.nspacl) g
		WHERE n.nspname OPERATOR(pg_catalog.=) 'secretenv'
		  AND g.privilege_type OPERATOR(pg_catalog.=) 'CREATE'
		  AND g.grantee OPERATOR(pg_catalog.<>) n.nspowner
		  AND NOT COALESCE((SELECT s.rolsuper FROM pg_catalog.pg_roles s
							WHERE s.oid OPERATOR(pg_catalog.=) g.grantee), false)
		ORDER BY 1
	LOOP
		RAISE EXCEPTION 'schema "secretenv" cannot be used by secretenv'
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = pg_catalog.format('Role %s holds CREATE on the schema, so it could place objects beside secretenv''s.',
											 r.grantee),
				  HINT = pg_catalog.format('Revoke it with REVOKE CREATE ON SCHEMA secretenv FROM %s, and retry.',
										   r.grantee);
	END LOOP;

	/* Objects another role created while it could (CREATE since revoked). */
	FOR r IN
		SELECT i.type OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||) i.identity AS object,
			   pg_catalog.pg_get_userbyid(o.owner) AS owner
		FROM pg_catalog.pg_namespace n,
			 LATERAL (SELECT 'pg_catalog.pg_class'::pg_catalog.regclass, c.oid, c.relowner
					  FROM pg_catalog.pg_class c WHERE c.relnamespace OPERATOR(pg_catalog.=) n.oid
					  UNION ALL
					  SELECT 'pg_catalog.pg_proc'::pg_catalog.regclass, p.oid, p.proowner
					  FROM pg_catalog.pg_proc p WHERE p.pronamespace OPERATOR(pg_catalog.=) n.oid
					  UNION ALL
					  SELECT 'pg_catalog.pg_type'::pg_catalog.regclass, t.oid, t.typowner
					  FROM pg_catalog.pg_type t WHERE t.typnamespace OPERATOR(pg_catalog.=) n.oid
					  UNION ALL
					  SELECT 'pg_catalog.pg_operator'::pg_catalog.regclass, op.oid, op.oprowner
					  FROM pg_catalog.pg_operator op WHERE op.oprnamespace OPERATOR(pg_catalog.=) n.oid
					  UNION ALL
					  SELECT 'pg_catalog.pg_collation'::pg_catalog.regclass, co.oid, co.collowner
					  FROM pg_catalog.pg_collation co WHERE co.collnamespace OPERATOR(pg_catalog.=) n.oid
					  UNION ALL
					  SELECT 'pg_catalog.pg_conversion'::pg_catalog.regclass, cv.oid, cv.conowner
					  FROM pg_catalog.pg_conversion cv WHERE cv.connamespace OPERATOR(pg_catalog.=) n.oid
					  UNION ALL
					  SELECT 'pg_catalog.pg_opfamily'::pg_catalog.regclass, f.oid, f.opfowner
					  FROM pg_catalog.pg_opfamily f WHERE f.opfnamespace OPERATOR(pg_catalog.=) n.oid
					  UNION ALL
					  SELECT 'pg_catalog.pg_opclass'::pg_catalog.regclass, oc.oid, oc.opcowner
					  FROM pg_catalog.pg_opclass oc WHERE oc.opcnamespace OPERATOR(pg_catalog.=) n.oid
					  UNION ALL
					  SELECT 'pg_catalog.pg_ts_config'::pg_catalog.regclass, tc.oid, tc.cfgowner
					  FROM pg_catalog.pg_ts_config tc WHERE tc.cfgnamespace OPERATOR(pg_catalog.=) n.oid
					  UNION ALL
					  SELECT 'pg_catalog.pg_ts_dict'::pg_catalog.regclass, td.oid, td.dictowner
					  FROM pg_catalog.pg_ts_dict td WHERE td.dictnamespace OPERATOR(pg_catalog.=) n.oid
					  UNION ALL
					  SELECT 'pg_catalog.pg_statistic_ext'::pg_catalog.regclass, se.oid, se.stxowner
					  FROM pg_catalog.pg_statistic_ext se WHERE se.stxnamespace OPERATOR(pg_catalog.=) n.oid
					 ) o(classid, objid, owner)
			 JOIN pg_catalog.pg_roles ow ON ow.oid OPERATOR(pg_catalog.=) o.owner,
			 LATERAL pg_catalog.pg_identify_object(o.classid, o.objid, 0) i
		WHERE n.nspname OPERATOR(pg_catalog.=) 'secretenv'
		  AND NOT ow.rolsuper
		  AND o.owner OPERATOR(pg_catalog.<>) ext_owner
		ORDER BY 1
	LOOP
		RAISE EXCEPTION 'schema "secretenv" cannot be used by secretenv'
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = pg_catalog.format('The schema holds %s, owned by role "%s".', r.object, r.owner),
				  HINT = 'Drop the objects of roles that are not superusers from the schema, and retry.';
	END LOOP;
END
$squatting$;

/*
 * Roles.  They are cluster-wide objects, so they are created only when
 * absent and are not members of the extension (DROP EXTENSION keeps them).
 */
DO $roles$
DECLARE
	r text;
BEGIN
	FOREACH r IN ARRAY ARRAY['secretenv_reader', 'secretenv_writer', 'secretenv_admin']
	LOOP
		IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles
					   WHERE rolname OPERATOR(pg_catalog.=) r) THEN
			EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
		END IF;
	END LOOP;
END
$roles$;

/* Nothing in this schema is usable by PUBLIC unless granted below. */
REVOKE ALL ON SCHEMA secretenv FROM PUBLIC;
GRANT USAGE ON SCHEMA secretenv TO secretenv_reader, secretenv_writer, secretenv_admin;

CREATE TYPE secretenv.envelope AS (
	encrypted_value bytea,
	wrapped_dek bytea,
	kek_version int4
);
COMMENT ON TYPE secretenv.envelope IS
	'An envelope-encrypted value: nonce||ciphertext||tag under a DEK, the DEK wrapped under a KEK, and the KEK version';

-------------------------------------------------------------------------------
-- Stateless primitives
-------------------------------------------------------------------------------

CREATE FUNCTION secretenv.secret_encrypt(value text, secret_id uuid, secret_name text)
RETURNS secretenv.envelope
AS 'MODULE_PATHNAME', 'secret_encrypt_text_uuid'
LANGUAGE C STRICT VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION secretenv.secret_encrypt(text, uuid, text) IS
	'Encrypt a text secret under a fresh DEK bound to (secret_id, secret_name), wrapping the DEK under the current KEK';

CREATE FUNCTION secretenv.secret_encrypt(value text, secret_id text, secret_name text)
RETURNS secretenv.envelope
AS 'MODULE_PATHNAME', 'secret_encrypt_text_text'
LANGUAGE C STRICT VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION secretenv.secret_encrypt(text, text, text) IS
	'Encrypt a text secret under a fresh DEK bound to a text secret_id and secret_name';

CREATE FUNCTION secretenv.secret_encrypt(value jsonb, secret_id uuid, secret_name text)
RETURNS secretenv.envelope
AS 'MODULE_PATHNAME', 'secret_encrypt_jsonb_uuid'
LANGUAGE C STRICT VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION secretenv.secret_encrypt(jsonb, uuid, text) IS
	'Encrypt a structured secret (serialized to JSON text) bound to (secret_id, secret_name)';

CREATE FUNCTION secretenv.secret_encrypt(value jsonb, secret_id text, secret_name text)
RETURNS secretenv.envelope
AS 'MODULE_PATHNAME', 'secret_encrypt_jsonb_text'
LANGUAGE C STRICT VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION secretenv.secret_encrypt(jsonb, text, text) IS
	'Encrypt a structured secret (serialized to JSON text) bound to a text secret_id and secret_name';

CREATE FUNCTION secretenv.secret_decrypt(encrypted_value bytea, wrapped_dek bytea,
										 kek_version int4, secret_id uuid, secret_name text)
RETURNS text
AS 'MODULE_PATHNAME', 'secret_decrypt_uuid'
LANGUAGE C STRICT STABLE PARALLEL SAFE;
COMMENT ON FUNCTION secretenv.secret_decrypt(bytea, bytea, int4, uuid, text) IS
	'Decrypt a secret: unwrap its DEK with the KEK of kek_version, then open the value under (secret_id, secret_name)';

CREATE FUNCTION secretenv.secret_decrypt(encrypted_value bytea, wrapped_dek bytea,
										 kek_version int4, secret_id text, secret_name text)
RETURNS text
AS 'MODULE_PATHNAME', 'secret_decrypt_text'
LANGUAGE C STRICT STABLE PARALLEL SAFE;
COMMENT ON FUNCTION secretenv.secret_decrypt(bytea, bytea, int4, text, text) IS
	'Decrypt a secret bound to a text secret_id';

CREATE FUNCTION secretenv.secret_decrypt(envelope secretenv.envelope, secret_id uuid, secret_name text)
RETURNS text
AS 'MODULE_PATHNAME', 'secret_decrypt_envelope_uuid'
LANGUAGE C STRICT STABLE PARALLEL SAFE;
COMMENT ON FUNCTION secretenv.secret_decrypt(secretenv.envelope, uuid, text) IS
	'Decrypt a secret given as an envelope';

CREATE FUNCTION secretenv.secret_decrypt(envelope secretenv.envelope, secret_id text, secret_name text)
RETURNS text
AS 'MODULE_PATHNAME', 'secret_decrypt_envelope_text'
LANGUAGE C STRICT STABLE PARALLEL SAFE;
COMMENT ON FUNCTION secretenv.secret_decrypt(secretenv.envelope, text, text) IS
	'Decrypt a secret given as an envelope, bound to a text secret_id';

CREATE FUNCTION secretenv.secret_rewrap(wrapped_dek bytea, kek_version int4)
RETURNS bytea
AS 'MODULE_PATHNAME', 'secret_rewrap'
LANGUAGE C STRICT VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION secretenv.secret_rewrap(bytea, int4) IS
	'Re-wrap one DEK under the current KEK; the encrypted value does not change';

CREATE FUNCTION secretenv.current_kek_version()
RETURNS int4
AS 'MODULE_PATHNAME', 'secret_current_kek_version'
LANGUAGE C STRICT STABLE PARALLEL SAFE;
COMMENT ON FUNCTION secretenv.current_kek_version() IS
	'Version of the current KEK (secretenv.kek_version); new wraps use it';

CREATE FUNCTION secretenv.kek_is_configured(kek_version int4)
RETURNS boolean
AS 'MODULE_PATHNAME', 'secret_kek_is_configured'
LANGUAGE C STRICT STABLE PARALLEL SAFE;
COMMENT ON FUNCTION secretenv.kek_is_configured(int4) IS
	'Whether a KEK (current or previous) is configured for this version';

CREATE FUNCTION secretenv.kek_opens(wrapped_dek bytea, kek_version int4)
RETURNS boolean
AS 'MODULE_PATHNAME', 'secret_kek_opens'
LANGUAGE C STRICT STABLE PARALLEL SAFE;
COMMENT ON FUNCTION secretenv.kek_opens(bytea, int4) IS
	'Whether the configured KEK of this version opens the wrapped DEK (never returns the DEK)';

CREATE FUNCTION secretenv.secret_mask(value text)
RETURNS text
AS 'MODULE_PATHNAME', 'secret_mask_text'
LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION secretenv.secret_mask(text) IS
	'Display mask: first 3 characters, "...", last 4; "***" below 8 characters';

CREATE FUNCTION secretenv.secret_mask(value jsonb)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'secret_mask_jsonb'
LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION secretenv.secret_mask(jsonb) IS
	'Display mask of an object: every string value masked, every other value "***"';

CREATE FUNCTION secretenv.forbid_identity_change()
RETURNS trigger
AS 'MODULE_PATHNAME', 'secret_forbid_identity_change'
LANGUAGE C;
COMMENT ON FUNCTION secretenv.forbid_identity_change() IS
	'Row trigger: the columns named in its arguments may never change (they are part of the AAD)';

CREATE FUNCTION secretenv.check_envelope()
RETURNS trigger
AS 'MODULE_PATHNAME', 'secret_check_envelope'
LANGUAGE C;
COMMENT ON FUNCTION secretenv.check_envelope() IS
	'Row trigger: refuse a new or changed row whose envelope (columns named in its arguments) does not open';

CREATE FUNCTION secretenv.key_config()
RETURNS jsonb
AS 'MODULE_PATHNAME', 'secret_key_config'
LANGUAGE C STRICT VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION secretenv.key_config() IS
	'Key configuration of this backend: versions, default-passphrase use, preload; never key material';

/*
 * Rotation, re-encryption and status() first apply a configuration reload
 * that the server has loaded but this session has not (pg_reload_conf()
 * returns before any backend applies it), so that they never act on a
 * stale view of the keys.
 */
CREATE FUNCTION secretenv.loaded_kek_version()
RETURNS int4
AS 'MODULE_PATHNAME', 'secret_loaded_kek_version'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION secretenv.loaded_kek_version() IS
	'Apply the key settings the server last loaded to this session, then return the current KEK version';

-------------------------------------------------------------------------------
-- Managed store
-------------------------------------------------------------------------------

CREATE TABLE secretenv.secrets (
	secret_id uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
	secret_name text NOT NULL UNIQUE,
	encrypted_value bytea NOT NULL,
	wrapped_dek bytea NOT NULL,
	kek_version int4 NOT NULL CHECK (kek_version >= 1),
	masked_value jsonb,
	provider text,
	description text,
	created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
	created_by name NOT NULL DEFAULT CURRENT_USER,
	last_updated_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
	last_updated_by name NOT NULL DEFAULT CURRENT_USER,
	/*
	 * When the value was last encrypted under a fresh DEK; NULL when that
	 * is unknown.  Only the trigger secrets_value_encrypted_at writes it
	 * (secret_reencrypt selects rows by it), whatever a statement puts here.
	 */
	value_encrypted_at timestamptz,
	/*
	 * 1024 bytes keeps every name well inside a btree entry of the unique
	 * index (at most about 2700 bytes, less than that for names that do not
	 * compress); a blank name is always a mistake.  The functions below say
	 * so with their own SQLSTATEs; this also covers direct writes.  The
	 * whitespace characters beyond ASCII (Unicode White_Space) are chr() of
	 * their code points: a U&'' literal would fail to parse under
	 * standard_conforming_strings = off, and in a database that is not
	 * UTF8 before the encoding check above could say why.
	 */
	CONSTRAINT secrets_name_valid CHECK (octet_length(secret_name) <= 1024 AND
		btrim(secret_name, E' \t\n\r\f\v' ||
			  pg_catalog.chr(133) || pg_catalog.chr(160) || pg_catalog.chr(5760) || pg_catalog.chr(8192) || pg_catalog.chr(8193) || pg_catalog.chr(8194) ||
			  pg_catalog.chr(8195) || pg_catalog.chr(8196) || pg_catalog.chr(8197) || pg_catalog.chr(8198) || pg_catalog.chr(8199) || pg_catalog.chr(8200) ||
			  pg_catalog.chr(8201) || pg_catalog.chr(8202) || pg_catalog.chr(8232) || pg_catalog.chr(8233) || pg_catalog.chr(8239) || pg_catalog.chr(8287) ||
			  pg_catalog.chr(12288)) <> '')
);
COMMENT ON TABLE secretenv.secrets IS
	'Envelope-encrypted secrets; secret_id and secret_name are immutable (they are the AAD)';
SELECT pg_catalog.pg_extension_config_dump('secretenv.secrets', '');

/*
 * The AAD is secret_id|secret_name: renaming or re-identifying a row would
 * make its value undecryptable, so the database forbids it for every role.
 * ENABLE ALWAYS keeps the trigger firing under session_replication_role =
 * replica, which would otherwise silence it.
 */
CREATE TRIGGER secrets_identity_immutable
	BEFORE UPDATE ON secretenv.secrets
	FOR EACH ROW EXECUTE FUNCTION secretenv.forbid_identity_change('secret_id', 'secret_name');
ALTER TABLE secretenv.secrets ENABLE ALWAYS TRIGGER secrets_identity_immutable;

/*
 * Row-level security (DESIGN section 7f) applies only to the role a statement runs
 * as, so the write functions below run with the caller's rights and
 * secretenv_writer holds INSERT, UPDATE and DELETE on this table (the
 * columns those functions write, no more).  That also lets a writer write
 * the envelope columns directly, and a row whose envelope does not open
 * would fail every read of it, stop secret_rotate_all() and make the key
 * health check report that the KEK does not open its version.  So every
 * such write is opened and refused if it does not open (check_envelope:
 * 22S01 to 22S04), except by roles that may TRUNCATE the table: its
 * owner and superusers, hence the SECURITY DEFINER rotation functions
 * (nothing to check: they rewrap what opened) and the restore of a dump
 * (which must load rows whose KEK is not configured yet).  Such a role can
 * destroy every row anyway and can disable this trigger.  ENABLE ALWAYS,
 * like the store's other triggers, so it fires whatever
 * session_replication_role says.
 */
CREATE TRIGGER secrets_check_envelope
	BEFORE INSERT OR UPDATE OF encrypted_value, wrapped_dek, kek_version ON secretenv.secrets
	FOR EACH ROW
	WHEN (NOT pg_catalog.has_table_privilege('secretenv.secrets'::pg_catalog.regclass, 'TRUNCATE'))
	EXECUTE FUNCTION secretenv.check_envelope('encrypted_value', 'wrapped_dek', 'kek_version',
											  'secret_id', 'secret_name');
ALTER TABLE secretenv.secrets ENABLE ALWAYS TRIGGER secrets_check_envelope;

/*
 * value_encrypted_at is set from what only this backend knows: now() for an
 * envelope it sealed under a fresh DEK in this transaction, the old time
 * when the ciphertext did not change (a rotation), NULL (unknown) for any
 * other envelope; see src/secrets/encryption_time.c.  ENABLE ALWAYS, like the
 * store's other triggers.
 */
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

/*
 * The managed store is written through the functions of the section
 * "Secret versions" at the end (secret_create, secret_update,
 * secret_delete, ...).  Text and jsonb values share two internal
 * functions, insert_secret and replace_secret_value: a jsonb secret is
 * encrypted as its text form, which is exactly what secret_encrypt(jsonb)
 * produces.
 *
 * secret_create, secret_update and secret_delete run with the caller's
 * rights (SECURITY INVOKER), so that row-level security on
 * secretenv.secrets applies to them exactly as to the caller's own
 * statements: a row the caller's policies hide is absent (P0002 from
 * secret_update, false from secret_delete) and an INSERT policy's WITH
 * CHECK refuses a new row (42501).  A SECURITY DEFINER function would run
 * as the table's owner, a superuser, for whom row-level security never
 * applies, and PostgreSQL offers a definer function no way back to its
 * caller's policies (SET ROLE is refused inside it).  What this costs:
 * secretenv_writer holds the table privileges these functions use (see
 * the grants at the end), and the trigger above keeps direct writes of
 * envelopes honest.  The search_path stays pinned all the same.
 */
CREATE FUNCTION secretenv.secret_get(secret_name text)
RETURNS text
AS 'MODULE_PATHNAME', 'secret_get'
LANGUAGE C STRICT STABLE PARALLEL RESTRICTED;
COMMENT ON FUNCTION secretenv.secret_get(text) IS
	'Decrypted value of a stored secret, served from the per-backend credential cache when fresh';

CREATE FUNCTION secretenv.cache_clear()
RETURNS void
AS 'MODULE_PATHNAME', 'secret_cache_clear'
LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION secretenv.cache_clear() IS
	'Wipe every entry and bucket key of this backend''s credential cache';

CREATE FUNCTION secretenv.cache_stats()
RETURNS jsonb
AS 'MODULE_PATHNAME', 'secret_cache_stats'
LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION secretenv.cache_stats() IS
	'Counters and settings of this backend''s credential cache';

/*
 * Any committed change to the table must reach every backend's credential
 * cache: this statement-level trigger queues a relcache invalidation of the
 * table, which every backend receives when the change commits.
 */
CREATE FUNCTION secretenv.invalidate_secret_caches()
RETURNS trigger
AS 'MODULE_PATHNAME', 'secret_invalidate_caches'
LANGUAGE C;
COMMENT ON FUNCTION secretenv.invalidate_secret_caches() IS
	'Trigger: drop every backend''s cached secrets when secretenv.secrets changes';

CREATE TRIGGER secrets_invalidate_caches
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON secretenv.secrets
	FOR EACH STATEMENT EXECUTE FUNCTION secretenv.invalidate_secret_caches();
ALTER TABLE secretenv.secrets ENABLE ALWAYS TRIGGER secrets_invalidate_caches;

/*
 * Logical replication apply runs no statement triggers: on a subscriber of
 * secretenv.secrets this row trigger, enabled for replica sessions only
 * (apply workers), is what invalidates the caches.  Ordinary sessions do
 * not fire it, so it costs a primary nothing per row.
 */
CREATE TRIGGER secrets_invalidate_caches_on_apply
	BEFORE INSERT OR UPDATE OR DELETE ON secretenv.secrets
	FOR EACH ROW EXECUTE FUNCTION secretenv.invalidate_secret_caches();
ALTER TABLE secretenv.secrets ENABLE REPLICA TRIGGER secrets_invalidate_caches_on_apply;

CREATE FUNCTION secretenv.key_inventory()
RETURNS TABLE (database text, kek_version int4, rows bigint, kek_state text,
			   counted boolean, checked_at timestamptz)
AS 'MODULE_PATHNAME', 'secret_key_inventory'
LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION secretenv.key_inventory() IS
	'Latest key health check of every database that has secretenv (with preload; else this database): rows and KEK state per version';

CREATE FUNCTION secretenv.audit_stats()
RETURNS jsonb
AS 'MODULE_PATHNAME', 'audit_stats'
LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION secretenv.audit_stats() IS
	'Access audit settings and counters of the queue: queued, written, dropped, given up, failures';

/*
 * DROP EXTENSION secretenv would delete every stored secret without a
 * word; so would DROP SCHEMA secretenv CASCADE and DROP OWNED BY the owner.
 * This event trigger refuses them while secretenv.secrets holds rows,
 * unless a superuser set secretenv.allow_drop_with_secrets in the session.
 * An event trigger fires in every session, also without preload; ENABLE
 * ALWAYS keeps it firing under session_replication_role = replica.
 */
CREATE FUNCTION secretenv.drop_guard()
RETURNS event_trigger
AS 'MODULE_PATHNAME', 'secret_drop_guard'
LANGUAGE C;
COMMENT ON FUNCTION secretenv.drop_guard() IS
	'Event trigger: refuse to drop secretenv while secretenv.secrets holds secrets';

CREATE EVENT TRIGGER secretenv_drop_guard ON ddl_command_start
	WHEN TAG IN ('DROP EXTENSION', 'DROP SCHEMA', 'DROP OWNED')
	EXECUTE FUNCTION secretenv.drop_guard();
ALTER EVENT TRIGGER secretenv_drop_guard ENABLE ALWAYS;

-------------------------------------------------------------------------------
-- Key lifecycle at scale: batched rotation, re-encryption, retirement
-------------------------------------------------------------------------------

CREATE FUNCTION secretenv.reencrypt_envelope(encrypted_value bytea, wrapped_dek bytea,
											 kek_version int4, secret_id uuid, secret_name text)
RETURNS secretenv.envelope
AS 'MODULE_PATHNAME', 'secret_reencrypt_envelope'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION secretenv.reencrypt_envelope(bytea, bytea, int4, uuid, text) IS
	'Internal to secret_reencrypt: open a value and seal it again under a fresh DEK and the current KEK, inside the server';

/*
 * A batched run walks the table's blocks in windows of about batch_size
 * rows (a TID range scan, so a batch never reads the whole table), one
 * UPDATE and one transaction per window.  The UPDATE re-checks its
 * condition on the newest version of a row it had to wait for, so a second
 * run working at the same time waits for the first one's window and then
 * skips what it did: no row is done twice.  Rows are locked in physical
 * order, so two runs never deadlock.  A pass ends at the last block the
 * table had when it began; the run makes passes until one finds nothing
 * left to change (rows moved or written behind the scan by concurrent
 * updates are caught by the next pass).  The procedures keep this state
 * between their COMMITs.
 */
CREATE TYPE secretenv.batch_run AS (
	operation text,
	tbl regclass,
	wrapped_dek_column name,
	kek_version_column name,
	since timestamptz,
	batch_size int4,
	pass int4,
	table_blocks int8,
	next_block int8,
	window_blocks int8,
	densest_block int8,
	pass_changed int8,
	changed int8,
	batches int8,
	longest_batch interval,
	done boolean
);
COMMENT ON TYPE secretenv.batch_run IS
	'Progress of a batched secret_rotate, rotate_table or secret_reencrypt run between its transactions';

/*
 * One window of secret_rotate: runs as the table's owner, like
 * secret_rotate_all.  The KEK version is not named current_version: that
 * is a column of secretenv.secrets (section "Secret versions").
 */
CREATE FUNCTION secretenv.rotate_secrets_batch(first_block int8, blocks int8,
											   OUT changed int8, OUT seen int8)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	target_version int4 := secretenv.loaded_kek_version();
	lo tid := format('(%s,0)', first_block)::tid;
	hi tid := format('(%s,0)', first_block OPERATOR(pg_catalog.+) blocks)::tid;
BEGIN
	SELECT count(*) INTO seen FROM secretenv.secrets s
	WHERE s.ctid OPERATOR(pg_catalog.>=) lo AND s.ctid OPERATOR(pg_catalog.<) hi;

	/* Re-wrap only: encrypted_value and last_updated_at do not change. */
	UPDATE secretenv.secrets s
	SET wrapped_dek = secretenv.secret_rewrap(s.wrapped_dek, s.kek_version),
		kek_version = target_version
	WHERE s.ctid OPERATOR(pg_catalog.>=) lo AND s.ctid OPERATOR(pg_catalog.<) hi
	  AND s.kek_version OPERATOR(pg_catalog.<>) target_version;
	GET DIAGNOSTICS changed = ROW_COUNT;
END
$$;
COMMENT ON FUNCTION secretenv.rotate_secrets_batch(int8, int8) IS
	'Internal to secret_rotate: re-wrap the rows of a block range not on the current KEK';

/*
 * One window of secret_reencrypt, as the table's owner.  Rows are chosen by
 * value_encrypted_at, which only secretenv writes (a writer could set
 * last_updated_at to any time); NULL, an unknown time, counts as before any
 * cutoff.  A re-encrypted row is stamped value_encrypted_at = now() by the
 * trigger, which is not before the cutoff, so a run that is resumed does
 * not do it again.
 */
CREATE FUNCTION secretenv.reencrypt_secrets_batch(since timestamptz, first_block int8, blocks int8,
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

/*
 * One window of rotate_table.  It runs with the caller's rights on the
 * table (SECURITY INVOKER): rotating a table needs UPDATE on it.  The
 * statement is built from the table's catalog names and the column names,
 * each quoted with %I, with every operator schema-qualified.
 */
CREATE FUNCTION secretenv.rotate_table_batch(tbl regclass, wrapped_dek_column name,
											 kek_version_column name, first_block int8, blocks int8,
											 OUT changed int8, OUT seen int8)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	current_version int4 := secretenv.loaded_kek_version();
	lo tid := format('(%s,0)', first_block)::tid;
	hi tid := format('(%s,0)', first_block OPERATOR(pg_catalog.+) blocks)::tid;
	target text;
BEGIN
	SELECT format('%I.%I', n.nspname, c.relname) INTO STRICT target
	FROM pg_catalog.pg_class c
		 JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
	WHERE c.oid OPERATOR(pg_catalog.=) tbl;

	EXECUTE format('SELECT count(*) FROM %s t '
				   'WHERE t.ctid OPERATOR(pg_catalog.>=) $1 AND t.ctid OPERATOR(pg_catalog.<) $2',
				   target)
		INTO seen USING lo, hi;

	EXECUTE format('UPDATE %1$s t SET %2$I = secretenv.secret_rewrap(t.%2$I, t.%3$I), %3$I = $3 '
				   'WHERE t.ctid OPERATOR(pg_catalog.>=) $1 AND t.ctid OPERATOR(pg_catalog.<) $2 '
				   '  AND t.%3$I OPERATOR(pg_catalog.<>) $3',
				   target, wrapped_dek_column, kek_version_column)
		USING lo, hi, current_version;
	GET DIAGNOSTICS changed = ROW_COUNT;
END
$$;
COMMENT ON FUNCTION secretenv.rotate_table_batch(regclass, name, name, int8, int8) IS
	'Internal to rotate_table: re-wrap the rows of a block range of an application table not on the current KEK';

/*
 * Check the arguments of a run and describe its first pass.  Besides
 * rotate, rotate_table and reencrypt, a run may be rotate_versions or
 * reencrypt_versions, over secretenv.secret_versions (secret_rotate and
 * secret_reencrypt do both tables).
 */
CREATE FUNCTION secretenv.batch_run_start(operation text, tbl regclass, wrapped_dek_column name,
										  kek_version_column name, since timestamptz,
										  batch_size int4)
RETURNS secretenv.batch_run
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	run secretenv.batch_run;
	col record;
BEGIN
	IF operation IS NULL OR tbl IS NULL
	   OR NOT operation OPERATOR(pg_catalog.=) ANY (ARRAY['rotate', 'rotate_table', 'reencrypt',
														  'rotate_versions', 'reencrypt_versions']) THEN
		RAISE EXCEPTION 'unknown batched operation'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF batch_size IS NULL OR batch_size OPERATOR(pg_catalog.<) 1 THEN
		RAISE EXCEPTION 'batch size must be at least 1'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('The given batch size is %s.', COALESCE(batch_size::text, 'NULL'));
	END IF;
	IF operation OPERATOR(pg_catalog.=) ANY (ARRAY['reencrypt', 'reencrypt_versions'])
	   AND (since IS NULL OR since OPERATOR(pg_catalog.>) now()) THEN
		RAISE EXCEPTION 're-encryption cutoff must not be null or in the future'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'Re-encrypted rows are stamped with the current time; a later cutoff would select them again.',
				  HINT = 'Pass the time of the suspected compromise, or now().';
	END IF;
	IF operation OPERATOR(pg_catalog.=) 'rotate_table' THEN
		IF (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) tbl)
		   OPERATOR(pg_catalog.<>) 'r' THEN
			RAISE EXCEPTION '"%" is not a table', tbl
				USING ERRCODE = 'wrong_object_type',
					  HINT = 'Rotate each partition of a partitioned table separately.';
		END IF;
		FOR col IN
			SELECT v.colname, v.wanted, a.atttypid
			FROM (VALUES (wrapped_dek_column, 'pg_catalog.bytea'::pg_catalog.regtype),
						 (kek_version_column, 'pg_catalog.int4'::pg_catalog.regtype)) v(colname, wanted)
				 LEFT JOIN pg_catalog.pg_attribute a
					ON a.attrelid OPERATOR(pg_catalog.=) tbl
				   AND a.attname OPERATOR(pg_catalog.=) v.colname
				   AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
		LOOP
			IF col.colname IS NULL OR col.atttypid IS NULL THEN
				RAISE EXCEPTION 'column "%" of relation "%" does not exist', col.colname, tbl
					USING ERRCODE = 'undefined_column';
			END IF;
			IF col.atttypid OPERATOR(pg_catalog.<>) col.wanted THEN
				RAISE EXCEPTION 'column "%" of relation "%" is of type %', col.colname, tbl,
								col.atttypid::pg_catalog.regtype
					USING ERRCODE = 'datatype_mismatch',
						  DETAIL = format('A wrapped DEK column must be of type bytea and a KEK version column of type integer; this one should be %s.',
										  col.wanted);
			END IF;
		END LOOP;
	END IF;

	run.operation := operation;
	run.tbl := tbl;
	run.wrapped_dek_column := wrapped_dek_column;
	run.kek_version_column := kek_version_column;
	run.since := since;
	run.batch_size := batch_size;
	run.pass := 1;
	run.table_blocks := pg_relation_size(tbl) OPERATOR(pg_catalog./) current_setting('block_size')::int8;
	run.next_block := 0;
	run.window_blocks := 1;
	/* Rows per block: the table's average to begin with, at least 4. */
	run.densest_block := greatest(4, (SELECT ceil(c.reltuples OPERATOR(pg_catalog./) c.relpages)::int8
									   FROM pg_catalog.pg_class c
									   WHERE c.oid OPERATOR(pg_catalog.=) tbl
										 AND c.relpages OPERATOR(pg_catalog.>) 0
										 AND c.reltuples OPERATOR(pg_catalog.>) 0));
	run.pass_changed := 0;
	run.changed := 0;
	run.batches := 0;
	run.longest_batch := '0'::interval;
	run.done := false;
	RETURN run;
END
$$;
COMMENT ON FUNCTION secretenv.batch_run_start(text, regclass, name, name, timestamptz, int4) IS
	'Internal to the batched procedures: check their arguments and describe the first pass';

/*
 * batch_run_step, which does the windows, and the procedures that drive
 * a run are in section "Secret versions", after secretenv.secret_versions:
 * secret_rotate and secret_reencrypt walk the versions too.
 */
REVOKE ALL ON FUNCTION
	secretenv.loaded_kek_version(),
	secretenv.reencrypt_envelope(bytea, bytea, int4, uuid, text),
	secretenv.rotate_secrets_batch(int8, int8),
	secretenv.reencrypt_secrets_batch(timestamptz, int8, int8),
	secretenv.rotate_table_batch(regclass, name, name, int8, int8),
	secretenv.batch_run_start(text, regclass, name, name, timestamptz, int4)
	FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
	secretenv.loaded_kek_version(),
	secretenv.rotate_secrets_batch(int8, int8),
	secretenv.reencrypt_secrets_batch(timestamptz, int8, int8),
	secretenv.rotate_table_batch(regclass, name, name, int8, int8),
	secretenv.batch_run_start(text, regclass, name, name, timestamptz, int4)
	TO secretenv_admin;

-------------------------------------------------------------------------------
-- Privileges: nothing sensitive is executable by PUBLIC
-------------------------------------------------------------------------------

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA secretenv FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA secretenv FROM PUBLIC;

-- masking reveals nothing, and any table owner may protect identity columns
GRANT EXECUTE ON FUNCTION secretenv.secret_mask(text), secretenv.secret_mask(jsonb),
	secretenv.forbid_identity_change() TO PUBLIC;

GRANT EXECUTE ON FUNCTION
	secretenv.secret_decrypt(bytea, bytea, int4, uuid, text),
	secretenv.secret_decrypt(bytea, bytea, int4, text, text),
	secretenv.secret_decrypt(secretenv.envelope, uuid, text),
	secretenv.secret_decrypt(secretenv.envelope, text, text),
	secretenv.secret_get(text),
	secretenv.cache_clear()
	TO secretenv_reader;
GRANT SELECT ON secretenv.secrets TO secretenv_reader;

GRANT EXECUTE ON FUNCTION
	secretenv.secret_encrypt(text, uuid, text),
	secretenv.secret_encrypt(text, text, text),
	secretenv.secret_encrypt(jsonb, uuid, text),
	secretenv.secret_encrypt(jsonb, text, text),
	secretenv.current_kek_version()
	TO secretenv_writer;

GRANT EXECUTE ON FUNCTION
	secretenv.secret_rewrap(bytea, int4),
	secretenv.key_config(),
	secretenv.key_inventory(),
	secretenv.kek_is_configured(int4),
	secretenv.kek_opens(bytea, int4),
	secretenv.current_kek_version(),
	secretenv.cache_stats(),
	secretenv.cache_clear()
	TO secretenv_admin;

-- The table privileges behind the security_invoker views and the
-- SECURITY INVOKER write functions (row-level security, DESIGN section 7f):
-- masked_secrets' columns, never encrypted_value or wrapped_dek; a writer
-- inserts and updates only the columns secret_create and secret_update
-- write (not provider, description or created_at after the fact), and its
-- envelopes are checked by the trigger secrets_check_envelope.
GRANT SELECT (secret_id, secret_name, masked_value, kek_version, provider, description,
			  created_at, created_by, last_updated_at, last_updated_by, value_encrypted_at)
	ON secretenv.secrets TO secretenv_writer, secretenv_admin;
GRANT INSERT (secret_id, secret_name, encrypted_value, wrapped_dek, kek_version, masked_value,
			  provider, description, created_by, last_updated_by)
	ON secretenv.secrets TO secretenv_writer;
GRANT UPDATE (encrypted_value, wrapped_dek, kek_version, masked_value,
			  last_updated_at, last_updated_by)
	ON secretenv.secrets TO secretenv_writer;
GRANT DELETE ON secretenv.secrets TO secretenv_writer;

-- check_envelope answers whether an envelope opens for an id and name: an
-- oracle on ciphertexts (never a plaintext), so not for PUBLIC.
GRANT EXECUTE ON FUNCTION secretenv.check_envelope()
	TO secretenv_reader, secretenv_writer, secretenv_admin;

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
-- By time only, and as a block range (BRIN) index: records arrive in time
-- order, so each 128-page range covers a short span of event_time, and a
-- record costs the writer no index entry of its own (a B-tree entry per
-- record was a fifth of the writer's work, docs/audit.md "Cost"; one on
-- the name would have been half).  "Who read X last week" scans the
-- week's ranges and filters by name; autosummarize has autovacuum
-- summarize each range as it fills (ranges not yet summarized are always
-- scanned, so no record is missed).
CREATE INDEX audit_log_time ON secretenv.audit_log USING brin (event_time)
	WITH (autosummarize = on);
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

REVOKE ALL ON secretenv.audit_log FROM PUBLIC;
GRANT SELECT ON secretenv.audit_log TO secretenv_admin;
REVOKE ALL ON FUNCTION
	secretenv.audit_log_guard(),
	secretenv.audit_secret_write(),
	secretenv.audit_verify(),
	secretenv.audit_purge(timestamptz),
	secretenv.audit_stats()
	FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
	secretenv.audit_verify(),
	secretenv.audit_purge(timestamptz),
	secretenv.audit_stats()
	TO secretenv_admin;

-------------------------------------------------------------------------------
-- Secret versions, staged rotation, deletion with recovery (DESIGN section 8c)
-------------------------------------------------------------------------------

/*
 * secretenv--1.1--1.2.sql has this section too: it turns the 1.1 store
 * into the versioned one with the same statements for everything new here.
 * The upgrade also drops the 1.1 functions whose signature changes
 * (insert_secret, replace_secret_value, secret_create, secret_update,
 * secret_delete, verify_secrets), and replaces with CREATE OR REPLACE the
 * objects it already has that now read the versions or the new columns
 * (masked_secrets, decrypted_secrets, secret_rotate_all,
 * rotate_secrets_batch, batch_run_start, batch_run_step, secret_rotate,
 * secret_reencrypt, status), dropping the five-argument
 * secret_decrypt_stored that decrypted_secrets called.  This script
 * creates each object once, in its final form: here, after what it
 * depends on, or in a section above when it needs nothing of this one.
 *
 * The current version of a secret stays in secretenv.secrets, in MLflow's
 * byte format and columns; current_version numbers it.  Every other version
 * (pending, previous, deprecated) is a row of secretenv.secret_versions with
 * an envelope of its own (its own DEK, wrapped under some KEK version), so
 * that no version ever needs re-encrypting when another one changes.  A
 * version moves between the two tables as its envelope bytes: promotion,
 * rollback and the demotion of the current value never decrypt anything.
 *
 * Deletion is a mark (deleted_at, destroy_after): the row and its versions
 * stay where they are, and every read path of secretenv hides them, until
 * secret_restore clears the mark or a destroy deletes the row (its
 * versions go with it, trigger secrets_destroy_versions): secret_destroy,
 * secret_delete(name, recovery_window => '0'), or purge_deleted() once
 * destroy_after has passed.
 */
ALTER TABLE secretenv.secrets
	ADD COLUMN current_version int4 NOT NULL DEFAULT 1 CONSTRAINT secrets_current_version_valid CHECK (current_version >= 1),
	ADD COLUMN expires_at timestamptz,
	ADD COLUMN labels jsonb NOT NULL DEFAULT '{}' CONSTRAINT secrets_labels_object CHECK (pg_catalog.jsonb_typeof(labels) OPERATOR(pg_catalog.=) 'object'),
	ADD COLUMN deleted_at timestamptz,
	ADD COLUMN destroy_after timestamptz;
COMMENT ON COLUMN secretenv.secrets.current_version IS
	'Version number of the value in this row; the other versions are in secretenv.secret_versions';
COMMENT ON COLUMN secretenv.secrets.deleted_at IS
	'Set by secret_delete: the secret is hidden and can be restored until destroy_after';

CREATE TABLE secretenv.secret_versions (
	/* Of a row of secretenv.secrets: see secrets_destroy_versions below. */
	secret_id uuid NOT NULL,
	/* The AAD is secret_id|secret_name, as for the current value. */
	secret_name text NOT NULL,
	version int4 NOT NULL CHECK (version >= 1),
	state text NOT NULL CHECK (state IN ('pending', 'previous', 'deprecated')),
	encrypted_value bytea NOT NULL,
	wrapped_dek bytea NOT NULL,
	kek_version int4 NOT NULL CHECK (kek_version >= 1),
	masked_value jsonb,
	created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
	created_by name NOT NULL DEFAULT CURRENT_USER,
	value_encrypted_at timestamptz,
	PRIMARY KEY (secret_id, version)
);
COMMENT ON TABLE secretenv.secret_versions IS
	'Non-current versions of the secrets of secretenv.secrets (pending, previous, deprecated), each with its own envelope';
/* At most one pending version per secret. */
CREATE UNIQUE INDEX secret_versions_one_pending ON secretenv.secret_versions (secret_id)
	WHERE state = 'pending';
SELECT pg_catalog.pg_extension_config_dump('secretenv.secret_versions', '');

/* The same guarantees as the rows of secretenv.secrets; see there. */
CREATE TRIGGER secret_versions_identity_immutable
	BEFORE UPDATE ON secretenv.secret_versions
	FOR EACH ROW EXECUTE FUNCTION secretenv.forbid_identity_change('secret_id', 'secret_name', 'version');
ALTER TABLE secretenv.secret_versions ENABLE ALWAYS TRIGGER secret_versions_identity_immutable;
CREATE TRIGGER secret_versions_check_envelope
	BEFORE INSERT OR UPDATE OF encrypted_value, wrapped_dek, kek_version ON secretenv.secret_versions
	FOR EACH ROW
	WHEN (NOT pg_catalog.has_table_privilege('secretenv.secret_versions'::pg_catalog.regclass, 'TRUNCATE'))
	EXECUTE FUNCTION secretenv.check_envelope('encrypted_value', 'wrapped_dek', 'kek_version',
											  'secret_id', 'secret_name');
ALTER TABLE secretenv.secret_versions ENABLE ALWAYS TRIGGER secret_versions_check_envelope;
CREATE TRIGGER secret_versions_value_encrypted_at
	BEFORE INSERT OR UPDATE ON secretenv.secret_versions
	FOR EACH ROW EXECUTE FUNCTION secretenv.stamp_value_encrypted();
ALTER TABLE secretenv.secret_versions ENABLE ALWAYS TRIGGER secret_versions_value_encrypted_at;

/*
 * A version is visible to a role exactly when its secret is: the policy
 * reads secretenv.secrets with the role's own policies (hand-written ones
 * and the access rules alike), so a secret a role cannot see has no
 * versions for it either.  Created by this script, like the access rules'
 * policies, so a restore that runs CREATE EXTENSION has it again.
 */
CREATE POLICY secret_versions_follow_secret ON secretenv.secret_versions AS PERMISSIVE FOR ALL TO PUBLIC
	USING (EXISTS (SELECT FROM secretenv.secrets s
				   WHERE s.secret_id OPERATOR(pg_catalog.=) secret_versions.secret_id))
	WITH CHECK (EXISTS (SELECT FROM secretenv.secrets s
						WHERE s.secret_id OPERATOR(pg_catalog.=) secret_versions.secret_id));
ALTER TABLE secretenv.secret_versions ENABLE ROW LEVEL SECURITY;

/* A stage is an operation on the secret: recorded by the access audit. */
CREATE FUNCTION secretenv.audit_version_write()
RETURNS trigger
AS 'MODULE_PATHNAME', 'secret_audit_version_write'
LANGUAGE C;
COMMENT ON FUNCTION secretenv.audit_version_write() IS
	'Trigger: an audit record for each version staged in secretenv.secret_versions';
CREATE TRIGGER secret_versions_audit_write
	AFTER INSERT ON secretenv.secret_versions
	FOR EACH ROW WHEN (NEW.state OPERATOR(pg_catalog.=) 'pending')
	EXECUTE FUNCTION secretenv.audit_version_write();

/*
 * A secret's versions go with its row: a destroy (secret_destroy,
 * secret_delete(name, recovery_window => '0'), purge_deleted(), or a
 * direct DELETE or TRUNCATE of secretenv.secrets) deletes them in the same
 * statement.  A trigger rather than a foreign key with ON DELETE CASCADE:
 * a key checks each version an update keeps against secretenv.secrets
 * with a query that is planned again after every update (each one
 * invalidates secretenv.secrets' cached plans, for the credential caches),
 * about a sixth of secret_update's cost.  Only secretenv's functions (and
 * the owner) write versions, always of a row they have just locked.  As
 * the owner: the deleting role's policies no longer see the row, and a
 * writer holds no TRUNCATE.  Enabled for origin sessions only, as the key
 * was: on a logical subscriber the deletes of the versions arrive
 * replicated.
 */
CREATE FUNCTION secretenv.destroy_versions()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF TG_OP OPERATOR(pg_catalog.=) 'TRUNCATE' THEN
		TRUNCATE secretenv.secret_versions;
	ELSE
		DELETE FROM secretenv.secret_versions v
		WHERE v.secret_id OPERATOR(pg_catalog.=) OLD.secret_id;
	END IF;
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION secretenv.destroy_versions() IS
	'Trigger: delete the versions of the secrets deleted (or truncated) from secretenv.secrets';
CREATE TRIGGER secrets_destroy_versions
	AFTER DELETE ON secretenv.secrets
	FOR EACH ROW EXECUTE FUNCTION secretenv.destroy_versions();
CREATE TRIGGER secrets_destroy_versions_on_truncate
	AFTER TRUNCATE ON secretenv.secrets
	FOR EACH STATEMENT EXECUTE FUNCTION secretenv.destroy_versions();

/* Version reads are not cached, but promote and rollback go through secrets' trigger. */

CREATE FUNCTION secretenv.max_versions()
RETURNS int4
AS 'MODULE_PATHNAME', 'secret_max_versions'
LANGUAGE C STRICT STABLE PARALLEL SAFE;
COMMENT ON FUNCTION secretenv.max_versions() IS
	'secretenv.max_versions: how many non-current, non-pending versions a secret keeps';

CREATE FUNCTION secretenv.delete_recovery_window()
RETURNS interval
AS 'MODULE_PATHNAME', 'secret_delete_recovery_window'
LANGUAGE C STRICT STABLE PARALLEL SAFE;
COMMENT ON FUNCTION secretenv.delete_recovery_window() IS
	'secretenv.delete_recovery_window: how long a deleted secret can be restored';

CREATE FUNCTION secretenv.note_version_operation(operation text)
RETURNS void
AS 'MODULE_PATHNAME', 'secret_note_version_operation'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION secretenv.note_version_operation(text) IS
	'Internal to secret_promote and secret_rollback: name the operation of the next value change in the access audit';

/*
 * The one place where a version becomes current: a BEFORE UPDATE trigger
 * on secretenv.secrets that fires when current_version changes.
 *	- With a new envelope in the row (secret_update), that is the new
 *	  version.
 *	- Without one (secret_promote, secret_rollback set only
 *	  current_version), the kept version of that number moves into the row,
 *	  as its envelope bytes.
 * Either way the old current value becomes the "previous" version (the
 * one before it "deprecated") unless secretenv.max_versions is 0, and
 * the versions beyond max_versions, oldest first, are destroyed (a pending
 * version is not history and never counts).  SECURITY DEFINER: it reads
 * and writes envelopes, which the writer role may not read, but it fires
 * only for an UPDATE that the writer's own privileges and row-level
 * security allowed.  Enabled for origin sessions only: on a logical
 * subscriber the versions arrive replicated like the rows.
 */
CREATE FUNCTION secretenv.keep_versions()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	keep int4 := secretenv.max_versions();
	t secretenv.secret_versions;
BEGIN
	IF NEW.encrypted_value IS NOT DISTINCT FROM OLD.encrypted_value
	   AND NEW.wrapped_dek IS NOT DISTINCT FROM OLD.wrapped_dek THEN
		DELETE FROM secretenv.secret_versions v
		WHERE v.secret_id OPERATOR(pg_catalog.=) OLD.secret_id
		  AND v.version OPERATOR(pg_catalog.=) NEW.current_version
		RETURNING * INTO t;
		IF NOT FOUND THEN
			RAISE EXCEPTION 'version % of secret "%" does not exist', NEW.current_version, OLD.secret_name
				USING ERRCODE = 'no_data_found',
					  HINT = 'secretenv.secret_versions lists the versions kept (secretenv.max_versions).';
		END IF;
		NEW.encrypted_value := t.encrypted_value;
		NEW.wrapped_dek := t.wrapped_dek;
		NEW.kek_version := t.kek_version;
		NEW.masked_value := t.masked_value;
		PERFORM secretenv.note_version_operation(CASE WHEN t.state OPERATOR(pg_catalog.=) 'pending'
													  THEN 'promote' ELSE 'rollback' END);
	ELSIF EXISTS (SELECT FROM secretenv.secret_versions v
				  WHERE v.secret_id OPERATOR(pg_catalog.=) OLD.secret_id
					AND v.version OPERATOR(pg_catalog.=) NEW.current_version) THEN
		RAISE EXCEPTION 'version % of secret "%" already exists', NEW.current_version, OLD.secret_name
			USING ERRCODE = 'unique_violation';
	END IF;
	IF keep OPERATOR(pg_catalog.>) 0 THEN
		UPDATE secretenv.secret_versions v SET state = 'deprecated'
		WHERE v.secret_id OPERATOR(pg_catalog.=) OLD.secret_id
		  AND v.state OPERATOR(pg_catalog.=) 'previous';
		INSERT INTO secretenv.secret_versions (secret_id, secret_name, version, state,
											   encrypted_value, wrapped_dek, kek_version,
											   masked_value, created_at, created_by)
		VALUES (OLD.secret_id, OLD.secret_name, OLD.current_version, 'previous',
				OLD.encrypted_value, OLD.wrapped_dek, OLD.kek_version,
				OLD.masked_value, OLD.last_updated_at, OLD.last_updated_by);
	END IF;
	/* Below the keep-th highest number, if there are that many; all with 0. */
	DELETE FROM secretenv.secret_versions v
	WHERE v.secret_id OPERATOR(pg_catalog.=) OLD.secret_id
	  AND v.state OPERATOR(pg_catalog.<>) 'pending'
	  AND (keep OPERATOR(pg_catalog.=) 0
		   OR v.version OPERATOR(pg_catalog.<) (
				SELECT k.version FROM secretenv.secret_versions k
				WHERE k.secret_id OPERATOR(pg_catalog.=) OLD.secret_id
				  AND k.state OPERATOR(pg_catalog.<>) 'pending'
				ORDER BY k.version DESC
				OFFSET greatest(keep OPERATOR(pg_catalog.-) 1, 0) LIMIT 1));
	RETURN NEW;
END
$$;
COMMENT ON FUNCTION secretenv.keep_versions() IS
	'Trigger: when a secret''s current version changes, keep the old value as a version (up to secretenv.max_versions) or bring a kept one back';

CREATE TRIGGER secrets_keep_versions
	BEFORE UPDATE OF current_version ON secretenv.secrets
	FOR EACH ROW WHEN (OLD.current_version IS DISTINCT FROM NEW.current_version)
	EXECUTE FUNCTION secretenv.keep_versions();

/* The locked, live row of a secret, or P0002 (a deleted secret is absent). */
CREATE FUNCTION secretenv.lock_live_secret(secret_name text,
										   OUT secret_id uuid, OUT current_version int4,
										   OUT next_version int4)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	SELECT s.secret_id, s.current_version INTO secret_id, current_version
	FROM secretenv.secrets s
	WHERE s.secret_name = lock_live_secret.secret_name AND s.deleted_at IS NULL
	FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'secret "%" does not exist', lock_live_secret.secret_name
			USING ERRCODE = 'no_data_found';
	END IF;
	/* Numbers are never reused: above the current one and every kept one. */
	next_version := greatest(current_version,
							 (SELECT max(v.version) FROM secretenv.secret_versions v
							  WHERE v.secret_id = lock_live_secret.secret_id)) + 1;
END
$$;
COMMENT ON FUNCTION secretenv.lock_live_secret(text) IS
	'Internal: lock the row of a secret that is not deleted; its id, current version and the number of a new version';

CREATE FUNCTION secretenv.insert_secret(secret_name text, plaintext text, masked jsonb,
										provider text, description text,
										expires_at timestamptz, labels jsonb)
RETURNS uuid
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	new_id uuid := gen_random_uuid();
	e secretenv.envelope;
	destroy_at timestamptz;
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
	IF labels IS NOT NULL AND jsonb_typeof(labels) <> 'object' THEN
		RAISE EXCEPTION 'labels must be a JSON object'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	/* One call, one DEK: the value and its wrapped DEK must come from the same call. */
	e := secretenv.secret_encrypt(plaintext, new_id, secret_name);
	/*
	 * ON CONFLICT rather than an exception block: no subtransaction per
	 * secret, and a concurrent create of the same name is waited for.  No
	 * literal in it: the log redaction overwrites a secretenv statement's
	 * parameters when its text holds one, and pgaudit's line of this
	 * INSERT keeps the secret's name.
	 */
	INSERT INTO secretenv.secrets (secret_id, secret_name, encrypted_value, wrapped_dek,
								   kek_version, masked_value, provider, description,
								   created_by, last_updated_by, expires_at, labels)
	VALUES (new_id, insert_secret.secret_name, e.encrypted_value, e.wrapped_dek,
			e.kek_version, masked, insert_secret.provider, insert_secret.description,
			session_user, session_user, insert_secret.expires_at,
			COALESCE(insert_secret.labels, jsonb_build_object()))
	ON CONFLICT ON CONSTRAINT secrets_secret_name_key DO NOTHING;
	IF NOT FOUND THEN
		SELECT s.destroy_after INTO destroy_at FROM secretenv.secrets s
		WHERE s.secret_name = insert_secret.secret_name AND s.deleted_at IS NOT NULL;
		IF FOUND THEN
			RAISE EXCEPTION 'secret "%" is deleted but not destroyed', insert_secret.secret_name
				USING ERRCODE = '55S04',
					  DETAIL = format('It can be restored until %s, and is destroyed then.', destroy_at),
					  HINT = 'Restore it with secretenv.secret_restore, or destroy it first with secretenv.secret_destroy or secretenv.secret_delete(name, recovery_window => ''0'').';
		END IF;
		RAISE EXCEPTION 'secret "%" already exists', insert_secret.secret_name
			USING ERRCODE = 'unique_violation',
				  HINT = 'Change its value with secretenv.secret_update, or delete it first with secretenv.secret_delete.';
	END IF;
	RETURN new_id;
END
$$;
COMMENT ON FUNCTION secretenv.insert_secret(text, text, jsonb, text, text, timestamptz, jsonb) IS
	'Internal to secret_create: encrypt and insert one secret';

CREATE FUNCTION secretenv.replace_secret_value(secret_name text, plaintext text, masked jsonb,
											   expected_version int4, expires_at timestamptz,
											   labels jsonb, pending boolean)
RETURNS int4
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	cur record;
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
	IF labels IS NOT NULL AND jsonb_typeof(labels) <> 'object' THEN
		RAISE EXCEPTION 'labels must be a JSON object'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	/* Lock the row first: the AAD needs its id, and versions are numbered under the lock. */
	cur := secretenv.lock_live_secret(secret_name);
	IF expected_version IS NOT NULL AND expected_version <> cur.current_version THEN
		RAISE EXCEPTION 'secret "%" is at version %, not %', secret_name,
						cur.current_version, expected_version
			USING ERRCODE = '55S03',
				  DETAIL = 'Another writer changed the secret since the expected version was read; nothing was changed.',
				  HINT = 'Read the current version with secretenv.secret_versions, and retry with it.';
	END IF;
	e := secretenv.secret_encrypt(plaintext, cur.secret_id, secret_name);
	IF pending THEN
		/* A new stage replaces the pending version, as a new AWSPENDING moves the label. */
		DELETE FROM secretenv.secret_versions v
		WHERE v.secret_id = cur.secret_id AND v.state = 'pending';
		INSERT INTO secretenv.secret_versions (secret_id, secret_name, version, state,
											   encrypted_value, wrapped_dek, kek_version,
											   masked_value, created_by)
		VALUES (cur.secret_id, secret_name, cur.next_version, 'pending',
				e.encrypted_value, e.wrapped_dek, e.kek_version, masked, session_user);
	ELSE
		/* The trigger secrets_keep_versions keeps the old value. */
		UPDATE secretenv.secrets s
		SET encrypted_value = e.encrypted_value,
			wrapped_dek = e.wrapped_dek,
			kek_version = e.kek_version,
			masked_value = masked,
			current_version = cur.next_version,
			expires_at = COALESCE(replace_secret_value.expires_at, s.expires_at),
			labels = COALESCE(replace_secret_value.labels, s.labels),
			last_updated_at = now(),
			last_updated_by = session_user
		WHERE s.secret_id = cur.secret_id;
	END IF;
	RETURN cur.next_version;
END
$$;
COMMENT ON FUNCTION secretenv.replace_secret_value(text, text, jsonb, int4, timestamptz, jsonb, boolean) IS
	'Internal to secret_update and secret_stage: encrypt a new version under a fresh DEK, current or pending';

CREATE FUNCTION secretenv.secret_create(secret_name text, value text,
										provider text DEFAULT NULL,
										description text DEFAULT NULL,
										expires_at timestamptz DEFAULT NULL,
										labels jsonb DEFAULT NULL)
RETURNS uuid
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT secretenv.insert_secret(secret_name, value, to_jsonb(secretenv.secret_mask(value)),
								   provider, description, expires_at, labels)
$$;
COMMENT ON FUNCTION secretenv.secret_create(text, text, text, text, timestamptz, jsonb) IS
	'Store a new text secret under a fresh DEK (version 1); returns its secret_id';

CREATE FUNCTION secretenv.secret_create(secret_name text, value jsonb,
										provider text DEFAULT NULL,
										description text DEFAULT NULL,
										expires_at timestamptz DEFAULT NULL,
										labels jsonb DEFAULT NULL)
RETURNS uuid
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT secretenv.insert_secret(secret_name, value::text, secretenv.secret_mask(value),
								   provider, description, expires_at, labels)
$$;
COMMENT ON FUNCTION secretenv.secret_create(text, jsonb, text, text, timestamptz, jsonb) IS
	'Store a new structured secret (JSON object) under a fresh DEK (version 1); returns its secret_id';

CREATE FUNCTION secretenv.secret_update(secret_name text, value text,
										expected_version int4 DEFAULT NULL,
										expires_at timestamptz DEFAULT NULL,
										labels jsonb DEFAULT NULL)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT FROM secretenv.replace_secret_value(secret_name, value, to_jsonb(secretenv.secret_mask(value)),
											   expected_version, expires_at, labels, false)
$$;
COMMENT ON FUNCTION secretenv.secret_update(text, text, int4, timestamptz, jsonb) IS
	'Replace the value of a text secret with a new version under a fresh DEK, keeping the old one; with expected_version, only if that is the current version (else 55S03)';

CREATE FUNCTION secretenv.secret_update(secret_name text, value jsonb,
										expected_version int4 DEFAULT NULL,
										expires_at timestamptz DEFAULT NULL,
										labels jsonb DEFAULT NULL)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT FROM secretenv.replace_secret_value(secret_name, value::text, secretenv.secret_mask(value),
											   expected_version, expires_at, labels, false)
$$;
COMMENT ON FUNCTION secretenv.secret_update(text, jsonb, int4, timestamptz, jsonb) IS
	'Replace the value of a structured secret with a new version under a fresh DEK, keeping the old one; with expected_version, only if that is the current version (else 55S03)';

CREATE FUNCTION secretenv.secret_stage(secret_name text, value text)
RETURNS int4
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT secretenv.replace_secret_value(secret_name, value, to_jsonb(secretenv.secret_mask(value)),
										  NULL, NULL, NULL, true)
$$;
COMMENT ON FUNCTION secretenv.secret_stage(text, text) IS
	'Store a new value as the pending version (read with label => ''pending'', made current by secret_promote); returns its version';

CREATE FUNCTION secretenv.secret_stage(secret_name text, value jsonb)
RETURNS int4
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT secretenv.replace_secret_value(secret_name, value::text, secretenv.secret_mask(value),
										  NULL, NULL, NULL, true)
$$;
COMMENT ON FUNCTION secretenv.secret_stage(text, jsonb) IS
	'Store a new structured value as the pending version; returns its version';

CREATE FUNCTION secretenv.secret_promote(secret_name text)
RETURNS int4
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	cur record;
	pending_version int4;
BEGIN
	cur := secretenv.lock_live_secret(secret_name);
	SELECT v.version INTO pending_version FROM secretenv.secret_versions v
	WHERE v.secret_id = cur.secret_id AND v.state = 'pending';
	IF NOT FOUND THEN
		RAISE EXCEPTION 'secret "%" has no pending version', secret_name
			USING ERRCODE = '55S05',
				  HINT = 'Stage one with secretenv.secret_stage first.';
	END IF;
	/* The trigger secrets_keep_versions moves the pending envelope in. */
	UPDATE secretenv.secrets s
	SET current_version = pending_version, last_updated_at = now(), last_updated_by = session_user
	WHERE s.secret_id = cur.secret_id;
	RETURN pending_version;
END
$$;
COMMENT ON FUNCTION secretenv.secret_promote(text) IS
	'Make the pending version current in one transaction (the old current becomes previous); returns its version';

CREATE FUNCTION secretenv.secret_rollback(secret_name text, version int4)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	cur record;
	target_state text;
BEGIN
	IF version IS NULL THEN
		RAISE EXCEPTION 'version must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	cur := secretenv.lock_live_secret(secret_name);
	IF version = cur.current_version THEN
		RAISE EXCEPTION 'version % of secret "%" is already current', version, secret_name
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	SELECT v.state INTO target_state FROM secretenv.secret_versions v
	WHERE v.secret_id = cur.secret_id AND v.version = secret_rollback.version;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'version % of secret "%" does not exist', version, secret_name
			USING ERRCODE = 'no_data_found',
				  HINT = 'secretenv.secret_versions lists the versions kept (secretenv.max_versions).';
	END IF;
	IF target_state = 'pending' THEN
		RAISE EXCEPTION 'version % of secret "%" is pending', version, secret_name
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Make it current with secretenv.secret_promote.';
	END IF;
	/* The trigger secrets_keep_versions moves that version's envelope in. */
	UPDATE secretenv.secrets s
	SET current_version = secret_rollback.version, last_updated_at = now(),
		last_updated_by = session_user
	WHERE s.secret_id = cur.secret_id;
END
$$;
COMMENT ON FUNCTION secretenv.secret_rollback(text, int4) IS
	'Make an older version current again in one transaction (the old current becomes previous)';

CREATE FUNCTION secretenv.secret_delete(secret_name text, recovery_window interval DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	w interval := COALESCE(recovery_window, secretenv.delete_recovery_window());
BEGIN
	IF secret_name IS NULL THEN
		RETURN NULL;
	END IF;
	IF w < '0'::interval THEN
		RAISE EXCEPTION 'recovery window must not be negative'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF w = '0'::interval THEN
		/* Destroyed at once, as in 1.1: the row and every version. */
		DELETE FROM secretenv.secrets s WHERE s.secret_name = secret_delete.secret_name;
	ELSE
		UPDATE secretenv.secrets s SET deleted_at = now(), destroy_after = now() + w
		WHERE s.secret_name = secret_delete.secret_name AND s.deleted_at IS NULL;
	END IF;
	RETURN FOUND;
END
$$;
COMMENT ON FUNCTION secretenv.secret_delete(text, interval) IS
	'Delete a secret: hidden and restorable for recovery_window (default secretenv.delete_recovery_window), destroyed at once with ''0''; returns whether it existed';

CREATE FUNCTION secretenv.secret_restore(secret_name text)
RETURNS boolean
LANGUAGE sql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
	WITH r AS (
		UPDATE secretenv.secrets s SET deleted_at = NULL, destroy_after = NULL
		WHERE s.secret_name = secret_restore.secret_name AND s.deleted_at IS NOT NULL
		RETURNING 1
	)
	SELECT count(*) > 0 FROM r
$$;
COMMENT ON FUNCTION secretenv.secret_restore(text) IS
	'Bring back a deleted secret, every version with it; returns whether a deleted secret of that name existed';

/*
 * Destroying deletes the row of the secret and, by the foreign key, the
 * rows of its versions: their wrapped DEKs are gone from the live tables
 * when the transaction commits (no index holds them).  The dead tuples
 * keep their bytes until VACUUM reclaims the space; WAL and backups keep
 * them until they expire.  As the owner: the admin role holds no DELETE.
 */
CREATE FUNCTION secretenv.secret_destroy(secret_name text)
RETURNS boolean
LANGUAGE sql VOLATILE STRICT
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
	WITH d AS (
		DELETE FROM secretenv.secrets s
		WHERE s.secret_name OPERATOR(pg_catalog.=) secret_destroy.secret_name
		RETURNING 1
	)
	SELECT count(*) OPERATOR(pg_catalog.>) 0 FROM d
$$;
COMMENT ON FUNCTION secretenv.secret_destroy(text) IS
	'Destroy a secret, deleted or not: every version''s wrapped DEK is deleted at once; returns whether it existed';

CREATE PROCEDURE secretenv.purge_deleted()
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n bigint;
BEGIN
	DELETE FROM secretenv.secrets s
	WHERE s.deleted_at IS NOT NULL AND s.destroy_after OPERATOR(pg_catalog.<=) now();
	GET DIAGNOSTICS n = ROW_COUNT;
	RAISE NOTICE 'destroyed % deleted secrets past their recovery window', n;
END
$$;
COMMENT ON PROCEDURE secretenv.purge_deleted() IS
	'Destroy every deleted secret whose recovery window has ended';

CREATE FUNCTION secretenv.secret_get(secret_name text, version int4)
RETURNS text
AS 'MODULE_PATHNAME', 'secret_get_version'
LANGUAGE C STRICT STABLE PARALLEL RESTRICTED;
COMMENT ON FUNCTION secretenv.secret_get(text, int4) IS
	'Decrypted value of one version of a stored secret (not cached)';

CREATE FUNCTION secretenv.secret_get(secret_name text, label text)
RETURNS text
AS 'MODULE_PATHNAME', 'secret_get_label'
LANGUAGE C STRICT STABLE PARALLEL RESTRICTED;
COMMENT ON FUNCTION secretenv.secret_get(text, text) IS
	'Decrypted value of the version of a stored secret with a label: current, pending or previous (not cached)';

CREATE FUNCTION secretenv.secret_versions(secret_name text)
RETURNS TABLE (version int4, state text, created_at timestamptz, created_by name, kek_version int4)
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT s.current_version, 'current', s.last_updated_at, s.last_updated_by, s.kek_version
	FROM secretenv.secrets s
	WHERE s.secret_name = secret_versions.secret_name AND s.deleted_at IS NULL
	UNION ALL
	SELECT v.version, v.state, v.created_at, v.created_by, v.kek_version
	FROM secretenv.secrets s
		 JOIN secretenv.secret_versions v ON v.secret_id = s.secret_id
	WHERE s.secret_name = secret_versions.secret_name AND s.deleted_at IS NULL
	ORDER BY 1 DESC
$$;
COMMENT ON FUNCTION secretenv.secret_versions(text) IS
	'Versions of a secret: number, state (current, pending, previous, deprecated), when and by whom written, KEK version; never a value';

CREATE VIEW secretenv.deleted_secrets WITH (security_invoker = true) AS
	SELECT secret_id, secret_name, deleted_at, destroy_after, current_version
	FROM secretenv.secrets
	WHERE deleted_at IS NOT NULL;
COMMENT ON VIEW secretenv.deleted_secrets IS
	'Deleted secrets that can still be restored, and when each is destroyed';

/*
 * Like deleted_secrets, the views of the store run with the rights of the
 * role that queries them (security_invoker), so its table privileges and
 * row-level security policies apply; an ordinary view would read the
 * table as its owner, a superuser, for whom row-level security never
 * applies.  Deleted secrets are hidden; masked_secrets shows expires_at,
 * labels and the version.
 */
CREATE VIEW secretenv.masked_secrets WITH (security_invoker = true) AS
	SELECT secret_id, secret_name, masked_value, kek_version, provider, description,
		   created_at, created_by, last_updated_at, last_updated_by,
		   current_version, expires_at, labels
	FROM secretenv.secrets
	WHERE deleted_at IS NULL;
COMMENT ON VIEW secretenv.masked_secrets IS
	'Secrets without ciphertext or plaintext: the stored mask only, never decrypted';

/*
 * decrypted_secrets' value: secret_decrypt of the stored row with an
 * access audit record naming the version read, the row's current_version
 * (a direct call is recorded too).  PARALLEL RESTRICTED: it runs in the
 * leader, whose client the record names.
 */
CREATE FUNCTION secretenv.secret_decrypt_stored(encrypted_value bytea, wrapped_dek bytea,
												kek_version int4, secret_id uuid, secret_name text,
												version int4)
RETURNS text
AS 'MODULE_PATHNAME', 'secret_decrypt_stored'
LANGUAGE C STRICT STABLE PARALLEL RESTRICTED;
COMMENT ON FUNCTION secretenv.secret_decrypt_stored(bytea, bytea, int4, uuid, text, int4) IS
	'Decrypt a row of secretenv.secrets for decrypted_secrets, with its access audit record naming the version';

CREATE VIEW secretenv.decrypted_secrets WITH (security_invoker = true) AS
	SELECT secret_id, secret_name,
		   secretenv.secret_decrypt_stored(encrypted_value, wrapped_dek, kek_version,
										   secret_id, secret_name, current_version) AS value,
		   provider, description, kek_version, last_updated_at
	FROM secretenv.secrets
	WHERE deleted_at IS NULL;
COMMENT ON VIEW secretenv.decrypted_secrets IS
	'Plaintext of every stored secret; restricted to secretenv_reader';

/* Rotation re-wraps every version, current or not, in the same statement. */
CREATE FUNCTION secretenv.secret_rotate_all()
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	/*
	 * The key settings the server last loaded, not a stale view.  Not
	 * named current_version: that is a column of secretenv.secrets.
	 */
	target_version int4 := secretenv.loaded_kek_version();
	missing text;
	rotated bigint;
	rotated_versions bigint;
BEGIN
	/*
	 * Name every version that cannot be opened before touching anything;
	 * the UPDATE would fail on the first such row anyway, but less helpfully.
	 */
	SELECT string_agg(v::text, ', ' ORDER BY v) INTO missing
	FROM (SELECT kek_version AS v FROM secretenv.secrets
		  WHERE kek_version <> target_version
		  UNION
		  SELECT kek_version FROM secretenv.secret_versions
		  WHERE kek_version <> target_version) old
	WHERE NOT secretenv.kek_is_configured(v);

	IF missing IS NOT NULL THEN
		RAISE EXCEPTION 'cannot rotate secrets: no KEK is configured for version %', missing
			USING ERRCODE = '22S04',
				  DETAIL = pg_catalog.format('Rows of KEK version %s cannot be unwrapped; nothing was changed.', missing),
				  HINT = 'Configure the KEK that wrote them as the previous one (secretenv.kek_previous_version, with secretenv.kek_previous_passphrase on a server that preloads secretenv, or a secretenv.kek_passphrase_command that prints its passphrase), reload, and retry.';
	END IF;

	/* One transaction: all rows are re-wrapped, or none is. */
	UPDATE secretenv.secrets
	SET wrapped_dek = secretenv.secret_rewrap(wrapped_dek, kek_version),
		kek_version = target_version
	WHERE kek_version <> target_version;
	GET DIAGNOSTICS rotated = ROW_COUNT;
	UPDATE secretenv.secret_versions
	SET wrapped_dek = secretenv.secret_rewrap(wrapped_dek, kek_version),
		kek_version = target_version
	WHERE kek_version <> target_version;
	GET DIAGNOSTICS rotated_versions = ROW_COUNT;
	RETURN rotated + rotated_versions;
END
$$;
COMMENT ON FUNCTION secretenv.secret_rotate_all() IS
	'Re-wrap the DEK of every secret and every kept version not on the current KEK, in one transaction; returns the count';

/* One window of secret_rotate over the versions, as the tables' owner. */
CREATE FUNCTION secretenv.rotate_versions_batch(first_block int8, blocks int8,
												OUT changed int8, OUT seen int8)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	target_version int4 := secretenv.loaded_kek_version();
	lo tid := format('(%s,0)', first_block)::tid;
	hi tid := format('(%s,0)', first_block OPERATOR(pg_catalog.+) blocks)::tid;
BEGIN
	SELECT count(*) INTO seen FROM secretenv.secret_versions v
	WHERE v.ctid OPERATOR(pg_catalog.>=) lo AND v.ctid OPERATOR(pg_catalog.<) hi;

	UPDATE secretenv.secret_versions v
	SET wrapped_dek = secretenv.secret_rewrap(v.wrapped_dek, v.kek_version),
		kek_version = target_version
	WHERE v.ctid OPERATOR(pg_catalog.>=) lo AND v.ctid OPERATOR(pg_catalog.<) hi
	  AND v.kek_version OPERATOR(pg_catalog.<>) target_version;
	GET DIAGNOSTICS changed = ROW_COUNT;
END
$$;
COMMENT ON FUNCTION secretenv.rotate_versions_batch(int8, int8) IS
	'Internal to secret_rotate: re-wrap the kept versions of a block range not on the current KEK';

/* One window of secret_reencrypt over the versions: a fresh DEK for each. */
CREATE FUNCTION secretenv.reencrypt_versions_batch(since timestamptz, first_block int8, blocks int8,
												   OUT changed int8, OUT seen int8)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	lo tid := format('(%s,0)', first_block)::tid;
	hi tid := format('(%s,0)', first_block OPERATOR(pg_catalog.+) blocks)::tid;
BEGIN
	SELECT count(*) INTO seen FROM secretenv.secret_versions v
	WHERE v.ctid OPERATOR(pg_catalog.>=) lo AND v.ctid OPERATOR(pg_catalog.<) hi;

	UPDATE secretenv.secret_versions v
	SET (encrypted_value, wrapped_dek, kek_version) =
			(SELECT e.encrypted_value, e.wrapped_dek, e.kek_version
			 FROM secretenv.reencrypt_envelope(v.encrypted_value, v.wrapped_dek, v.kek_version,
											   v.secret_id, v.secret_name) e)
	WHERE v.ctid OPERATOR(pg_catalog.>=) lo AND v.ctid OPERATOR(pg_catalog.<) hi
	  AND (v.value_encrypted_at IS NULL OR v.value_encrypted_at OPERATOR(pg_catalog.<) since);
	GET DIAGNOSTICS changed = ROW_COUNT;
END
$$;
COMMENT ON FUNCTION secretenv.reencrypt_versions_batch(timestamptz, int8, int8) IS
	'Internal to secret_reencrypt: give the kept versions of a block range encrypted before the cutoff a fresh DEK and ciphertext';

/*
 * Do the next window of a run (the caller commits after it), or end a
 * pass: the run is done when a whole pass changed nothing.
 */
CREATE FUNCTION secretenv.batch_run_step(run secretenv.batch_run)
RETURNS secretenv.batch_run
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r secretenv.batch_run := run;
	b record;
	started timestamptz;
	took interval;
	verb text := CASE WHEN r.operation OPERATOR(pg_catalog.=) ANY (ARRAY['reencrypt', 'reencrypt_versions'])
					  THEN 're-encrypted' ELSE 're-wrapped' END;
	what text := CASE WHEN r.operation OPERATOR(pg_catalog.=) ANY (ARRAY['rotate_versions', 'reencrypt_versions'])
					  THEN 'versions' ELSE 'rows' END;
BEGIN
	IF r.done THEN
		RETURN r;
	END IF;
	IF r.next_block OPERATOR(pg_catalog.>=) r.table_blocks THEN
		IF r.pass_changed OPERATOR(pg_catalog.=) 0 THEN
			r.done := true;
			RAISE NOTICE 'finished: % % % in % batches over % passes, longest batch %',
				r.changed, what, verb, r.batches, r.pass, r.longest_batch;
			RETURN r;
		END IF;
		r.pass := r.pass OPERATOR(pg_catalog.+) 1;
		r.next_block := 0;
		r.pass_changed := 0;
		r.table_blocks := pg_relation_size(r.tbl) OPERATOR(pg_catalog./) current_setting('block_size')::int8;
		RETURN r;
	END IF;

	started := clock_timestamp();
	IF r.operation OPERATOR(pg_catalog.=) 'rotate' THEN
		SELECT * INTO STRICT b FROM secretenv.rotate_secrets_batch(r.next_block, r.window_blocks);
	ELSIF r.operation OPERATOR(pg_catalog.=) 'rotate_versions' THEN
		SELECT * INTO STRICT b FROM secretenv.rotate_versions_batch(r.next_block, r.window_blocks);
	ELSIF r.operation OPERATOR(pg_catalog.=) 'reencrypt' THEN
		SELECT * INTO STRICT b FROM secretenv.reencrypt_secrets_batch(r.since, r.next_block, r.window_blocks);
	ELSIF r.operation OPERATOR(pg_catalog.=) 'reencrypt_versions' THEN
		SELECT * INTO STRICT b FROM secretenv.reencrypt_versions_batch(r.since, r.next_block, r.window_blocks);
	ELSE
		SELECT * INTO STRICT b FROM secretenv.rotate_table_batch(r.tbl, r.wrapped_dek_column,
																r.kek_version_column,
																r.next_block, r.window_blocks);
	END IF;
	took := clock_timestamp() OPERATOR(pg_catalog.-) started;

	r.batches := r.batches OPERATOR(pg_catalog.+) 1;
	r.changed := r.changed OPERATOR(pg_catalog.+) b.changed;
	r.pass_changed := r.pass_changed OPERATOR(pg_catalog.+) b.changed;
	r.longest_batch := greatest(r.longest_batch, took);
	IF b.changed OPERATOR(pg_catalog.>) 0 THEN
		RAISE NOTICE 'batch %: % % % in blocks % to % of % (pass %) in %; % % so far',
			r.batches, b.changed, what, verb, r.next_block,
			least(r.next_block OPERATOR(pg_catalog.+) r.window_blocks, r.table_blocks) OPERATOR(pg_catalog.-) 1,
			r.table_blocks, r.pass, took, r.changed, what;
	END IF;

	/*
	 * Size the next window for about batch_size rows at the densest
	 * stretch seen so far, growing at most eightfold per window: a window
	 * that follows an empty stretch (dead versions left by an earlier pass)
	 * must not take in a dense one of many times batch_size rows.
	 */
	r.densest_block := greatest(r.densest_block,
								(b.seen OPERATOR(pg_catalog.+) r.window_blocks OPERATOR(pg_catalog.-) 1)
								OPERATOR(pg_catalog./) r.window_blocks);
	r.next_block := r.next_block OPERATOR(pg_catalog.+) r.window_blocks;
	r.window_blocks := greatest(1, least(r.window_blocks OPERATOR(pg_catalog.*) 8,
										 r.batch_size OPERATOR(pg_catalog./) r.densest_block));
	RETURN r;
END
$$;
COMMENT ON FUNCTION secretenv.batch_run_step(secretenv.batch_run) IS
	'Internal to the batched procedures: do the next window of a run, or end a pass';

/*
 * The procedures commit after every window, so they cannot be SECURITY
 * DEFINER nor carry a SET clause (PostgreSQL forbids transaction control
 * in both).  Their bodies therefore contain no operator and no unqualified
 * name: every step is a call of a schema-qualified function whose own
 * search_path is pinned.  secret_rotate and secret_reencrypt reach the
 * table through SECURITY DEFINER windows; rotate_table runs with the
 * caller's rights throughout.
 *
 * secret_rotate and secret_reencrypt do the secrets, then their versions.
 */
CREATE PROCEDURE secretenv.secret_rotate(batch_size int4 DEFAULT 10000)
LANGUAGE plpgsql
AS $$
DECLARE
	run secretenv.batch_run := secretenv.batch_run_start('rotate', 'secretenv.secrets', NULL, NULL,
														 NULL, batch_size);
BEGIN
	LOOP
		run := secretenv.batch_run_step(run);
		COMMIT;
		EXIT WHEN run.done;
	END LOOP;
	run := secretenv.batch_run_start('rotate_versions', 'secretenv.secret_versions', NULL, NULL,
									 NULL, batch_size);
	LOOP
		run := secretenv.batch_run_step(run);
		COMMIT;
		EXIT WHEN run.done;
	END LOOP;
END
$$;
COMMENT ON PROCEDURE secretenv.secret_rotate(int4) IS
	'Re-wrap every secret and every kept version not on the current KEK in batches of about batch_size rows, committing after each; resumable';

CREATE PROCEDURE secretenv.rotate_table(tbl regclass, wrapped_dek_column name DEFAULT 'wrapped_dek',
										kek_version_column name DEFAULT 'kek_version',
										batch_size int4 DEFAULT 10000)
LANGUAGE plpgsql
AS $$
DECLARE
	run secretenv.batch_run := secretenv.batch_run_start('rotate_table', tbl, wrapped_dek_column,
														 kek_version_column, NULL, batch_size);
BEGIN
	LOOP
		run := secretenv.batch_run_step(run);
		COMMIT;
		EXIT WHEN run.done;
	END LOOP;
END
$$;
COMMENT ON PROCEDURE secretenv.rotate_table(regclass, name, name, int4) IS
	'Re-wrap every row of an application table not on the current KEK in batches, committing after each; runs with the caller''s rights';

CREATE PROCEDURE secretenv.secret_reencrypt(since timestamptz, batch_size int4 DEFAULT 10000)
LANGUAGE plpgsql
AS $$
DECLARE
	run secretenv.batch_run := secretenv.batch_run_start('reencrypt', 'secretenv.secrets', NULL, NULL,
														 since, batch_size);
BEGIN
	LOOP
		run := secretenv.batch_run_step(run);
		COMMIT;
		EXIT WHEN run.done;
	END LOOP;
	run := secretenv.batch_run_start('reencrypt_versions', 'secretenv.secret_versions', NULL, NULL,
									 since, batch_size);
	LOOP
		run := secretenv.batch_run_step(run);
		COMMIT;
		EXIT WHEN run.done;
	END LOOP;
END
$$;
COMMENT ON PROCEDURE secretenv.secret_reencrypt(timestamptz, int4) IS
	'Give every secret and kept version last encrypted before since a fresh DEK and ciphertext under the current KEK, in batches; resumable';

/* verify_secrets() also opens every kept version, and says which. */
CREATE FUNCTION secretenv.verify_secrets()
RETURNS TABLE (secret_id uuid, secret_name text, kek_version int4, failed_check text, version int4)
AS 'MODULE_PATHNAME', 'secret_verify_all'
LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION secretenv.verify_secrets() IS
	'Open every stored secret and every kept version (wrapped DEK and value, AAD included); one row per failure, never plaintext';

/*
 * Key health and store counts: the KEK versions of the secrets and of
 * their kept versions, kept, deleted and expiring secrets, and the cache
 * and audit counters.
 */
CREATE FUNCTION secretenv.status()
RETURNS jsonb
LANGUAGE sql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
	/* Act on the key settings the server last loaded, not a stale view. */
	SELECT secretenv.loaded_kek_version();
	/* Once: key_config() reads the settings this session now has. */
	WITH cfg AS MATERIALIZED (SELECT secretenv.key_config() AS c),
	envelopes AS (
		SELECT s.kek_version, s.wrapped_dek, s.value_encrypted_at FROM secretenv.secrets s
		UNION ALL
		SELECT v.kek_version, v.wrapped_dek, v.value_encrypted_at FROM secretenv.secret_versions v
	),
	versions AS (
		SELECT c.kek_version, c.n,
			   secretenv.kek_is_configured(c.kek_version) AS configured,
			   secretenv.kek_opens((SELECT e.wrapped_dek FROM envelopes e
									WHERE e.kek_version OPERATOR(pg_catalog.=) c.kek_version
									LIMIT 1), c.kek_version) AS opens
		FROM (SELECT e.kek_version, count(*) AS n
			  FROM envelopes e GROUP BY e.kek_version) c
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
			'unknown_encryption_time_rows', (SELECT count(*) FROM envelopes e
											 WHERE e.value_encrypted_at IS NULL),
			'oldest_value_encrypted_at', (SELECT min(e.value_encrypted_at) FROM envelopes e),
			/* Complete: every row on the current KEK, and that KEK opens them. */
			'rotation_complete', NOT EXISTS (
				SELECT 1 FROM versions v
				WHERE v.kek_version OPERATOR(pg_catalog.<>) secretenv.current_kek_version()
				   OR v.opens IS DISTINCT FROM true),
			'kept_versions', (SELECT count(*) FROM secretenv.secret_versions v),
			'deleted_secrets', (SELECT count(*) FROM secretenv.secrets s
								WHERE s.deleted_at IS NOT NULL),
			'expired_secrets', (SELECT count(*) FROM secretenv.secrets s
								WHERE s.deleted_at IS NULL
								  AND s.expires_at OPERATOR(pg_catalog.<=) now()),
			'expiring_within_30_days', (SELECT count(*) FROM secretenv.secrets s
										WHERE s.deleted_at IS NULL
										  AND s.expires_at OPERATOR(pg_catalog.>) now()
										  AND s.expires_at OPERATOR(pg_catalog.<=)
											  (now() OPERATOR(pg_catalog.+) '30 days'::interval)),
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
	'Key versions and fingerprints, default-passphrase use, preload, rows and kept versions, retirement and key health per version and per database, expired and deleted secrets, cache counters; never key material';

/* Each audit record names the version of the secret it is about. */
ALTER TABLE secretenv.audit_log ADD COLUMN version int4;

-- Privileges of this section.
REVOKE ALL ON secretenv.secret_versions, secretenv.deleted_secrets,
	secretenv.masked_secrets, secretenv.decrypted_secrets FROM PUBLIC;
REVOKE ALL ON FUNCTION
	secretenv.audit_version_write(),
	secretenv.destroy_versions(),
	secretenv.secret_decrypt_stored(bytea, bytea, int4, uuid, text, int4),
	secretenv.secret_rotate_all(),
	secretenv.batch_run_step(secretenv.batch_run),
	secretenv.status(),
	secretenv.max_versions(),
	secretenv.delete_recovery_window(),
	secretenv.note_version_operation(text),
	secretenv.keep_versions(),
	secretenv.lock_live_secret(text),
	secretenv.insert_secret(text, text, jsonb, text, text, timestamptz, jsonb),
	secretenv.replace_secret_value(text, text, jsonb, int4, timestamptz, jsonb, boolean),
	secretenv.secret_create(text, text, text, text, timestamptz, jsonb),
	secretenv.secret_create(text, jsonb, text, text, timestamptz, jsonb),
	secretenv.secret_update(text, text, int4, timestamptz, jsonb),
	secretenv.secret_update(text, jsonb, int4, timestamptz, jsonb),
	secretenv.secret_stage(text, text),
	secretenv.secret_stage(text, jsonb),
	secretenv.secret_promote(text),
	secretenv.secret_rollback(text, int4),
	secretenv.secret_delete(text, interval),
	secretenv.secret_restore(text),
	secretenv.secret_destroy(text),
	secretenv.secret_get(text, int4),
	secretenv.secret_get(text, text),
	secretenv.secret_versions(text),
	secretenv.rotate_versions_batch(int8, int8),
	secretenv.reencrypt_versions_batch(timestamptz, int8, int8),
	secretenv.verify_secrets()
	FROM PUBLIC;
REVOKE ALL ON PROCEDURE
	secretenv.secret_rotate(int4),
	secretenv.rotate_table(regclass, name, name, int4),
	secretenv.secret_reencrypt(timestamptz, int4),
	secretenv.purge_deleted()
	FROM PUBLIC;

GRANT SELECT ON secretenv.secret_versions, secretenv.decrypted_secrets TO secretenv_reader;
GRANT SELECT ON secretenv.masked_secrets TO secretenv_reader, secretenv_writer, secretenv_admin;
GRANT EXECUTE ON FUNCTION
	secretenv.secret_decrypt_stored(bytea, bytea, int4, uuid, text, int4),
	secretenv.secret_get(text, int4),
	secretenv.secret_get(text, text),
	secretenv.secret_versions(text)
	TO secretenv_reader;

/* A writer writes versions through the functions, with its own rights (RLS). */
GRANT SELECT (secret_id, secret_name, version, state, kek_version, masked_value,
			  created_at, created_by, value_encrypted_at)
	ON secretenv.secret_versions TO secretenv_writer, secretenv_admin;
GRANT INSERT (secret_id, secret_name, version, state, encrypted_value, wrapped_dek,
			  kek_version, masked_value, created_at, created_by)
	ON secretenv.secret_versions TO secretenv_writer;
GRANT DELETE ON secretenv.secret_versions TO secretenv_writer;
GRANT SELECT (current_version, expires_at, labels, deleted_at, destroy_after)
	ON secretenv.secrets TO secretenv_writer, secretenv_admin;
GRANT INSERT (expires_at, labels) ON secretenv.secrets TO secretenv_writer;
GRANT UPDATE (current_version, expires_at, labels, deleted_at, destroy_after)
	ON secretenv.secrets TO secretenv_writer;
GRANT EXECUTE ON FUNCTION
	secretenv.max_versions(),
	secretenv.delete_recovery_window(),
	secretenv.lock_live_secret(text),
	secretenv.insert_secret(text, text, jsonb, text, text, timestamptz, jsonb),
	secretenv.replace_secret_value(text, text, jsonb, int4, timestamptz, jsonb, boolean),
	secretenv.secret_create(text, text, text, text, timestamptz, jsonb),
	secretenv.secret_create(text, jsonb, text, text, timestamptz, jsonb),
	secretenv.secret_update(text, text, int4, timestamptz, jsonb),
	secretenv.secret_update(text, jsonb, int4, timestamptz, jsonb),
	secretenv.secret_stage(text, text),
	secretenv.secret_stage(text, jsonb),
	secretenv.secret_promote(text),
	secretenv.secret_rollback(text, int4),
	secretenv.secret_delete(text, interval),
	secretenv.secret_restore(text),
	secretenv.secret_versions(text)
	TO secretenv_writer;
GRANT SELECT ON secretenv.deleted_secrets TO secretenv_writer, secretenv_admin;
GRANT EXECUTE ON FUNCTION
	secretenv.secret_rotate_all(),
	secretenv.batch_run_step(secretenv.batch_run),
	secretenv.status(),
	secretenv.secret_destroy(text),
	secretenv.secret_versions(text),
	secretenv.verify_secrets(),
	secretenv.rotate_versions_batch(int8, int8),
	secretenv.reencrypt_versions_batch(timestamptz, int8, int8)
	TO secretenv_admin;
GRANT EXECUTE ON PROCEDURE
	secretenv.secret_rotate(int4),
	secretenv.rotate_table(regclass, name, name, int4),
	secretenv.secret_reencrypt(timestamptz, int4),
	secretenv.purge_deleted()
	TO secretenv_admin;
