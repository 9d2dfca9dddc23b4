/* sql/secretenv--1.0--1.1.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION secretenv UPDATE TO '1.1'" to load this file. \quit

/*
 * Upgrade from 1.0 to 1.1.  After this script a 1.0 database holds exactly
 * the objects, privileges, comments and triggers of a fresh 1.1 install
 * (checked by test/t/070_upgrade_equivalence.pl); stored rows are not
 * touched: the on-disk format is the same.
 */

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
