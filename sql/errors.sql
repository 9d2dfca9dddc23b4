-- Every failure class, with its message and SQLSTATE.
\set SHOW_CONTEXT never
CREATE TABLE good AS
SELECT '33333333-3333-4333-8333-333333333333'::uuid AS id, 'api-key'::text AS name,
       secretenv.secret_encrypt('sk-error-tests-0123456789', '33333333-3333-4333-8333-333333333333'::uuid, 'api-key') AS env;

-- Malformed lengths (22S01).
SELECT secretenv.secret_decrypt((env).encrypted_value, substr((env).wrapped_dek, 1, 59), 2, id, name) FROM good;
SELECT secretenv.secret_decrypt(substr((env).encrypted_value, 1, 27), (env).wrapped_dek, 2, id, name) FROM good;
-- Wrong KEK or corrupted wrapped DEK (22S02).
SELECT secretenv.secret_decrypt((env).encrypted_value, (env).wrapped_dek, 1, id, name) FROM good;
-- AAD mismatch or tampered value (22S03).
SELECT secretenv.secret_decrypt(env, id, 'other-name') FROM good;
-- No KEK for this version (22S04).
SELECT secretenv.secret_decrypt((env).encrypted_value, (env).wrapped_dek, 7, id, name) FROM good;
-- Version out of range, '|' in an id (22023).
SELECT secretenv.secret_decrypt((env).encrypted_value, (env).wrapped_dek, 0, id, name) FROM good;
SELECT secretenv.secret_encrypt('v', 'a|b', 'n');
-- Plaintext that is not UTF-8 (22021): a value sealed over invalid bytes is
-- made by encrypting valid text and is not constructible from SQL, so the
-- check is covered by the unit tests; here: rewrap of a malformed DEK.
SELECT secretenv.secret_rewrap('\x0102'::bytea, 2);

SELECT s.label, sqlstate_of(s.stmt) AS sqlstate
FROM (VALUES
  ('short wrapped DEK', $$SELECT secretenv.secret_decrypt((env).encrypted_value, substr((env).wrapped_dek, 1, 59), 2, id, name) FROM good$$),
  ('long wrapped DEK', $$SELECT secretenv.secret_decrypt((env).encrypted_value, (env).wrapped_dek || '\x00'::bytea, 2, id, name) FROM good$$),
  ('short value', $$SELECT secretenv.secret_decrypt(substr((env).encrypted_value, 1, 27), (env).wrapped_dek, 2, id, name) FROM good$$),
  ('empty value', $$SELECT secretenv.secret_decrypt(''::bytea, (env).wrapped_dek, 2, id, name) FROM good$$),
  ('wrong version', $$SELECT secretenv.secret_decrypt((env).encrypted_value, (env).wrapped_dek, 1, id, name) FROM good$$),
  ('flipped DEK bit', $$SELECT secretenv.secret_decrypt((env).encrypted_value, set_byte((env).wrapped_dek, 30, get_byte((env).wrapped_dek, 30) # 1), 2, id, name) FROM good$$),
  ('flipped value bit', $$SELECT secretenv.secret_decrypt(set_byte((env).encrypted_value, 20, get_byte((env).encrypted_value, 20) # 128), (env).wrapped_dek, 2, id, name) FROM good$$),
  ('flipped tag bit', $$SELECT secretenv.secret_decrypt(set_byte((env).encrypted_value, length((env).encrypted_value) - 1, get_byte((env).encrypted_value, length((env).encrypted_value) - 1) # 1), (env).wrapped_dek, 2, id, name) FROM good$$),
  ('other name', $$SELECT secretenv.secret_decrypt(env, id, 'api-key2') FROM good$$),
  ('other id', $$SELECT secretenv.secret_decrypt(env, '33333333-3333-4333-8333-333333333334'::uuid, name) FROM good$$),
  ('id as upper-case text', $$SELECT secretenv.secret_decrypt(env, upper(id::text), name) FROM good$$),
  ('unconfigured version', $$SELECT secretenv.secret_decrypt((env).encrypted_value, (env).wrapped_dek, 7, id, name) FROM good$$),
  ('version 0', $$SELECT secretenv.secret_decrypt((env).encrypted_value, (env).wrapped_dek, 0, id, name) FROM good$$),
  ('negative version', $$SELECT secretenv.secret_rewrap((SELECT (env).wrapped_dek FROM good), -1)$$),
  ('pipe in text id', $$SELECT secretenv.secret_encrypt('v', 'a|b', 'n')$$),
  ('pipe in decrypt id', $$SELECT secretenv.secret_decrypt(env, 'a|b', name) FROM good$$),
  ('pipe in name is fine', $$SELECT secretenv.secret_encrypt('v', 'a', 'b|c')$$),
  ('rewrap malformed', $$SELECT secretenv.secret_rewrap('\x0102'::bytea, 2)$$),
  ('rewrap wrong KEK', $$SELECT secretenv.secret_rewrap((env).wrapped_dek, 1) FROM good$$),
  ('rewrap unconfigured', $$SELECT secretenv.secret_rewrap((env).wrapped_dek, 5) FROM good$$),
  ('still decrypts', $$SELECT secretenv.secret_decrypt(env, id, name) FROM good$$)
) s(label, stmt);

-- No error carries secret material: the plaintext never appears in a message.
DO $$
DECLARE
	msg text; det text; hint text;
BEGIN
	BEGIN
		PERFORM secretenv.secret_decrypt(env, id, 'x') FROM good;
	EXCEPTION WHEN OTHERS THEN
		GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
	END;
	RAISE NOTICE 'leaks plaintext: %', concat(msg, det, hint) LIKE '%sk-error-tests%';
END
$$;
