-- Least privilege for croft's database. CloudNativePG runs this once, at bootstrap, as the
-- postgres superuser inside the `croft` database (bootstrap.initdb.postInitApplicationSQLRefs).
-- On an existing cluster, run it by hand the same way:
--   kubectl -n croft exec -i croft-db-1 -- psql -v ON_ERROR_STOP=1 -d croft < deploy/k8s/base/sql/grants.sql
--
-- Roles:
--   croft_migrator  owns the database and every schema object; `croft migrate` (the
--                   croft-migrate Job) is the only thing that logs in as it.
--   croft_app       what auth, matchmaking and the connection servers log in as: read and
--                   write rows, nothing else (no CREATE, ALTER, DROP, TRUNCATE, no TEMP).
-- Both roles' LOGIN and passwords are managed by the Cluster resource (postgres.yaml).

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'croft_app') THEN
    -- The Cluster's managed roles add LOGIN and the password once the cluster is up.
    CREATE ROLE croft_app NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
  END IF;
END
$$;

-- Nobody but the roles below may connect or create temporary tables.
REVOKE ALL ON DATABASE croft FROM PUBLIC;
GRANT CONNECT ON DATABASE croft TO croft_app;
GRANT CONNECT, CREATE, TEMPORARY ON DATABASE croft TO croft_migrator;

-- Only the migrator creates objects in the schema.
ALTER SCHEMA public OWNER TO croft_migrator;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO croft_app;

-- Every table and sequence the migrator creates from now on (migrations run after this
-- script) is readable and writable by the service role, and nothing more.
ALTER DEFAULT PRIVILEGES FOR ROLE croft_migrator IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO croft_app;
ALTER DEFAULT PRIVILEGES FOR ROLE croft_migrator IN SCHEMA public
  GRANT USAGE, SELECT ON SEQUENCES TO croft_app;

-- Objects that already exist (a restored database, or this script run by hand later).
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO croft_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO croft_app;
