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
