#!/usr/bin/env bash
# The official postgres image's start, reduced to what docker-compose.yml relies on: on an empty data
# directory initdb with the superuser's password from POSTGRES_PASSWORD_FILE, the init scripts run once
# (psql as the superuser over the local socket, ON_ERROR_STOP), then the server. Host networking in the
# tests: it listens on loopback only, on $PGPORT.
set -euo pipefail
user="${POSTGRES_USER:-postgres}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  initdb -D "$PGDATA" --username="$user" --pwfile="${POSTGRES_PASSWORD_FILE:?}" --auth-local=trust \
    --auth-host=scram-sha-256 --encoding=UTF8 >/dev/null
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=/var/run/postgresql" -w start >/dev/null
  for f in /docker-entrypoint-initdb.d/*.sql; do
    [ -e "$f" ] || continue
    echo "postgres-entrypoint: running $f"
    psql -v ON_ERROR_STOP=1 --username "$user" --no-password --no-psqlrc --dbname "${POSTGRES_DB:-$user}" \
      -h /var/run/postgresql -f "$f"
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "host all all 127.0.0.1/32 scram-sha-256" >> "$PGDATA/pg_hba.conf"
fi
exec postgres -D "$PGDATA" -c listen_addresses=127.0.0.1 -c unix_socket_directories=/var/run/postgresql
