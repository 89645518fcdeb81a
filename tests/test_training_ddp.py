"""Multi-process (torchrun, gloo) training and resuming a training killed with SIGKILL (CPU)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from training_fixtures import (TINY_ARGS, TRAIN_SCRIPT, make_prepared_set, store_client, store_runs,
                               subprocess_env)

@pytest.mark.slow
def test_two_process_ddp_training_is_one_run_with_identical_replicas(tmp_path):
    data = make_prepared_set(tmp_path / "d")
    digests = tmp_path / "digests"
    digests.mkdir()
    proc = subprocess.run([sys.executable, str(TRAIN_SCRIPT), "--data", str(data), "--epochs", "1", "--nproc",
                           "2", *TINY_ARGS], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=subprocess_env(tmp_path, PERSONDET_WEIGHTS_DIGEST_DIR=str(digests)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = store_runs(tmp_path)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "train coco+cuhk b2 cpu"  # the launcher's run, named by the workers' rank 0
    p = run.data.params
    assert (p["world_size"], p["batch_size"], p["batch_size_per_device"], p["nproc"]) == ("2", "2", "1", "2")
    rank0, rank1 = (digests / "rank0.sha256").read_text(), (digests / "rank1.sha256").read_text()
    assert rank0 == rank1
    # 8 images, 1 per rank per step: 4 steps, each logged once (by rank 0 only)
    assert [m.step for m in store_client(tmp_path).get_metric_history(run.info.run_id, "loss")] == [0, 1, 2, 3]


def _train_until_end(tmp_path: Path, data: Path, ck: Path, extra=()):
    return subprocess.run([sys.executable, str(TRAIN_SCRIPT), "--data", str(data), "--epochs", "3",
                           "--checkpoint-dir", str(ck), "--deterministic", "true", *TINY_ARGS, *extra],
                          cwd=tmp_path, env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_killed_training_resumes_in_the_same_run_to_the_same_weights(tmp_path):
    data = make_prepared_set(tmp_path / "d", images=16)
    reference = _train_until_end(tmp_path, data, tmp_path / "ref")
    assert reference.returncode == 0, reference.stderr[-3000:]

    ck = tmp_path / "killed"
    killed = subprocess.Popen([sys.executable, str(TRAIN_SCRIPT), "--data", str(data), "--epochs", "3",
                               "--checkpoint-dir", str(ck), "--deterministic", "true", *TINY_ARGS],
                              cwd=tmp_path, env=subprocess_env(tmp_path), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (ck / "last.pt").exists():
        assert killed.poll() is None and time.time() < deadline, "training ended before its first checkpoint"
        time.sleep(0.02)
    assert killed.poll() is None, "the training finished before it could be killed"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    first = torch.load(ck / "last.pt", weights_only=True)
    assert first["epoch"] < 2
    run_id = first["run_id"]

    resumed = _train_until_end(tmp_path, data, ck, extra=["--resume", run_id])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ref_state = torch.load(tmp_path / "ref" / "last.pt", weights_only=True)
    end_state = torch.load(ck / "last.pt", weights_only=True)
    assert end_state["epoch"] == ref_state["epoch"] == 2 and end_state["run_id"] == run_id
    for name, tensor in ref_state["model"].items():
        assert torch.equal(tensor, end_state["model"][name]), name

    runs = {r.info.run_id: r for r in store_runs(tmp_path)}
    assert len(runs) == 2 and runs[run_id].info.status == "FINISHED"  # the reference run and this one
    client = store_client(tmp_path)
    for key in ("loss", "lr", "loss_classifier"):
        steps = sorted(m.step for m in client.get_metric_history(run_id, key))
        assert steps == list(range(24)), key  # 8 iterations x 3 epochs, each step exactly once
    assert sorted(m.step for m in client.get_metric_history(run_id, "epoch_loss")) == [0, 1, 2]
    ref_run = next(r for r in runs.values() if r.info.run_id != run_id)
    ref_loss = {m.step: m.value for m in client.get_metric_history(ref_run.info.run_id, "loss")}
    assert {m.step: m.value for m in client.get_metric_history(run_id, "loss")} == ref_loss
