-- The managed store: create, get, update, delete, views.
\set SHOW_CONTEXT never
SELECT secretenv.secret_create('openai', 'sk-proj-4f9Qx2LmN8vR7tYz1Kp3Wq6Es0Da5Hb', 'openai', 'production key') IS NOT NULL AS created;
SELECT secretenv.secret_create('aws', '{"access_key_id": "AKIAABCDEFGHIJKLMNOP", "secret_access_key": "wJalrXUtnFEMI/K7MDENG", "region": "eu-west-1", "ttl": 3600}'::jsonb, 'aws') IS NOT NULL AS created;
SELECT secretenv.secret_create('ключ-api', 'пароль-очень-секретный') IS NOT NULL AS created;

SELECT secret_name, masked_value, kek_version, provider, description, created_by = current_user AS by_me
FROM secretenv.masked_secrets ORDER BY secret_name;

-- The view shows no ciphertext and no plaintext.
SELECT attname FROM pg_attribute
WHERE attrelid = 'secretenv.masked_secrets'::regclass AND attnum > 0 ORDER BY attnum;

SELECT secretenv.secret_get('openai');
SELECT secretenv.secret_get('aws')::jsonb ->> 'region' AS region;
SELECT secretenv.secret_get('ключ-api');
SELECT secret_name, value FROM secretenv.decrypted_secrets ORDER BY secret_name;

-- Update: fresh DEK, new mask, new value.
CREATE TEMP TABLE before_update AS SELECT secret_name, encrypted_value, wrapped_dek FROM secretenv.secrets;
SELECT secretenv.secret_update('openai', 'sk-proj-rotated-by-hand-0000000001');
SELECT s.secret_name, s.encrypted_value <> b.encrypted_value AS value_changed, s.wrapped_dek <> b.wrapped_dek AS dek_changed,
       s.masked_value, s.last_updated_at >= s.created_at AS updated_later
FROM secretenv.secrets s JOIN before_update b USING (secret_name) WHERE secret_name = 'openai';
SELECT secretenv.secret_get('openai');
SELECT secretenv.secret_update('aws', '{"access_key_id": "AKIAZZZZZZZZZZZZZZZZ"}'::jsonb);
SELECT masked_value FROM secretenv.secrets WHERE secret_name = 'aws';

-- Missing names, duplicates, NULLs.
SELECT secretenv.secret_get('no-such-secret');
SELECT secretenv.secret_update('no-such-secret', 'x');
SELECT secretenv.secret_create('openai', 'duplicate');
SELECT secretenv.secret_create('null-value', NULL::text);
SELECT secretenv.secret_get(NULL) IS NULL AS get_null;
SELECT sqlstate_of($$SELECT secretenv.secret_get('no-such-secret')$$) AS get_missing,
       sqlstate_of($$SELECT secretenv.secret_update('no-such-secret', 'x')$$) AS update_missing,
       sqlstate_of($$SELECT secretenv.secret_create('openai', 'duplicate')$$) AS duplicate,
       sqlstate_of($$SELECT secretenv.secret_create(NULL, 'x')$$) AS null_name,
       sqlstate_of($$SELECT secretenv.secret_update('openai', NULL::text)$$) AS null_update;

-- Delete.
SELECT secretenv.secret_delete('ключ-api') AS deleted, secretenv.secret_delete('ключ-api') AS deleted_again;
SELECT count(*) FROM secretenv.secrets;

-- The tables' rows (secrets, access rules, audit records, versions) are dumped by pg_dump with the extension.
SELECT extconfig::regclass[] FROM pg_extension WHERE extname = 'secretenv';

-- status(): versions, health and cache, never key material.
SELECT s - 'cache' - 'key_memory_locked' - 'databases' - 'oldest_value_encrypted_at' - 'audit' AS status FROM secretenv.status() s;
-- The access audit's settings (its counters depend on what ran before).
SELECT (s->'audit') - 'queued' - 'written' - 'pending' AS audit FROM secretenv.status() s;
SELECT secretenv.status()::text ~ 'passphrase-0123' AS shows_passphrase;
SELECT count(*) AS failures FROM secretenv.verify_secrets();
