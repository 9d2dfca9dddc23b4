-- Install the extension and the helpers every later test file uses.
CREATE EXTENSION secretenv;

SELECT extname, extversion, extrelocatable, extnamespace::regnamespace
FROM pg_extension WHERE extname = 'secretenv';

SELECT rolname FROM pg_roles WHERE rolname LIKE 'secretenv\_%' ORDER BY rolname;

-- Every function has a comment.
SELECT p.oid::regprocedure AS function_without_comment
FROM pg_proc p
WHERE p.pronamespace = 'secretenv'::regnamespace
  AND obj_description(p.oid, 'pg_proc') IS NULL;

-- The key configuration of the regress cluster (test/regress.conf).
SELECT secretenv.key_config() - 'key_memory_locked' AS key_config;
SELECT secretenv.current_kek_version(),
       secretenv.kek_is_configured(1) AS v1, secretenv.kek_is_configured(2) AS v2,
       secretenv.kek_is_configured(3) AS v3;

-- Error helper: run a statement, return its SQLSTATE (or 'ok').
CREATE FUNCTION public.sqlstate_of(statement text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE statement;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE;
END
$$;
