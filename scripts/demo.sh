#!/usr/bin/env bash
# The whole study on the embedded default: SQLite tracking store, built-in demo data, CPU.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/env.sh"
cd "$root"
export MLFLOW_TRACKING_URI="${MLFLOW_TRACKING_URI:-sqlite:///$root/mlflow.db}"
mlflow run . --env-manager local --experiment-name "${MLFLOW_EXPERIMENT_NAME:-persondet}" "$@"
cat <<MSG

persondet: the study is logged in $MLFLOW_TRACKING_URI (experiment "${MLFLOW_EXPERIMENT_NAME:-persondet}").
Open the MLflow UI with:
  $root/.venv/bin/mlflow ui --backend-store-uri $MLFLOW_TRACKING_URI
then browse http://127.0.0.1:5000
MSG
