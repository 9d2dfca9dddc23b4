-- Privileges: nothing sensitive for PUBLIC; each role gets its part.
\set SHOW_CONTEXT never
CREATE ROLE regress_nobody;
CREATE ROLE regress_reader IN ROLE secretenv_reader;
CREATE ROLE regress_writer IN ROLE secretenv_writer;
CREATE ROLE regress_admin IN ROLE secretenv_admin;
GRANT EXECUTE ON FUNCTION public.sqlstate_of(text) TO PUBLIC;
SELECT secretenv.secret_create('priv-test', 'sk-privileges-0123456789') IS NOT NULL AS created;

-- What PUBLIC (an unprivileged role) may execute in the schema.
SELECT p.oid::regprocedure AS executable_by_public
FROM pg_proc p
WHERE p.pronamespace = 'secretenv'::regnamespace
  AND has_function_privilege('regress_nobody', p.oid, 'EXECUTE')
ORDER BY 1;
SELECT has_schema_privilege('regress_nobody', 'secretenv', 'USAGE') AS nobody_usage,
       has_table_privilege('regress_nobody', 'secretenv.secrets', 'SELECT') AS nobody_select;

-- Every SECURITY DEFINER function pins its search_path.
SELECT p.oid::regprocedure, p.proconfig
FROM pg_proc p
WHERE p.pronamespace = 'secretenv'::regnamespace AND p.prosecdef
ORDER BY p.oid::regprocedure::text COLLATE "C";

-- The whole surface, as each role.
CREATE TEMP TABLE surface (label text, stmt text);
INSERT INTO surface VALUES
  ('encrypt', $$SELECT secretenv.secret_encrypt('v', 'id', 'n')$$),
  ('decrypt', $$SELECT secretenv.secret_decrypt(encrypted_value, wrapped_dek, kek_version, secret_id, secret_name) FROM secretenv.secrets WHERE secret_name = 'priv-test'$$),
  ('rewrap', $$SELECT secretenv.secret_rewrap('\x00'::bytea, 2)$$),
  ('mask', $$SELECT secretenv.secret_mask('abcdefghij')$$),
  ('create', $$SELECT secretenv.secret_create('priv-' || md5(random()::text), 'value-0123456789')$$),
  ('update', $$SELECT secretenv.secret_update('priv-test', 'sk-privileges-0123456789')$$),
  ('get', $$SELECT secretenv.secret_get('priv-test')$$),
  ('delete', $$SELECT secretenv.secret_delete('no-such-name')$$),
  ('rotate', $$SELECT secretenv.secret_rotate_all()$$),
  ('status', $$SELECT secretenv.status()$$),
  ('verify', $$SELECT secretenv.verify_secrets()$$),
  ('masked view', $$SELECT count(*) FROM secretenv.masked_secrets$$),
  ('decrypted view', $$SELECT count(*) FROM secretenv.decrypted_secrets$$),
  ('table select', $$SELECT count(*) FROM secretenv.secrets$$),
  ('table ciphertext', $$SELECT count(encrypted_value) + count(wrapped_dek) FROM secretenv.secrets$$),
  ('table update', $$UPDATE secretenv.secrets SET description = 'x'$$),
  ('cache clear', $$SELECT secretenv.cache_clear()$$);
GRANT SELECT ON surface TO PUBLIC;

SET ROLE regress_nobody;
SELECT label, sqlstate_of(stmt) AS nobody FROM surface ORDER BY label;
RESET ROLE;
SET ROLE regress_reader;
SELECT label, sqlstate_of(stmt) AS reader FROM surface ORDER BY label;
RESET ROLE;
SET ROLE regress_writer;
SELECT label, sqlstate_of(stmt) AS writer FROM surface ORDER BY label;
RESET ROLE;
SET ROLE regress_admin;
SELECT label, sqlstate_of(stmt) AS admin FROM surface ORDER BY label;
RESET ROLE;

-- A cache hit does not bypass the table's privileges after SET ROLE.
SELECT secretenv.secret_get('priv-test');
GRANT EXECUTE ON FUNCTION secretenv.secret_get(text) TO regress_nobody;
GRANT USAGE ON SCHEMA secretenv TO regress_nobody;
SET ROLE regress_nobody;
SELECT secretenv.secret_get('priv-test');
RESET ROLE;
REVOKE USAGE ON SCHEMA secretenv FROM regress_nobody;
REVOKE EXECUTE ON FUNCTION secretenv.secret_get(text) FROM regress_nobody;

-- The passphrase settings cannot be read or set from SQL.
SHOW secretenv.kek_passphrase;
SELECT count(*) AS visible_in_pg_settings FROM pg_settings WHERE name LIKE 'secretenv.kek%passphrase%'
  AND name <> 'secretenv.kek_passphrase_command_timeout';
SET ROLE regress_nobody;
SELECT current_setting('secretenv.kek_passphrase');
SHOW secretenv.kek_previous_passphrase;
SELECT count(*) AS nobody_sees FROM pg_settings WHERE name LIKE 'secretenv.%passphrase%';
RESET ROLE;
ALTER SYSTEM SET secretenv.kek_passphrase = 'attempt';
SET secretenv.kek_passphrase = 'attempt';

SELECT secretenv.secret_delete('priv-test');
DELETE FROM secretenv.secrets WHERE secret_name LIKE 'priv-%';
DROP OWNED BY regress_nobody, regress_reader, regress_writer, regress_admin;
DROP ROLE regress_nobody, regress_reader, regress_writer, regress_admin;
