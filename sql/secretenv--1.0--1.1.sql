/* sql/secretenv--1.0--1.1.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION secretenv UPDATE TO '1.1'" to load this file. \quit

/*
 * Upgrade from 1.0 to 1.1.  After this script a 1.0 database holds exactly
 * the objects, privileges, comments and triggers of a fresh 1.1 install
 * (checked by test/t/070_upgrade_equivalence.pl); stored rows are not
 * touched: the on-disk format is the same.
 */

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
