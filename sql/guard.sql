-- Nothing lost by accident: the (secret_encrypt(...)).* forms, check_envelope,
-- the drop guard, and the limits on names and values.
\set VERBOSITY terse
\set SHOW_CONTEXT never

CREATE FUNCTION public.opens(ev bytea, wd bytea, kv int4, id text, nm text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	RETURN secretenv.secret_decrypt(ev, wd, kv, id, nm);
EXCEPTION WHEN OTHERS THEN
	RETURN 'ERR:' || SQLSTATE;
END
$$;

-- 1 000 source rows; the first ten appear twice with equal arguments, which
-- must still get their own DEKs.
CREATE TABLE src AS
SELECT ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid AS id,
       'name-' || i AS name, 'value-' || md5(i::text) AS v
FROM generate_series(1, 990) i;
INSERT INTO src SELECT * FROM src ORDER BY name LIMIT 10;
SELECT count(*) AS source_rows FROM src;

-- INSERT ... SELECT (secret_encrypt(...)).*: one call per column in the plan ...
CREATE TABLE expanded (id uuid, name text, encrypted_value bytea, wrapped_dek bytea, kek_version int4);
EXPLAIN (VERBOSE, COSTS OFF)
INSERT INTO expanded SELECT id, name, (secretenv.secret_encrypt(v, id, name)).* FROM src;
-- ... and yet every row decrypts, and every row has its own DEK.
INSERT INTO expanded SELECT id, name, (secretenv.secret_encrypt(v, id, name)).* FROM src;
SELECT count(*) AS rows,
       count(*) FILTER (WHERE opens(e.encrypted_value, e.wrapped_dek, e.kek_version, e.id::text, e.name) = s.v) AS decrypt,
       count(DISTINCT e.wrapped_dek) AS distinct_deks, count(DISTINCT e.encrypted_value) AS distinct_values
FROM expanded e JOIN LATERAL (SELECT v FROM src WHERE src.id = e.id LIMIT 1) s ON true;

-- UPDATE ... SET (a, b, c) = (SELECT (secret_encrypt(...)).*): the same.
UPDATE expanded SET (encrypted_value, wrapped_dek, kek_version) =
	(SELECT (secretenv.secret_encrypt('new-' || name, id, name)).*);
SELECT count(*) AS rows,
       count(*) FILTER (WHERE opens(encrypted_value, wrapped_dek, kek_version, id::text, name) = 'new-' || name) AS decrypt,
       count(DISTINCT wrapped_dek) AS distinct_deks
FROM expanded;

-- jsonb values and text ids, expanded in a plain SELECT.
SELECT count(*) AS rows,
       count(*) FILTER (WHERE opens(ev, wd, kv, 'id-' || i, 'n')::jsonb = jsonb_build_object('i', i)) AS decrypt
FROM (SELECT i, (secretenv.secret_encrypt(jsonb_build_object('i', i), 'id-' || i, 'n')).*
      FROM generate_series(1, 50) i) s(i, ev, wd, kv);

-- Equal arguments in separate rows, or in separately written calls, never share an envelope.
SELECT count(DISTINCT wd) AS distinct_deks, count(*) FILTER (WHERE opens(ev, wd, kv, 'id', 'n') = 'same') AS decrypt
FROM (SELECT (secretenv.secret_encrypt('same', 'id', 'n')).* FROM generate_series(1, 100)) s(ev, wd, kv);
SELECT (a).wrapped_dek <> (b).wrapped_dek AS separate_calls_differ
FROM (SELECT secretenv.secret_encrypt('same', 'id', 'n') a, secretenv.secret_encrypt('same', 'id', 'n') b) s;

-- In parallel workers, and compiled by JIT where available: the same.
SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2; SET jit = on; SET jit_above_cost = 0;
CREATE TABLE expanded_parallel AS SELECT id, name, (secretenv.secret_encrypt(v, id, name)).* FROM src;
RESET parallel_setup_cost; RESET parallel_tuple_cost; RESET min_parallel_table_scan_size;
RESET max_parallel_workers_per_gather; RESET jit; RESET jit_above_cost;
SELECT count(*) AS rows,
       count(*) FILTER (WHERE opens(encrypted_value, wrapped_dek, kek_version, id::text, name) LIKE 'value-%') AS decrypt
FROM expanded_parallel;

-- Volatile arguments make the columns disagree: an ERROR, nothing written.
INSERT INTO expanded SELECT id, name, (secretenv.secret_encrypt(v, gen_random_uuid(), name)).* FROM src;
SELECT count(*) AS rows_after_error FROM expanded;

-- Sorting by one column of the expansion splits it across plan nodes: an
-- ERROR (0A000), nothing written; sorting by anything else is fine.
CREATE TABLE sorted (id uuid, name text, encrypted_value bytea, wrapped_dek bytea, kek_version int4);
EXPLAIN (VERBOSE, COSTS OFF)
SELECT id, name, (secretenv.secret_encrypt(v, id, name)).* FROM src ORDER BY 3;
INSERT INTO sorted SELECT id, name, (secretenv.secret_encrypt(v, id, name)).* FROM src ORDER BY 3;
INSERT INTO sorted SELECT id, name, (secretenv.secret_encrypt(v, id, name)).* FROM src ORDER BY 3, 4;
INSERT INTO sorted SELECT id, name, (secretenv.secret_encrypt(v, id, name)).* FROM src WHERE name = 'name-500' ORDER BY 3;
SELECT count(*) AS rows_after_errors FROM sorted;
INSERT INTO sorted SELECT id, name, (secretenv.secret_encrypt(v, id, name)).* FROM src ORDER BY name DESC;
INSERT INTO sorted SELECT DISTINCT ON (id) id, name, (secretenv.secret_encrypt(v, id, name)).* FROM src ORDER BY id;
SELECT count(*) AS rows,
       count(*) FILTER (WHERE opens(encrypted_value, wrapped_dek, kek_version, id::text, name) LIKE 'value-%') AS decrypt
FROM sorted;
-- A view keeps the expansion (without parse locations); its copies agree too,
-- also when the view is read twice in one query.
CREATE VIEW encrypted_src AS SELECT id, name, (secretenv.secret_encrypt(v, id, name)).* FROM src;
SELECT count(*) AS rows,
       count(*) FILTER (WHERE opens(a.encrypted_value, a.wrapped_dek, a.kek_version, a.id::text, a.name) LIKE 'value-%'
                          AND opens(b.encrypted_value, b.wrapped_dek, b.kek_version, b.id::text, b.name) LIKE 'value-%') AS decrypt
FROM encrypted_src a JOIN encrypted_src b USING (id, name)
WHERE a.name NOT IN (SELECT name FROM src GROUP BY name HAVING count(*) > 1);
-- A view's stored query keeps no parse locations, and PostgreSQL stores
-- separately written calls of the columns exactly as it stores the copies of
-- one (...).* (the same tree but for the statement length): in a view the
-- two cannot be told apart, so calls with equal arguments in one row share
-- one envelope there (with different arguments they do not; in a query
-- they never do).
CREATE VIEW separate_fields AS
SELECT id, name, (secretenv.secret_encrypt(v, id, name)).encrypted_value,
       (secretenv.secret_encrypt(v, id, name)).wrapped_dek, (secretenv.secret_encrypt(v, id, name)).kek_version
FROM src;
SELECT count(DISTINCT regexp_replace(regexp_replace(r.ev_action::text, '\m' || r.ev_class::oid::text || '\M', 'V', 'g'),
                                     ':(location|stmt_len) -?[0-9]+', '', 'g')) AS distinct_stored_trees
FROM pg_rewrite r WHERE r.ev_class IN ('separate_fields'::regclass, 'encrypted_src'::regclass);
CREATE VIEW two_calls AS
SELECT secretenv.secret_encrypt('same', 'id', 'n') a, secretenv.secret_encrypt('same', 'id', 'n') b,
       secretenv.secret_encrypt('other', 'id', 'n') c;
SELECT (a).wrapped_dek = (b).wrapped_dek AS equal_arguments_share_in_a_view,
       (a).wrapped_dek = (c).wrapped_dek AS different_arguments_share_in_a_view
FROM two_calls;
-- plpgsql functions whose calls sit at the same places (one shared plan
-- context in a transaction) are neither confused nor refused.
CREATE FUNCTION enc_a(v text, i uuid, n text) RETURNS secretenv.envelope LANGUAGE plpgsql AS
$$ DECLARE e secretenv.envelope; BEGIN e := ROW((secretenv.secret_encrypt(v, i, n)).*); RETURN e; END $$;
CREATE FUNCTION enc_b(v text, i uuid, n text) RETURNS secretenv.envelope LANGUAGE plpgsql AS
$$ DECLARE e secretenv.envelope; BEGIN e := ROW((secretenv.secret_encrypt(v, i, n)).*); RETURN e; END $$;
CREATE FUNCTION enc_c(v text, i uuid, n text) RETURNS secretenv.envelope LANGUAGE plpgsql AS
$$ DECLARE e secretenv.envelope; BEGIN e := secretenv.secret_encrypt(v, i, n); RETURN e; END $$;
BEGIN;
SELECT count(*) FILTER (WHERE secretenv.secret_decrypt(enc_a(v, id, name), id, name) = v) AS a,
       count(*) FILTER (WHERE secretenv.secret_decrypt(enc_b(v, id, name), id, name) = v) AS b,
       count(*) FILTER (WHERE secretenv.secret_decrypt(enc_c(v, id, name), id, name) = v) AS c
FROM src;
COMMIT;

-- The form the README shows first: one call per row in FROM.
CREATE TABLE lateral_form (id uuid, name text, encrypted_value bytea, wrapped_dek bytea, kek_version int4);
INSERT INTO lateral_form SELECT s.id, s.name, e.* FROM src s, LATERAL secretenv.secret_encrypt(s.v, s.id, s.name) e;
SELECT count(*) AS rows,
       count(*) FILTER (WHERE opens(encrypted_value, wrapped_dek, kek_version, id::text, name) LIKE 'value-%') AS decrypt
FROM lateral_form;

-------------------------------------------------------------------------------
-- check_envelope
-------------------------------------------------------------------------------

-- Five columns, uuid ids.
CREATE TABLE app_keys (id uuid PRIMARY KEY, name text NOT NULL, encrypted_value bytea,
                       wrapped_dek bytea, kek_version int4, note text);
CREATE TRIGGER app_keys_check BEFORE INSERT OR UPDATE ON app_keys FOR EACH ROW
	EXECUTE FUNCTION secretenv.check_envelope('encrypted_value', 'wrapped_dek', 'kek_version', 'id', 'name');
INSERT INTO app_keys (id, name, encrypted_value, wrapped_dek, kek_version)
SELECT s.id, s.name, e.* FROM src s, LATERAL secretenv.secret_encrypt(s.v, s.id, s.name) e
WHERE s.name IN ('name-501', 'name-502', 'name-503');
SELECT count(*) AS good_rows_accepted FROM app_keys;
-- Rows whose envelope does not open are refused, with the check that failed.
-- A wrapped DEK has no AAD: one swapped in from another row under the same KEK
-- unwraps, and the value check refuses the row (22S03); one from another KEK
-- (here a version-1 wrap from test/fixtures/make_v1_rows.py) or a damaged one
-- does not unwrap (22S02).
SELECT c.label, sqlstate_of(c.stmt) AS sqlstate
FROM (VALUES
  ('swapped wrapped DEK, same KEK', $$UPDATE app_keys SET wrapped_dek = (SELECT wrapped_dek FROM app_keys WHERE name = 'name-502') WHERE name = 'name-501'$$),
  ('swapped wrapped DEK, other KEK', $$UPDATE app_keys SET wrapped_dek = '\x9be3309d156fcbcc1178cd2d05061d6eabbd0364c71899236a54f3d0cbfc40f12d6d8cefd3f79ca93361d6bf9d083b60c2ceace3ffe52536ac1426ef' WHERE name = 'name-501'$$),
  ('flipped wrapped DEK bit', $$UPDATE app_keys SET wrapped_dek = set_byte(wrapped_dek, 20, get_byte(wrapped_dek, 20) # 1) WHERE name = 'name-501'$$),
  ('wrong KEK version', $$UPDATE app_keys SET kek_version = 1 WHERE name = 'name-501'$$),
  ('swapped value', $$UPDATE app_keys SET encrypted_value = (SELECT encrypted_value FROM app_keys WHERE name = 'name-502') WHERE name = 'name-501'$$),
  ('swapped value and DEK', $$UPDATE app_keys SET (encrypted_value, wrapped_dek) = (SELECT encrypted_value, wrapped_dek FROM app_keys WHERE name = 'name-502') WHERE name = 'name-501'$$),
  ('copied to another name', $$INSERT INTO app_keys SELECT gen_random_uuid(), 'renamed', encrypted_value, wrapped_dek, kek_version FROM app_keys WHERE name = 'name-503'$$),
  ('truncated wrapped DEK', $$UPDATE app_keys SET wrapped_dek = substr(wrapped_dek, 1, 59) WHERE name = 'name-501'$$),
  ('unconfigured version', $$UPDATE app_keys SET kek_version = 9 WHERE name = 'name-501'$$),
  ('version 0', $$UPDATE app_keys SET kek_version = 0 WHERE name = 'name-501'$$)
) c(label, stmt);
-- The messages say which check failed.
UPDATE app_keys SET wrapped_dek = set_byte(wrapped_dek, 20, get_byte(wrapped_dek, 20) # 1) WHERE name = 'name-501';
UPDATE app_keys SET encrypted_value = (SELECT encrypted_value FROM app_keys WHERE name = 'name-502') WHERE name = 'name-501';
UPDATE app_keys SET wrapped_dek = substr(wrapped_dek, 1, 59) WHERE name = 'name-501';
-- The (...).* form passes the check; the columns of two calls do not.
INSERT INTO app_keys (id, name, encrypted_value, wrapped_dek, kek_version)
SELECT id, name, (secretenv.secret_encrypt(v, id, name)).* FROM src WHERE name = 'name-504';
INSERT INTO app_keys (id, name, encrypted_value, wrapped_dek, kek_version)
SELECT id, name, (secretenv.secret_encrypt(v, id, name)).encrypted_value,
       (secretenv.secret_encrypt(v, id, name)).wrapped_dek, 2
FROM src WHERE name = 'name-505';
-- Other columns change freely; a rotation and a fresh value pass; NULL is no envelope.
UPDATE app_keys SET note = 'checked' WHERE name = 'name-501';
UPDATE app_keys SET wrapped_dek = secretenv.secret_rewrap(wrapped_dek, kek_version) WHERE name = 'name-502';
UPDATE app_keys SET (encrypted_value, wrapped_dek, kek_version) = (SELECT e.* FROM secretenv.secret_encrypt('fresh', id, name) e)
WHERE name = 'name-503';
INSERT INTO app_keys (id, name) VALUES (gen_random_uuid(), 'no-value-yet');
SELECT name, note, opens(encrypted_value, wrapped_dek, kek_version, id::text, name) LIKE 'value-%' OR
       opens(encrypted_value, wrapped_dek, kek_version, id::text, name) = 'fresh' AS opens
FROM app_keys ORDER BY name;

-- Three columns: an envelope column, text ids.
CREATE TABLE app_tokens (id text PRIMARY KEY, name varchar NOT NULL, env secretenv.envelope);
CREATE TRIGGER app_tokens_check BEFORE INSERT OR UPDATE ON app_tokens FOR EACH ROW
	EXECUTE FUNCTION secretenv.check_envelope('env', 'id', 'name');
INSERT INTO app_tokens VALUES ('tok-1', 'token one', secretenv.secret_encrypt('t1-value', 'tok-1', 'token one')),
                              ('tok-2', 'token two', secretenv.secret_encrypt('t2-value', 'tok-2', 'token two'));
SELECT sqlstate_of($$UPDATE app_tokens SET env = (SELECT env FROM app_tokens WHERE id = 'tok-2') WHERE id = 'tok-1'$$) AS swapped_envelope,
       sqlstate_of($$UPDATE app_tokens SET env = ROW((env).encrypted_value, set_byte((env).wrapped_dek, 0, get_byte((env).wrapped_dek, 0) # 1), 2) WHERE id = 'tok-1'$$) AS damaged_wrapped_dek,
       sqlstate_of($$UPDATE app_tokens SET id = 'tok-3' WHERE id = 'tok-1'$$) AS changed_id;
SELECT id, secretenv.secret_decrypt(env, id, name) FROM app_tokens ORDER BY id;

-- Misuse is reported.
CREATE TABLE env_misuse (a int, b bytea, c bytea, d int4, e text);
CREATE TRIGGER wrong_args BEFORE INSERT ON env_misuse FOR EACH ROW EXECUTE FUNCTION secretenv.check_envelope('b');
INSERT INTO env_misuse VALUES (1, '\x00', '\x00', 2, 'x');
DROP TRIGGER wrong_args ON env_misuse;
CREATE TRIGGER wrong_type BEFORE INSERT ON env_misuse FOR EACH ROW EXECUTE FUNCTION secretenv.check_envelope('b', 'c', 'd', 'a', 'e');
INSERT INTO env_misuse VALUES (1, '\x00', '\x00', 2, 'x');
DROP TRIGGER wrong_type ON env_misuse;
CREATE TRIGGER no_column BEFORE INSERT ON env_misuse FOR EACH ROW EXECUTE FUNCTION secretenv.check_envelope('b', 'c', 'd', 'nope', 'e');
INSERT INTO env_misuse VALUES (1, '\x00', '\x00', 2, 'x');
DROP TRIGGER no_column ON env_misuse;
CREATE TRIGGER after_row AFTER INSERT ON env_misuse FOR EACH ROW EXECUTE FUNCTION secretenv.check_envelope('b', 'c', 'd', 'e', 'e');
INSERT INTO env_misuse VALUES (1, '\x00', '\x00', 2, 'x');
SELECT sqlstate_of($$SELECT secretenv.check_envelope()$$) AS direct_call;

-- Not executable by PUBLIC: it is an oracle on ciphertexts.
SELECT r AS role, has_function_privilege(r, 'secretenv.check_envelope()', 'EXECUTE') AS can_execute
FROM unnest(ARRAY['public', 'secretenv_reader', 'secretenv_writer', 'secretenv_admin']) r;

-------------------------------------------------------------------------------
-- Names and values
-------------------------------------------------------------------------------

SELECT count(*) AS stored_before FROM secretenv.secrets \gset
-- Too long: 54000 with a clear message, also for a random (incompressible) name.
SELECT secretenv.secret_create(repeat('n', 1025), 'v');
SELECT sqlstate_of($$SELECT secretenv.secret_create((SELECT string_agg(md5(i::text), '') FROM generate_series(1, 313) i), 'v')$$) AS random_10016_chars;
SELECT secretenv.secret_update(repeat('n', 1025), 'v');
-- 1024 bytes is fine (512 two-byte characters).
SELECT secretenv.secret_create(repeat('é', 512), 'long-name-value') IS NOT NULL AS created_1024_bytes;
SELECT secretenv.secret_get(repeat('é', 512));
-- Empty or blank: 22023.
SELECT secretenv.secret_create('', 'v');
SELECT secretenv.secret_create(E' \t\n', 'v');
SELECT secretenv.secret_create(U&'\00A0\3000', '{"a": 1}'::jsonb);
SELECT secretenv.secret_update('', 'v');
-- Values: at most 1 MiB (text, or jsonb as its JSON text).
SELECT secretenv.secret_create('big', repeat('x', 1048577));
SELECT secretenv.secret_create('big', jsonb_build_object('k', repeat('x', 1048570)));
SELECT secretenv.secret_encrypt(repeat('x', 1048577), 'id', 'n');
SELECT secretenv.secret_create('big', repeat('x', 1048576)) IS NOT NULL AS created_1_mib;
SELECT secretenv.secret_update('big', repeat('y', 1048577));
SELECT octet_length(secretenv.secret_get('big')) AS big_len, left(secretenv.secret_get('big'), 3);
-- Reads and deletes of names that cannot exist simply find nothing.
SELECT secretenv.secret_delete(repeat('n', 5000)) AS deleted, sqlstate_of($$SELECT secretenv.secret_get('')$$) AS get_blank;
-- Direct writes meet the CHECK constraint.
INSERT INTO secretenv.secrets (secret_name, encrypted_value, wrapped_dek, kek_version) VALUES (' ', '\x00', '\x00', 2);
-- Nothing of the refused writes was stored: only the two accepted secrets are new.
SELECT count(*) FILTER (WHERE secret_name NOT IN (repeat('é', 512), 'big')) - :stored_before AS refused_writes_stored,
       count(*) FILTER (WHERE secret_name IN (repeat('é', 512), 'big')) AS accepted
FROM secretenv.secrets;
SELECT secretenv.secret_delete(repeat('é', 512)) AND secretenv.secret_delete('big') AS cleaned;

-------------------------------------------------------------------------------
-- The drop guard (last: it drops, and rolls back)
-------------------------------------------------------------------------------

SELECT evtname, evtevent, evtenabled, evttags FROM pg_event_trigger;
SELECT secretenv.secret_create('guarded', 'do-not-lose-me') IS NOT NULL AS created;
SHOW secretenv.allow_drop_with_secrets;
DROP EXTENSION secretenv;
DROP EXTENSION IF EXISTS secretenv CASCADE;
DROP SCHEMA secretenv CASCADE;
DROP OWNED BY CURRENT_USER;
SELECT secretenv.secret_get('guarded');
-- Dropping other things is none of its business.
CREATE SCHEMA unrelated;
DROP SCHEMA unrelated;
-- Only a superuser may allow it.
CREATE ROLE regress_guard_user;
SET ROLE regress_guard_user;
SET secretenv.allow_drop_with_secrets = on;
DROP EXTENSION secretenv;
RESET ROLE;
-- ... and only in the session: a setting that would outlive it is refused.
ALTER ROLE regress_guard_user SET secretenv.allow_drop_with_secrets = on;
ALTER SYSTEM SET secretenv.allow_drop_with_secrets = on;
CREATE FUNCTION allow_drop() RETURNS void LANGUAGE sql SET secretenv.allow_drop_with_secrets = on AS 'SELECT';
DROP ROLE regress_guard_user;
-- Allowed by a superuser in this session: the drop goes through (rolled back here).
SET client_min_messages = warning;
BEGIN;
SET LOCAL secretenv.allow_drop_with_secrets = on;
DROP EXTENSION secretenv CASCADE;
SELECT count(*) AS extensions_left FROM pg_extension WHERE extname = 'secretenv';
ROLLBACK;
BEGIN;
SET LOCAL secretenv.allow_drop_with_secrets = on;
DROP SCHEMA secretenv CASCADE;
ROLLBACK;
-- With no secret stored, nothing to refuse.
BEGIN;
DELETE FROM secretenv.secrets;
DROP EXTENSION secretenv CASCADE;
SELECT count(*) AS extensions_left FROM pg_extension WHERE extname = 'secretenv';
ROLLBACK;
RESET client_min_messages;
SELECT secretenv.secret_get('guarded');
SELECT secretenv.secret_delete('guarded');
