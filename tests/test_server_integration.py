"""The shared tracking server of docker-compose.yml, started natively and attacked.

PostgreSQL (machine binaries, loopback, temp dir) + scripts/start-tracking-server.sh (basic-auth, served
artifacts): credentials are required, the steps run against it, and a training survives a server crash.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from native_services import ROOT

pytestmark = pytest.mark.integration


def _status(url: str, user: str | None = None, password: str | None = None) -> int:
    request = urllib.request.Request(url)
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def as_client(tracking_server, monkeypatch):
    """This process is an MLflow client of the test server, with credentials, in a fresh experiment."""
    import mlflow

    for name, value in tracking_server.client_env().items():
        monkeypatch.setenv(name, value)
    experiment = f"server-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", experiment)
    mlflow.set_tracking_uri(tracking_server.uri)
    yield experiment
    mlflow.set_tracking_uri(None)


def test_unauthenticated_and_wrong_password_requests_are_refused(tracking_server):
    api = tracking_server.uri + "/api/2.0/mlflow/experiments/search?max_results=1"
    assert _status(api) == 401
    assert _status(api, tracking_server.username, "not-the-password") == 401
    assert _status(tracking_server.uri + "/", None) == 401  # the UI too
    assert _status(api, tracking_server.username, tracking_server.password) == 200
    assert _status(tracking_server.uri + "/health") == 200  # what the compose healthcheck polls


def test_a_client_with_credentials_logs_runs_and_served_artifacts(tracking_server, as_client, tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment_id = client.create_experiment(as_client)
    run = client.create_run(experiment_id)
    client.log_param(run.info.run_id, "batch_size", "8")
    client.log_metric(run.info.run_id, "AP50", 0.5, step=0)
    note = tmp_path / "note.txt"
    note.write_text("served by the tracking server")
    client.log_artifact(run.info.run_id, str(note), artifact_path="notes")
    client.set_terminated(run.info.run_id)

    stored = client.get_run(run.info.run_id)
    assert stored.data.params["batch_size"] == "8" and stored.data.metrics["AP50"] == 0.5
    assert stored.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied, not a client-side path
    on_server = list(Path(tracking_server.workdir, "artifacts").rglob("note.txt"))
    assert len(on_server) == 1 and on_server[0].read_text() == "served by the tracking server"
    back = client.download_artifacts(run.info.run_id, "notes/note.txt", str(tmp_path / "back"))
    assert Path(back).read_text() == "served by the tracking server"


def test_the_server_keeps_runs_in_postgresql(tracking_server, as_client):
    import psycopg2
    from mlflow import MlflowClient

    run_name = f"in-postgres-{uuid.uuid4().hex[:6]}"
    experiment_id = MlflowClient().create_experiment(as_client)
    MlflowClient().create_run(experiment_id, run_name=run_name)
    pg = tracking_server.postgres
    with psycopg2.connect(host="127.0.0.1", port=pg.port, user="mlflow", password=pg.password,
                          dbname="mlflow") as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM runs WHERE name = %s", (run_name,))
        assert cursor.fetchone()[0] == 1
