#!/usr/bin/env bash
# Start the shared MLflow tracking server (PostgreSQL backend, served artifacts, basic-auth).
# The one start script of docker-compose's `mlflow-init` and `mlflow` services and of the tests:
#   init   check the settings and secrets, wait for the databases, `mlflow db upgrade`, bootstrap the
#          admin, the team and the `persondet` names; exit (2 and one line on a configuration error)
#   serve  write the private runtime files and exec `mlflow server` (no secret on its command line)
#   (none) init, then serve
# Settings and secrets (*_FILE): see persondet/server.py and docs/SERVER.md.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" -m persondet.server "$@"
