-- The databases of the shared tracking server and their roles, least privilege (psql script, run as the
-- PostgreSQL superuser):
--   mlflow       (owner mlflow_tracking) the MLflow tracking and model registry store
--   mlflow_auth  (owner mlflow_auth)     MLflow's users and permissions
--   optuna       (owner optuna)          the studies that `tune` workers share
-- Each role owns its database and nothing else: no SUPERUSER, CREATEDB, CREATEROLE, REPLICATION or
-- BYPASSRLS, and no role may connect to another's database (CONNECT is revoked from PUBLIC).
-- Separate databases also because MLflow and optuna each keep an `alembic_version` table.
--
-- The postgres image runs this file on its first start (/docker-entrypoint-initdb.d); run it again to
-- rotate the role passwords (docs/SERVER.md): it is idempotent and sets each password from its file.
-- tests/native_services.py runs the same file against a native PostgreSQL.
-- The passwords are read from the files named by the environment variables below (compose secrets); they
-- never appear on a command line.
\set ON_ERROR_STOP on
\set tracking_password `cat "${PERSONDET_TRACKING_DB_PASSWORD_FILE:?names the file with the mlflow_tracking role's password}"`
\set auth_password `cat "${PERSONDET_AUTH_DB_PASSWORD_FILE:?names the file with the mlflow_auth role's password}"`
\set optuna_password `cat "${PERSONDET_OPTUNA_DB_PASSWORD_FILE:?names the file with the optuna role's password}"`

SELECT length(:'tracking_password') >= 12 AND length(:'auth_password') >= 12
       AND length(:'optuna_password') >= 12 AS passwords_ok \gset
\if :passwords_ok
\else
  DO $$ BEGIN RAISE EXCEPTION 'persondet: each database password file must hold at least 12 characters'; END $$;
\endif

SELECT format('CREATE ROLE %I', name) FROM unnest(ARRAY['mlflow_tracking', 'mlflow_auth', 'optuna']) AS name
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = name) \gexec

ALTER ROLE mlflow_tracking LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
  PASSWORD :'tracking_password';
ALTER ROLE mlflow_auth LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
  PASSWORD :'auth_password';
ALTER ROLE optuna LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
  PASSWORD :'optuna_password';

SELECT format('CREATE DATABASE %I OWNER %I', db, owner)
  FROM (VALUES ('mlflow', 'mlflow_tracking'), ('mlflow_auth', 'mlflow_auth'), ('optuna', 'optuna')) AS t(db, owner)
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = db) \gexec

-- The owner keeps its rights on its own database; nobody else may connect (the superuser always can).
REVOKE ALL ON DATABASE mlflow, mlflow_auth, optuna FROM PUBLIC;
REVOKE CONNECT, TEMPORARY ON DATABASE postgres, template1 FROM PUBLIC;
ALTER DATABASE mlflow OWNER TO mlflow_tracking;
ALTER DATABASE mlflow_auth OWNER TO mlflow_auth;
ALTER DATABASE optuna OWNER TO optuna;
