/* sql/secretenv--1.0--1.1.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION secretenv UPDATE TO '1.1'" to load this file. \quit

/*
 * Upgrade from 1.0 to 1.1.  After this script a 1.0 database holds exactly
 * the objects, privileges, comments and triggers of a fresh 1.1 install
 * (checked by test/t/070_upgrade_equivalence.pl); stored rows are not
 * touched: the on-disk format is the same.
 */

/*
 * Refuse to adopt squatted roles or a squatted schema (DESIGN §7a).  The
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
 * Key health per database (key_inventory) and a status() that shows it and
 * never calls a rotation complete while a version's KEK does not open it.
 */
CREATE FUNCTION secretenv.key_inventory()
RETURNS TABLE (database text, kek_version int4, rows bigint, kek_state text,
			   counted boolean, checked_at timestamptz)
AS 'MODULE_PATHNAME', 'secret_key_inventory'
LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION secretenv.key_inventory() IS
	'Latest key health check of every database that has secretenv (with preload; else this database): rows and KEK state per version';

CREATE OR REPLACE FUNCTION secretenv.status()
RETURNS jsonb
LANGUAGE sql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
	WITH versions AS (
		SELECT c.kek_version, c.n,
			   secretenv.kek_is_configured(c.kek_version) AS configured,
			   secretenv.kek_opens((SELECT s.wrapped_dek FROM secretenv.secrets s
									WHERE s.kek_version OPERATOR(pg_catalog.=) c.kek_version
									LIMIT 1), c.kek_version) AS opens
		FROM (SELECT s.kek_version, count(*) AS n
			  FROM secretenv.secrets s GROUP BY s.kek_version) c
	)
	SELECT secretenv.key_config()
		|| jsonb_build_object(
			'versions', COALESCE((
				SELECT jsonb_agg(jsonb_build_object(
							'kek_version', v.kek_version,
							'rows', v.n,
							'kek_configured', v.configured,
							'kek_opens_sample', v.opens)
						ORDER BY v.kek_version)
				FROM versions v), '[]'::jsonb),
			/* Complete: every row on the current KEK, and that KEK opens them. */
			'rotation_complete', NOT EXISTS (
				SELECT 1 FROM versions v
				WHERE v.kek_version OPERATOR(pg_catalog.<>) secretenv.current_kek_version()
				   OR v.opens IS DISTINCT FROM true),
			'databases', COALESCE((
				SELECT jsonb_agg(jsonb_build_object(
							'database', i.database,
							'kek_version', i.kek_version,
							'rows', i.rows,
							'kek_state', i.kek_state)
						ORDER BY i.database, i.kek_version)
				FROM secretenv.key_inventory() i), '[]'::jsonb),
			'cache', secretenv.cache_stats())
$$;
COMMENT ON FUNCTION secretenv.status() IS
	'Key versions, default-passphrase use, preload, rows and key health per version and per database, cache counters; never key material';

REVOKE ALL ON FUNCTION secretenv.key_inventory() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION secretenv.key_inventory() TO secretenv_admin;
-------------------------------------------------------------------------------
-- Nothing lost by accident: secret names, envelopes that open, the drop guard
-------------------------------------------------------------------------------

/*
 * 1.1 refuses empty, whitespace-only and over-long (> 1024 bytes) secret
 * names, and a CHECK constraint on the table says so for direct writes too.
 * Such rows cannot be renamed (the name is part of the AAD), so the upgrade
 * does not guess: it stops, names the count and says how to fix them, and
 * the database stays at 1.0 until they are re-created.
 */
DO $names$
DECLARE
	bad bigint;
BEGIN
	SELECT pg_catalog.count(*) INTO bad FROM secretenv.secrets
	WHERE NOT (octet_length(secret_name) <= 1024 AND btrim(secret_name, E' \t\n\r\f\v' || U&'\0085\00A0\1680\2000\2001\2002\2003\2004\2005\2006\2007\2008\2009\200A\2028\2029\202F\205F\3000') <> '');
	IF bad > 0 THEN
		RAISE EXCEPTION 'cannot update secretenv to 1.1: % stored secrets have an empty, blank or over-long name', bad
			USING ERRCODE = 'check_violation',
				  DETAIL = 'secretenv 1.1 requires secret names of at most 1024 bytes with at least one non-whitespace character.',
				  HINT = 'Re-create each such secret under a valid name with secret_create, delete the old one with secret_delete, then run ALTER EXTENSION secretenv UPDATE again.';
	END IF;
END
$names$;

