# The trainer of docker-compose.yml: persondet with its dependencies (the PyPI torch wheels bundle CUDA);
# it runs `mlflow run . --env-manager local ...` against the tracking server on the compose network.
# BASE_IMAGE: any Debian/Ubuntu image with python3.11 and pip on PATH (the tests use a locally built one).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update && apt-get install -y --no-install-recommends git \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /workspace
# Air-gapped hosts: PIP_NO_INDEX=1 and PIP_FIND_LINKS=<wheelhouse URL or folder> install from a
# wheelhouse made with `pip download` (docs/LAUNCH.md). Build arguments, not ENV: not kept in the image.
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
# The dependencies first, from pyproject.toml alone: a code change does not re-install torch. At the
# versions the test suite passed with (docker/constraints.txt, scripts/make-constraints.py).
COPY pyproject.toml docker/constraints.txt ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
      > /tmp/requirements.txt \
 && pip install -c constraints.txt -r /tmp/requirements.txt && rm /tmp/requirements.txt
COPY README.md conda.yaml MLproject ./
COPY persondet ./persondet
RUN pip install --no-deps -e .
COPY entrypoints ./entrypoints
COPY scripts ./scripts
CMD ["mlflow", "run", ".", "--env-manager", "local", "-e", "main"]
