# The trainer of docker-compose.yml: persondet with its dependencies (the PyPI torch wheels bundle CUDA);
# it runs `mlflow run . --env-manager local ...` against the tracking server on the compose network.
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update && apt-get install -y --no-install-recommends git \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /workspace
COPY pyproject.toml README.md conda.yaml MLproject ./
COPY persondet ./persondet
RUN pip install -e .
COPY entrypoints ./entrypoints
COPY scripts ./scripts
CMD ["mlflow", "run", ".", "--env-manager", "local", "-e", "main"]
