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
CREATE INDEX audit_log_secret_time ON secretenv.audit_log (secret_name, event_time);

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
