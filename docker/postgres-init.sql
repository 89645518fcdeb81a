-- Databases next to POSTGRES_DB (= mlflow, the tracking backend store), created on the first start:
-- the auth app's users and permissions, and the optuna studies that `tune` workers share.
-- (Separate databases because MLflow and optuna both keep an `alembic_version` table.)
CREATE DATABASE mlflow_auth;
CREATE DATABASE optuna;
