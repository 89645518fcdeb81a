"""Issue 10, point 9: the tracking server goes away for longer than MLflow's retry budget while a training
runs.  The training stops with one line naming the server, and its run is not left RUNNING: the run guard
marks it FAILED once the server is back.  A real ``mlflow server`` (SQLite behind it) on loopback, killed
with SIGKILL and started again on the same port and store.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from training_fixtures import TINY_ARGS, TRAIN_SCRIPT, make_prepared_set, subprocess_env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``mlflow server`` on 127.0.0.1:``port`` over ``root/mlflow.db``, artifacts proxied into ``root``."""

    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port, self.process = root, port, None
        self.uri = f"http://127.0.0.1:{port}"

    def start(self, timeout_s: float = 240) -> "Server":
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{self.root}/mlflow.db",
             "--artifacts-destination", str(self.root / "artifacts")],
            cwd=self.root, env=env, stdout=subprocess.DEVNULL, stderr=open(self.root / "server.log", "a"),
            start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.root / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=5) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"mlflow server did not answer within {timeout_s} s")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(self.uri)


@pytest.mark.slow
def test_server_away_longer_than_the_retries_is_one_line_and_the_run_ends_failed(tmp_path):
    server = Server(tmp_path, _free_port()).start()
    data = make_prepared_set(tmp_path / "d", images=16)
    env = subprocess_env(tmp_path, MLFLOW_TRACKING_URI=server.uri, MLFLOW_HTTP_REQUEST_MAX_RETRIES="1",
                         MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1", MLFLOW_HTTP_REQUEST_TIMEOUT="10")
    training = subprocess.Popen([sys.executable, str(TRAIN_SCRIPT), "--data", str(data), "--epochs", "6",
                                 *TINY_ARGS], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
    try:
        deadline, run_id = time.monotonic() + 400, None
        while run_id is None:
            assert time.monotonic() < deadline and training.poll() is None, "no epoch logged"
            experiment = server.client().get_experiment_by_name("persondet")
            for run in server.client().search_runs([experiment.experiment_id]) if experiment else []:
                if server.client().get_metric_history(run.info.run_id, "epoch_loss"):
                    run_id = run.info.run_id
            time.sleep(0.5)
        logged = {m.step for m in server.client().get_metric_history(run_id, "loss")}
        server.kill()  # away for good, as far as the training's retries go
        _, err = training.communicate(timeout=300)  # the guard, still waiting for the server, holds no pipe
    finally:
        if training.poll() is None:
            training.kill()
        server.kill()
    assert training.returncode == 2, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("persondet:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert lines[0].startswith(f"persondet: error: cannot reach the MLflow tracking server at {server.uri} "
                               "after 1 retries"), lines[0]

    server.start()  # back: the guard, still retrying, ends the run
    client = server.client()
    deadline = time.monotonic() + 180
    while client.get_run(run_id).info.status == "RUNNING":
        assert time.monotonic() < deadline, "the run is still RUNNING"
        time.sleep(1)
    try:
        run = client.get_run(run_id)
        kept = {m.step for m in client.get_metric_history(run_id, "loss")}
    finally:
        server.kill()
    assert run.info.status == "FAILED" and "persondet.lease" not in run.data.tags
    assert "its guard marked it FAILED" in run.data.tags["persondet.ended_by_guard"]
    assert set(range(8)) <= logged <= kept  # the first epoch's 8 steps, stored before the server went, kept
