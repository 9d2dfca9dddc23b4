-- Rotation: rows written under the previous KEK (version 1) move to the
-- current one (version 2); encrypted_value never changes.
\set SHOW_CONTEXT never
-- Rows made by test/fixtures/make_v1_rows.py under the previous passphrase.
INSERT INTO secretenv.secrets (secret_id, secret_name, encrypted_value, wrapped_dek, kek_version, masked_value)
VALUES ('00000000-0000-4000-8000-000000000001', 'legacy-openai', '\x4affe440ea0b43a053fd73d9357ecfde3ae57ccec46df28208f702b9f18e47bf9d3a9da3a113ef9fcbcdaff211529148d5ccbeb2c224d5', '\x9be3309d156fcbcc1178cd2d05061d6eabbd0364c71899236a54f3d0cbfc40f12d6d8cefd3f79ca93361d6bf9d083b60c2ceace3ffe52536ac1426ef', 1, to_jsonb(secretenv.secret_mask('sk-legacy-openai-0123456789')));
INSERT INTO secretenv.secrets (secret_id, secret_name, encrypted_value, wrapped_dek, kek_version, masked_value)
VALUES ('00000000-0000-4000-8000-000000000002', 'legacy-aws', '\xc36de0aec542b3f1a3f753297ea51791dc1a9fa6507486a8ab7a0acb6b35db35fa9bb5378c2289c92caf5a3a4babcd25bfad237f4ca603', '\x782b673d2338d9b9cf4515a890b7ca050d811a854854b53f6379df342bb6d361eef89a883fd2d2f4557fda3ccf6214161d42c55dbf6b15916535f25c', 1, to_jsonb(secretenv.secret_mask('AKIALEGACY/abcdefghijklmnop')));
INSERT INTO secretenv.secrets (secret_id, secret_name, encrypted_value, wrapped_dek, kek_version, masked_value)
VALUES ('00000000-0000-4000-8000-000000000003', 'légacy-ключ', '\x9b5fc79b71929685b8018d5069f63d4409be51096c43a22f97e8f4d34e6137c1c4e663aa4d5424a01781dfd2a3d8f7ff9560596a5a7197f44cad60ac', '\x73b19178f9e802abd5c9ceb6d13017b33df4903e2ea46bd3765afc1c487b589506141c9ef853343aca08286a159667a460a5a2e8eb4173980ddbfb23', 1, to_jsonb(secretenv.secret_mask('пароль-legacy-секрет')));
SELECT secretenv.secret_create('current-row', 'sk-current-row-0123456789') IS NOT NULL AS created;

SELECT kek_version, count(*) FROM secretenv.secrets GROUP BY 1 ORDER BY 1;
SELECT s -> 'versions' AS versions, s -> 'rotation_complete' AS complete FROM secretenv.status() s;
-- Old rows are readable through the previous KEK before rotation.
SELECT secret_name, value FROM secretenv.decrypted_secrets ORDER BY secret_name;

CREATE TEMP TABLE before_rotation AS SELECT secret_id, encrypted_value, wrapped_dek, kek_version FROM secretenv.secrets;
SELECT secretenv.secret_rotate_all() AS rotated;
SELECT secretenv.secret_rotate_all() AS rotated_again;

SELECT kek_version, count(*) FROM secretenv.secrets GROUP BY 1 ORDER BY 1;
SELECT count(*) FILTER (WHERE s.encrypted_value = b.encrypted_value) AS values_unchanged,
       count(*) FILTER (WHERE s.wrapped_dek <> b.wrapped_dek AND b.kek_version = 1) AS deks_rewrapped,
       count(*) FILTER (WHERE s.wrapped_dek = b.wrapped_dek AND b.kek_version = 2) AS current_untouched
FROM secretenv.secrets s JOIN before_rotation b USING (secret_id);
SELECT secret_name, value FROM secretenv.decrypted_secrets ORDER BY secret_name;
SELECT secretenv.status() -> 'rotation_complete' AS complete;
SELECT count(*) AS failures FROM secretenv.verify_secrets();

-- A row whose KEK is not configured: rotation refuses and changes nothing.
INSERT INTO secretenv.secrets (secret_id, secret_name, encrypted_value, wrapped_dek, kek_version)
SELECT '00000000-0000-4000-8000-000000000009', 'orphan', encrypted_value, wrapped_dek, 9
FROM secretenv.secrets WHERE secret_name = 'legacy-aws';
INSERT INTO secretenv.secrets (secret_id, secret_name, encrypted_value, wrapped_dek, kek_version)
SELECT '00000000-0000-4000-8000-000000000005', 'orphan-5', encrypted_value, wrapped_dek, 5
FROM secretenv.secrets WHERE secret_name = 'legacy-aws';
CREATE TEMP TABLE before_refusal AS SELECT secret_id, wrapped_dek, kek_version FROM secretenv.secrets;
SELECT secretenv.secret_rotate_all();
SELECT count(*) AS changed_rows
FROM secretenv.secrets s JOIN before_refusal b USING (secret_id)
WHERE s.wrapped_dek <> b.wrapped_dek OR s.kek_version <> b.kek_version;
SELECT secret_name, kek_version, failed_check FROM secretenv.verify_secrets() ORDER BY secret_name;
SELECT s -> 'versions' AS versions FROM secretenv.status() s;
DELETE FROM secretenv.secrets WHERE secret_name LIKE 'orphan%';
SELECT secretenv.secret_rotate_all() AS rotated_after_cleanup;
