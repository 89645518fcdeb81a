# The MLflow tracking server of docker-compose.yml: mlflow with the basic-auth app and the PostgreSQL
# driver, started by scripts/start-tracking-server.sh (the same script the integration tests run).
# BASE_IMAGE: any Debian/Ubuntu image with python3.11 and pip on PATH (the tests use a locally built one).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
# Air-gapped hosts: PIP_NO_INDEX=1 and PIP_FIND_LINKS=<wheelhouse URL or folder> install from a
# wheelhouse made with `pip download` (docs/LAUNCH.md). Build arguments, not ENV: not kept in the image.
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The same requirement strings as pyproject.toml (tests/test_compose.py keeps them equal), at the versions
# the test suite passed with (docker/constraints.txt, scripts/make-constraints.py).
COPY docker/constraints.txt /tmp/constraints.txt
RUN pip install -c /tmp/constraints.txt "mlflow[auth]>=3.16.1,<4" "psycopg2-binary>=2.9"
WORKDIR /app
COPY pyproject.toml README.md ./
COPY persondet ./persondet
COPY scripts/start-tracking-server.sh ./scripts/start-tracking-server.sh
# persondet.server only needs mlflow; skip the training dependencies (torch) in this image.
RUN pip install --no-deps . \
 && useradd --system --uid 10001 --home-dir /app mlflow \
 && mkdir -p /mlflow/artifacts && chown mlflow /mlflow/artifacts
USER mlflow
EXPOSE 5000
CMD ["bash", "scripts/start-tracking-server.sh"]
