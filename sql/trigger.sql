-- The identity columns of a secret are immutable, for every role.
\set SHOW_CONTEXT never
SELECT secretenv.secret_create('trigger-test', 'sk-trigger-0123456789') IS NOT NULL AS created;

-- Rename and re-id are refused, even for a superuser.
SELECT rolsuper FROM pg_roles WHERE rolname = current_user;
UPDATE secretenv.secrets SET secret_name = 'renamed' WHERE secret_name = 'trigger-test';
UPDATE secretenv.secrets SET secret_id = gen_random_uuid() WHERE secret_name = 'trigger-test';
-- Also with ordinary triggers switched off.
SET session_replication_role = replica;
UPDATE secretenv.secrets SET secret_name = 'renamed' WHERE secret_name = 'trigger-test';
RESET session_replication_role;
SELECT sqlstate_of($$UPDATE secretenv.secrets SET secret_name = 'renamed' WHERE secret_name = 'trigger-test'$$) AS rename,
       sqlstate_of($$UPDATE secretenv.secrets SET secret_id = gen_random_uuid() WHERE secret_name = 'trigger-test'$$) AS reid;

-- Other columns, and assignments that keep the identity, are fine.
UPDATE secretenv.secrets SET description = 'still here', secret_name = secret_name
WHERE secret_name = 'trigger-test';
SELECT secret_name, description FROM secretenv.secrets WHERE secret_name = 'trigger-test';
SELECT secretenv.secret_get('trigger-test');
SELECT secretenv.secret_delete('trigger-test');

-- On a user table, the trigger arguments name the protected columns.
CREATE TABLE app_secrets (id text PRIMARY KEY, name text NOT NULL, env secretenv.envelope, note text);
CREATE TRIGGER app_identity BEFORE UPDATE ON app_secrets
	FOR EACH ROW EXECUTE FUNCTION secretenv.forbid_identity_change('id', 'name');
INSERT INTO app_secrets VALUES ('app-1', 'db-password', secretenv.secret_encrypt('hunter2-but-longer', 'app-1', 'db-password'), NULL);
UPDATE app_secrets SET name = 'other' WHERE id = 'app-1';
UPDATE app_secrets SET id = 'app-2' WHERE id = 'app-1';
UPDATE app_secrets SET note = 'ok', env = secretenv.secret_encrypt('new-value-12345', id, name) WHERE id = 'app-1';
SELECT id, name, note, secretenv.secret_decrypt(env, id, name) FROM app_secrets;

-- Misuse of the trigger function is reported.
CREATE TABLE misuse (a int, b text);
CREATE TRIGGER no_args BEFORE UPDATE ON misuse FOR EACH ROW EXECUTE FUNCTION secretenv.forbid_identity_change();
CREATE TRIGGER bad_column BEFORE UPDATE ON misuse FOR EACH ROW EXECUTE FUNCTION secretenv.forbid_identity_change('nope');
CREATE TRIGGER after_stmt AFTER UPDATE ON misuse FOR EACH STATEMENT EXECUTE FUNCTION secretenv.forbid_identity_change('a');
INSERT INTO misuse VALUES (1, 'x');
SELECT sqlstate_of($$UPDATE misuse SET a = 2$$);
DROP TRIGGER no_args ON misuse;
SELECT sqlstate_of($$UPDATE misuse SET a = 2$$);
DROP TRIGGER bad_column ON misuse;
SELECT sqlstate_of($$UPDATE misuse SET a = 2$$);
SELECT sqlstate_of($$SELECT secretenv.forbid_identity_change()$$);
