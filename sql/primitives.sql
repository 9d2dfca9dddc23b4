-- secret_encrypt / secret_decrypt / secret_rewrap round trips.
CREATE TABLE vault (id uuid, name text, env secretenv.envelope);

INSERT INTO vault
SELECT id, name, secretenv.secret_encrypt(value, id, name)
FROM (VALUES ('11111111-2222-4333-8444-555555555555'::uuid, 'openai-prod', 'sk-proj-4f9Qx2LmN8vR7tYz1Kp3Wq6Es0Da5Hb'),
             ('11111111-2222-4333-8444-555555555556', 'clé-secrète', 'mot de passe été ☃ 密码'),
             ('11111111-2222-4333-8444-555555555557', 'empty', ''),
             ('11111111-2222-4333-8444-555555555558', 'team|prod', repeat('x', 10000))) v(id, name, value);

-- Byte layout: value = plaintext + 28 bytes, wrapped DEK = 60 bytes, current version.
SELECT name, length((env).encrypted_value) AS value_len, octet_length(secretenv.secret_decrypt(env, id, name)) + 28 AS expected_len,
       length((env).wrapped_dek) AS dek_len, (env).kek_version
FROM vault ORDER BY name;

-- Round trip, both overloads.
SELECT name, secretenv.secret_decrypt((env).encrypted_value, (env).wrapped_dek, (env).kek_version, id, name) = secretenv.secret_decrypt(env, id, name) AS same,
       left(secretenv.secret_decrypt(env, id, name), 24) AS value_prefix
FROM vault ORDER BY name;

-- The uuid form of an id is its canonical lower-case text.
SELECT secretenv.secret_decrypt(env, id::text, name) = secretenv.secret_decrypt(env, id, name) AS uuid_is_text
FROM vault WHERE name = 'openai-prod';

-- Fresh DEK and nonces on every call: same input, different bytes.
SELECT e1 <> e2 AS values_differ, w1 <> w2 AS wrapped_deks_differ
FROM (SELECT (a).encrypted_value e1, (b).encrypted_value e2, (a).wrapped_dek w1, (b).wrapped_dek w2
      FROM (SELECT secretenv.secret_encrypt('same', 'id-1', 'n') a, secretenv.secret_encrypt('same', 'id-1', 'n') b) s) t;

-- Text ids (MLflow store ids) and jsonb secrets come back as JSON text.
SELECT secretenv.secret_decrypt(secretenv.secret_encrypt('{"api_key": "sk-abc", "port": 5432}'::jsonb,
                                                         's-0123456789abcdef0123456789abcdef', 'store-row'),
                                's-0123456789abcdef0123456789abcdef', 'store-row') AS json_text;
SELECT secretenv.secret_decrypt(secretenv.secret_encrypt('{"b": [1, 2], "a": "é"}'::jsonb,
                                                         '22222222-2222-4222-8222-222222222222'::uuid, 'j'),
                                '22222222-2222-4222-8222-222222222222'::uuid, 'j')::jsonb = '{"a": "é", "b": [1, 2]}' AS jsonb_roundtrip;

-- Rewrap: new wrapped DEK under the current KEK, same DEK (the value still opens).
SELECT (env).wrapped_dek <> secretenv.secret_rewrap((env).wrapped_dek, (env).kek_version) AS rewrapped_differs,
       secretenv.secret_decrypt((env).encrypted_value, secretenv.secret_rewrap((env).wrapped_dek, (env).kek_version),
                                secretenv.current_kek_version(), id, name) = secretenv.secret_decrypt(env, id, name) AS still_opens
FROM vault WHERE name = 'openai-prod';

-- kek_opens never returns the DEK, only whether it opens.
SELECT secretenv.kek_opens((env).wrapped_dek, 2) AS opens_v2, secretenv.kek_opens((env).wrapped_dek, 1) AS opens_v1,
       secretenv.kek_opens((env).wrapped_dek, 3) AS opens_unconfigured
FROM vault WHERE name = 'openai-prod';

-- STRICT: NULL in, NULL out.
SELECT secretenv.secret_encrypt(NULL::text, 'id', 'n') IS NULL AS enc_null,
       secretenv.secret_decrypt(NULL, '\x00'::bytea, 1, 'id', 'n') IS NULL AS dec_null,
       secretenv.secret_decrypt(ROW(NULL, NULL, 1)::secretenv.envelope, 'id', 'n') IS NULL AS dec_null_field,
       secretenv.secret_rewrap(NULL, 1) IS NULL AS rewrap_null,
       secretenv.secret_mask(NULL::text) IS NULL AS mask_null;

-- Volatility and parallel safety are declared honestly.
SELECT p.oid::regprocedure, p.provolatile, p.proparallel, p.proisstrict, p.prosecdef
FROM pg_proc p WHERE p.pronamespace = 'secretenv'::regnamespace
ORDER BY p.oid::regprocedure::text;
