-- secret_mask: first 3 + '...' + last 4 code points; '***' below 8.
SELECT v, secretenv.secret_mask(v) AS masked, char_length(v) AS chars, octet_length(v) AS bytes
FROM (VALUES (''), ('a'), ('1234567'), ('12345678'), ('123456789'),
             ('sk-proj-4f9Qx2LmN8vR7tYz1Kp3Wq6Es0Da5Hb'),
             ('ключ1234'), ('ключ123'), ('密码密码密码密码'), ('🔑🔑🔑🔑🔑🔑🔑🔑🔑'),
             ('é'), ('naïve-résumé')) t(v);

-- Objects: every top-level value masked; non-strings become "***".
SELECT secretenv.secret_mask('{}'::jsonb) AS empty_object;
SELECT secretenv.secret_mask('{"api_key": "sk-types-0123456789", "port": 5432, "enabled": true, "ratio": 0.5, "nothing": null, "list": [1, "two"], "nested": {"host": "localhost"}, "short": "abc"}'::jsonb) AS masked;
-- Anything else is masked as one value.
SELECT secretenv.secret_mask('"a-long-json-string"'::jsonb) AS scalar_string,
       secretenv.secret_mask('42'::jsonb) AS scalar_number,
       secretenv.secret_mask('[1, 2, 3]'::jsonb) AS array_value;
-- Immutable and strict.
SELECT provolatile, proisstrict FROM pg_proc WHERE oid = 'secretenv.secret_mask(text)'::regprocedure;
