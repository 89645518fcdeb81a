"""The shared tracking server of docker-compose.yml, started natively and attacked.

PostgreSQL (machine binaries, loopback, temp dir) + scripts/start-tracking-server.sh (basic-auth, served
artifacts): credentials are required, the steps run against it, and a training survives a server crash.
"""

from __future__ import annotations

import base64
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


def _wait(condition, timeout_s: float, what: str, process=None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{what}: the process ended with {process.returncode} first")
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout_s} s")


@pytest.mark.slow
def test_prepare_train_evaluate_with_credentials_and_a_server_crash_mid_training(tracking_server, as_client,
                                                                                tmp_path):
    """prepare -> train -> evaluate against the server; the server is killed and restarted while the
    training runs: the training finishes and every logged step is on the server."""
    from mlflow import MlflowClient

    from persondet.config import EvaluateConfig, PrepareConfig
    from persondet.evaluation import evaluate
    from persondet.prepare import prepare

    prepared = prepare(PrepareConfig(check_images=1))
    assert prepared.run_id and MlflowClient().get_run(prepared.run_id).info.status == "FINISHED"

    epochs, iters = 3, 4
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_RUN_ID", None)
    log = open(tmp_path / "train.log", "w")
    training = subprocess.Popen(
        [sys.executable, str(ROOT / "entrypoints" / "train.py"), "--data", prepared.run_id, "--model", "small",
         "--epochs", str(epochs), "--max-iters-per-epoch", str(iters), "--batch-size", "2", "--workers", "0",
         "--min-size", "128", "--max-size", "192"], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    client = MlflowClient()
    experiment_id = client.get_experiment_by_name(as_client).experiment_id

    def first_epoch_logged():
        runs = client.search_runs([experiment_id], "tags.`persondet.entry_point` = 'train'")
        if runs and client.get_metric_history(runs[0].info.run_id, "epoch_loss"):
            return runs[0].info.run_id
        return None

    try:
        run_id = _wait(first_epoch_logged, 300, "the training's first epoch", training)
        tracking_server.kill()  # a crash in the middle of the training
        assert training.poll() is None, "the training ended before the crash"
        tracking_server.start()
        assert training.wait(timeout=600) == 0, (tmp_path / "train.log").read_text()[-3000:]
    finally:
        if training.poll() is None:
            training.kill()
        log.close()

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert {"gpu_type", "batch_size", "dataset_mix"} <= set(run.data.params) and "train_time_s" in run.data.metrics
    steps = {m.step for m in client.get_metric_history(run_id, "loss")}
    assert steps == set(range(epochs * iters)), f"missing steps {sorted(set(range(epochs * iters)) - steps)}"
    assert {m.step for m in client.get_metric_history(run_id, "epoch_loss")} == set(range(epochs))

    result = evaluate(EvaluateConfig(model_uri=f"runs:/{run_id}/model", examples=1))
    evaluation_runs = client.search_runs([experiment_id], "tags.`persondet.entry_point` = 'evaluate'")
    assert len(evaluation_runs) == 1 and "AP50" in evaluation_runs[0].data.metrics
    assert 0.0 <= evaluation_runs[0].data.metrics["AP50"] <= 1.0 and result
