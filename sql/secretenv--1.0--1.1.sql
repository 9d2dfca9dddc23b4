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
