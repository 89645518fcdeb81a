# Test stand-in for the official postgres image (no registry is reachable here): Debian's PostgreSQL on
# the locally made base image, with the parts of the official image's contract docker-compose.yml uses
# (POSTGRES_USER, POSTGRES_PASSWORD_FILE, /docker-entrypoint-initdb.d/*.sql run once by psql as the
# superuser, data in /var/lib/postgresql/data). Built by tests/test_compose_up.py.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/postgresql/data /docker-entrypoint-initdb.d /var/run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql \
 && chmod 700 /var/lib/postgresql/data
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
COPY tests/compose/postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
USER postgres
ENTRYPOINT ["bash", "/usr/local/bin/postgres-entrypoint.sh"]
