#!/usr/bin/env bash
# Make the secret files docker-compose.yml mounts (docs/SERVER.md): a random password or key each, a team
# of one member `trainer` and that member's MLflow credentials file for the trainer service.
# Writes into ./secrets (or $PERSONDET_SECRETS_DIR) and never overwrites a file that exists.
#
# The directory is owner-only (0700): other users of this host cannot read the secrets. The files in it
# are 0644 because compose mounts each file as it is on the host, and the services read theirs as their
# own users (postgres, mlflow), not as yours.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${PERSONDET_SECRETS_DIR:-$root/secrets}"
mkdir -p "$dir"
chmod 700 "$dir"

random_secret() { python3 -c 'import secrets; print(secrets.token_urlsafe(24))'; }

write() {  # write NAME CONTENT (printf is a shell builtin: the content is on no command line)
  if [ -e "$dir/$1" ]; then echo "kept    $dir/$1"; return; fi
  (umask 022; printf '%s\n' "$2" > "$dir/$1.tmp")
  mv "$dir/$1.tmp" "$dir/$1"
  echo "wrote   $dir/$1"
}

for name in postgres_password tracking_db_password auth_db_password optuna_db_password \
            mlflow_admin_password flask_secret_key; do
  write "$name" "$(random_secret)"
done
if [ ! -e "$dir/team" ] && [ ! -e "$dir/mlflow_credentials" ]; then
  trainer_password="$(random_secret)"
  write team "# one member a line: username (an existing user) or username:initial password (12+ characters)
trainer:$trainer_password"
  write mlflow_credentials "[mlflow]
mlflow_tracking_username = trainer
mlflow_tracking_password = $trainer_password"
else
  write team "# one member a line: username or username:initial password (12+ characters)"
  write mlflow_credentials "[mlflow]
mlflow_tracking_username = <a team member>
mlflow_tracking_password = <that member's password>"
fi
