/* sql/secretenv--1.1--1.2.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION secretenv UPDATE TO '1.2'" to load this file. \quit

/*
 * Upgrade from 1.1 to 1.2.  After this script a 1.1 database holds exactly
 * the objects, privileges, comments and triggers of a fresh 1.2 install
 * (checked by test/t/070_upgrade_equivalence.pl); stored rows keep their
 * bytes: the on-disk format of a value is the same.
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
-- Per-application access rules (DESIGN §8f)
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