ALTER TABLE secretenv.secrets ADD CONSTRAINT secrets_name_valid CHECK (octet_length(secret_name) <= 1024 AND btrim(secret_name, E' \t\n\r\f\v' || U&'\0085\00A0\1680\2000\2001\2002\2003\2004\2005\2006\2007\2008\2009\200A\2028\2029\202F\205F\3000') <> '');

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
	IF btrim(secret_name, E' \t\n\r\f\v' || U&'\0085\00A0\1680\2000\2001\2002\2003\2004\2005\2006\2007\2008\2009\200A\2028\2029\202F\205F\3000') = '' THEN
		RAISE EXCEPTION 'secret name must not be empty or only whitespace'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	/* One call, one DEK: the value and its wrapped DEK must come from the same call. */
	e := secretenv.secret_encrypt(plaintext, new_id, secret_name);
	INSERT INTO secretenv.secrets (secret_id, secret_name, encrypted_value, wrapped_dek,
								   kek_version, masked_value, provider, description,
								   created_by, last_updated_by)
	VALUES (new_id, insert_secret.secret_name, e.encrypted_value, e.wrapped_dek,
			e.kek_version, masked, insert_secret.provider, insert_secret.description,
			session_user, session_user);
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
	IF btrim(secret_name, E' \t\n\r\f\v' || U&'\0085\00A0\1680\2000\2001\2002\2003\2004\2005\2006\2007\2008\2009\200A\2028\2029\202F\205F\3000') = '' THEN
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

CREATE FUNCTION secretenv.check_envelope()
RETURNS trigger
AS 'MODULE_PATHNAME', 'secret_check_envelope'
LANGUAGE C;
COMMENT ON FUNCTION secretenv.check_envelope() IS
	'Row trigger: refuse a new or changed row whose envelope (columns named in its arguments) does not open';

REVOKE ALL ON FUNCTION secretenv.check_envelope() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION secretenv.check_envelope()
	TO secretenv_reader, secretenv_writer, secretenv_admin;

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

REVOKE ALL ON FUNCTION secretenv.drop_guard() FROM PUBLIC;
-- Credential cache coherence on logical-replication subscribers (issue 12).
COMMENT ON FUNCTION secretenv.invalidate_secret_caches() IS
	'Trigger: drop every backend''s cached secrets when secretenv.secrets changes';

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

-------------------------------------------------------------------------------
-- Row-level security on secretenv.secrets applies on every path (DESIGN §7f)
-------------------------------------------------------------------------------

/*
 * Row-level security (DESIGN §7f) applies only to the role a statement runs
 * as, so the write functions run with the caller's rights and
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
 * Rows stored under 1.0 are not re-checked (verify_secrets() does that).
 */
CREATE TRIGGER secrets_check_envelope
	BEFORE INSERT OR UPDATE OF encrypted_value, wrapped_dek, kek_version ON secretenv.secrets
	FOR EACH ROW
	WHEN (NOT pg_catalog.has_table_privilege('secretenv.secrets'::pg_catalog.regclass, 'TRUNCATE'))
	EXECUTE FUNCTION secretenv.check_envelope('encrypted_value', 'wrapped_dek', 'kek_version',
											  'secret_id', 'secret_name');
ALTER TABLE secretenv.secrets ENABLE ALWAYS TRIGGER secrets_check_envelope;

/*
 * secret_create, secret_update and secret_delete run with the caller's
 * rights, so that the caller's policies apply to them exactly as to its own
 * statements; a SECURITY DEFINER function runs as the table's owner, a
 * superuser, for whom row-level security never applies.  The search_path
 * stays pinned.
 */
ALTER FUNCTION secretenv.secret_create(text, text, text, text) SECURITY INVOKER;
ALTER FUNCTION secretenv.secret_create(text, jsonb, text, text) SECURITY INVOKER;
ALTER FUNCTION secretenv.secret_update(text, text) SECURITY INVOKER;
ALTER FUNCTION secretenv.secret_update(text, jsonb) SECURITY INVOKER;
ALTER FUNCTION secretenv.secret_delete(text) SECURITY INVOKER;

/* The views read the table with the querying role's rights and policies. */
ALTER VIEW secretenv.masked_secrets SET (security_invoker = true);
ALTER VIEW secretenv.decrypted_secrets SET (security_invoker = true);

-- The table privileges behind the security_invoker views and the
-- SECURITY INVOKER write functions: masked_secrets' columns, never
-- encrypted_value or wrapped_dek; a writer inserts and updates only the
-- columns secret_create and secret_update write.
GRANT SELECT (secret_id, secret_name, masked_value, kek_version, provider, description,
			  created_at, created_by, last_updated_at, last_updated_by)
	ON secretenv.secrets TO secretenv_writer, secretenv_admin;
GRANT INSERT (secret_id, secret_name, encrypted_value, wrapped_dek, kek_version, masked_value,
			  provider, description, created_by, last_updated_by)
	ON secretenv.secrets TO secretenv_writer;
GRANT UPDATE (encrypted_value, wrapped_dek, kek_version, masked_value,
			  last_updated_at, last_updated_by)
	ON secretenv.secrets TO secretenv_writer;
GRANT DELETE ON secretenv.secrets TO secretenv_writer;
GRANT EXECUTE ON FUNCTION
	secretenv.insert_secret(text, text, jsonb, text, text),
	secretenv.replace_secret_value(text, text, jsonb)
	TO secretenv_writer;
