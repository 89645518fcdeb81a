"""`mlflow models serve -m models:/persondet@champion` answers a real HTTP request carrying an image."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import evalkit
from native_services import free_port


@pytest.mark.slow
def test_served_champion_answers_with_boxes_and_scores(tmp_path, monkeypatch):
    import mlflow
    import torch

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.chdir(tmp_path)
    _, version = evalkit.log_training_run()
    mlflow.MlflowClient().set_registered_model_alias("persondet", "champion", version)

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (1, 96, 128, 3), dtype=np.uint8)
    expected = evalkit.untrained_detector()(torch.from_numpy(image)).numpy()

    port = free_port()
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    log = open(tmp_path / "serve.log", "w")
    # mlflow execs `uvicorn` by name: the environment's bin folder must be on PATH (as when activated)
    env = {**os.environ, "PATH": f"{mlflow_cli.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    server = subprocess.Popen([str(mlflow_cli), "models", "serve", "-m", "models:/persondet@champion",
                               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
                              stdout=log, stderr=subprocess.STDOUT, env=env,
                              start_new_session=True)
    try:
        deadline = time.time() + 180
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            assert time.time() < deadline, "server did not answer /ping in 180 s"
            time.sleep(1)
        body = json.dumps({"inputs": image.tolist()}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as r:
            answer = json.loads(r.read())
    finally:
        if server.poll() is None:
            os.killpg(server.pid, 15)
            server.wait(timeout=30)
        log.close()

    rows = np.asarray(answer["predictions"], dtype=np.float32)
    assert rows.shape == (1, 20, 6)
    found = rows[0][rows[0, :, 4] >= 0]
    assert len(found) > 0  # the score threshold is 0: the untrained head still proposes boxes
    x1, y1, x2, y2, score = found[:, 0], found[:, 1], found[:, 2], found[:, 3], found[:, 4]
    assert np.all((0 <= x1) & (x1 <= x2) & (x2 <= 128)) and np.all((0 <= y1) & (y1 <= y2) & (y2 <= 96))
    assert np.all((0 <= score) & (score <= 1)) and np.all(np.diff(score) <= 1e-6)  # best first
    np.testing.assert_allclose(rows, expected, atol=1e-3)  # the server runs the registered model
