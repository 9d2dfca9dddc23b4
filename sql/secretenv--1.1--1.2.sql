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
			'cache', secretenv.cache_stats())
$$;
COMMENT ON FUNCTION secretenv.status() IS
	'Key versions and fingerprints, default-passphrase use, preload, rows, retirement and key health per version and per database, cache counters; never key material';

REVOKE ALL ON FUNCTION secretenv.stamp_value_encrypted() FROM PUBLIC;
GRANT SELECT (value_encrypted_at) ON secretenv.secrets TO secretenv_writer, secretenv_admin;
