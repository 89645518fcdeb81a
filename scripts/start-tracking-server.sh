#!/usr/bin/env bash
# Start the shared MLflow tracking server (PostgreSQL backend, served artifacts, basic-auth).
# The one start script of docker-compose's `mlflow` service and of the integration tests:
# waits for the database, runs `mlflow db upgrade`, writes the auth configuration from the
# environment and execs `mlflow server`. Settings: see persondet/server.py (and .env.example).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" -m persondet.server "$@"
