"""Faults of a training and of its files (issue 10, points 7, 8, 10, 11, 12, 13), with real processes,
real signals, a real full file system and a real SQLite store.

- 7: a full disk while writing a checkpoint: one line naming the file, the previous checkpoint kept;
- 8: a worker killed by a signal (single process: SIGKILL; torchrun: SIGSEGV to rank 1): the run FAILED;
- 10: ``kill -9`` of a DDP launcher: torchrun and the workers stop, the run FAILED (never FINISHED);
- 11: a resume with other settings, and a second resume of a running resume, are refused before the run
  is touched; the lease survives a race of four processes;
- 12: two ``prepare`` at once on a fresh SQLite store both succeed;
- 13: a crafted checkpoint or model file is refused unread: its code never runs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

import prepare_fixtures as fx
from training_fixtures import (ROOT, TINY_ARGS, TRAIN_SCRIPT, make_prepared_set, store_client, store_runs,
                               subprocess_env, wait_until)


def _train(tmp_path: Path, data: Path, *args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(TRAIN_SCRIPT), "--data", str(data), *TINY_ARGS, *args],
                            cwd=tmp_path, env=subprocess_env(tmp_path), **popen)




def _first_epoch_logged(tmp_path: Path):
    """The training run's id once its epoch 0 is in the store (its checkpoint is being written)."""
    runs = store_runs(tmp_path) if (tmp_path / "mlflow.db").exists() else []
    for run in runs:
        if store_client(tmp_path).get_metric_history(run.info.run_id, "epoch_loss"):
            return run.info.run_id
    return None


def _status(tmp_path: Path, run_id: str) -> str:
    return store_client(tmp_path).get_run(run_id).info.status


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("persondet:")]
    assert len(lines) == 1 and lines[0].startswith("persondet: error: ") and "Traceback" not in stderr, stderr
    return lines[0]


# --- 13: weights only --------------------------------------------------------------------------------

class _Marker:
    """Unpickling this creates a file: what a crafted last.pt or weights.pt would do with any code."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_crafted_checkpoint_is_refused_and_its_code_never_runs(tmp_path):
    data = make_prepared_set(tmp_path / "d")
    marker = tmp_path / "pwned"
    crafted = tmp_path / "last.pt"
    torch.save({"format": 2, "run_id": "0" * 32, "epoch": 0, "model": _Marker(marker)}, crafted)
    unsafe = subprocess.run([sys.executable, "-c", f"import torch; torch.load({str(crafted)!r}, weights_only=False)"],
                            capture_output=True, env=subprocess_env(tmp_path))
    assert unsafe.returncode == 0 and marker.exists(), unsafe.stderr  # the file is truly malicious
    marker.unlink()

    resumed = _train(tmp_path, data, "--epochs", "2", "--resume", str(crafted), stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 2
    line = _one_error_line(err)
    assert line == (f"persondet: error: resume: {crafted} holds objects other than tensors and plain values; "
                    "refused unread (loading it could run code; persondet checkpoints hold only data)")
    assert not marker.exists()
    assert store_runs(tmp_path) == []


def test_a_crafted_logged_model_is_refused_and_its_code_file_is_never_run(tmp_path, monkeypatch):
    """persondet loads a logged model's weights as data and builds the detector from its own code: a code
    file swapped in the artifact store is not run, a weights file swapped for a pickle is refused."""
    import evalkit
    from persondet.errors import PersondetError
    from persondet.tracking.models import load_detector, load_detector_weights

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.chdir(tmp_path)
    run_id, version = evalkit.log_training_run()
    (model_dir,) = {p.parent for p in (tmp_path / "mlruns").rglob("MLmodel")}
    code_marker, weights_marker = tmp_path / "code-ran", tmp_path / "weights-unpickled"
    (model_dir / "served_model.py").write_text(f"open({str(code_marker)!r}, 'w')\n")
    module = load_detector(f"models:/persondet/{version}")
    expected = evalkit.untrained_detector()
    image = torch.randint(0, 255, (1, 80, 96, 3), dtype=torch.uint8)
    assert torch.equal(module(image), expected(image)) and not code_marker.exists()
    spec, weights = load_detector_weights(f"runs:/{run_id}/model")  # what init reads
    assert set(weights) == set(expected.detector.state_dict()) and spec["model"] == "small"

    torch.save({"backbone.body.0.weight": _Marker(weights_marker)}, model_dir / "artifacts" / "weights.pt")
    with pytest.raises(PersondetError, match=r"model_uri='models:/persondet/1': weights.pt / detector.json are not "
                                             r"plain weights and values \(UnpicklingError") as info:
        load_detector(f"models:/persondet/{version}")
    assert "\n" not in str(info.value) and not weights_marker.exists() and not code_marker.exists()


# --- 7: a full disk while checkpointing ---------------------------------------------------------------

@pytest.fixture
def small_tmpfs(tmp_path):
    """A tmpfs mount with room for one and a half checkpoints of the tiny training (needs root)."""
    from persondet.engine import make_optimizer
    from persondet.model import build_detector

    detector = build_detector("small", min_size=96, max_size=128)
    weights = sum(t.numel() * t.element_size() for t in detector.state_dict().values())
    momentum = sum(p.numel() * p.element_size() for p in make_optimizer(detector, 0.01).param_groups[0]["params"])
    size = int(1.5 * (weights + momentum))
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs ({done.stderr.strip() or 'mount failed'}); needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.slow
def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, small_tmpfs):
    data = make_prepared_set(tmp_path / "d")
    ck = small_tmpfs / "ck"
    training = _train(tmp_path, data, "--epochs", "3", "--checkpoint-dir", str(ck), stdout=subprocess.DEVNULL,
                      stderr=subprocess.PIPE, text=True)
    _, err = training.communicate(timeout=600)
    assert training.returncode == 2
    line = _one_error_line(err)
    assert re.fullmatch(rf"persondet: error: {re.escape(str(ck))}/\.last\.pt-\w+/last\.pt: cannot write the "
                        rf"checkpoint \(No space left on device\); the previous checkpoint {re.escape(str(ck))}/"
                        r"last\.pt is kept", line), line
    assert sorted(p.name for p in ck.iterdir()) == ["last.pt"]  # no partial file left
    kept = torch.load(ck / "last.pt", weights_only=True)
    assert kept["epoch"] == 0
    (run,) = store_runs(tmp_path)
    assert run.info.status == "FAILED" and run.info.run_id == kept["run_id"]


# --- 8 and 10: processes killed by signals -----------------------------------------------------------

@pytest.mark.slow
def test_single_process_training_killed_by_sigkill_ends_failed(tmp_path):
    """The out-of-memory killer's SIGKILL: nothing in the process runs, its run guard marks the run."""
    data = make_prepared_set(tmp_path / "d", images=16)
    training = _train(tmp_path, data, "--epochs", "4", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        run_id = wait_until(lambda: _first_epoch_logged(tmp_path), 300, "the first epoch", training)
        assert _status(tmp_path, run_id) == "RUNNING"
        training.send_signal(signal.SIGKILL)
        training.wait(timeout=30)
    finally:
        if training.poll() is None:
            training.kill()
    wait_until(lambda: _status(tmp_path, run_id) == "FAILED", 60, "the run marked FAILED")
    assert "persondet.lease" not in store_client(tmp_path).get_run(run_id).data.tags


def _workers(launcher: psutil.Process) -> dict[int, psutil.Process]:
    """rank -> torchrun worker process among the launcher's descendants."""
    found = {}
    for child in launcher.children(recursive=True):
        try:
            if "persondet.training.worker" in " ".join(child.cmdline()):
                found[int(child.environ()["RANK"])] = child
        except (psutil.Error, KeyError, ValueError):
            continue
    return found


def test_the_failure_named_is_the_crash_not_the_peer_that_lost_its_connection():
    from types import SimpleNamespace

    from persondet.training.torchrun import LOST_A_PEER, first_failure, lost_a_peer

    gloo = RuntimeError("[../gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:27881. This "
                        "is typically caused by a remote worker crashing.")
    assert lost_a_peer(gloo) and not lost_a_peer(RuntimeError("CUDA out of memory")) and not lost_a_peer(ValueError())
    at = 1000.0  # torchrun saw both at one poll: the crash (rank 1) is named, not rank 0 that lost its peer
    same_moment = {0: SimpleNamespace(timestamp=at, exitcode=LOST_A_PEER), 1: SimpleNamespace(timestamp=at, exitcode=-11)}
    assert first_failure(same_moment) == (1, -11)
    earlier = {0: SimpleNamespace(timestamp=at, exitcode=1), 1: SimpleNamespace(timestamp=at + 1, exitcode=-15)}
    assert first_failure(earlier) == (0, 1)


@pytest.mark.slow
def test_ddp_worker_killed_by_a_signal_is_named_and_the_run_failed(tmp_path):
    data = make_prepared_set(tmp_path / "d", images=24)
    launcher = _train(tmp_path, data, "--epochs", "6", "--nproc", "2", stdout=subprocess.DEVNULL,
                      stderr=subprocess.PIPE, text=True)
    try:
        run_id = wait_until(lambda: _first_epoch_logged(tmp_path), 400, "the first epoch", launcher)
        workers = wait_until(lambda: _workers(psutil.Process(launcher.pid)), 30, "the workers", launcher)
        workers[1].send_signal(signal.SIGSEGV)  # a crash in native code, as roi_align on a NaN box did
        _, err = launcher.communicate(timeout=300)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 2
    assert _one_error_line(err) == (f"persondet: error: training process rank 1 was killed by signal SIGSEGV "
                                    f"(SIGKILL: e.g. the out-of-memory killer; SIGSEGV: a crash); run {run_id} "
                                    "marked FAILED")
    assert _status(tmp_path, run_id) == "FAILED"


@pytest.mark.slow
def test_kill_9_of_a_ddp_launcher_stops_its_workers_and_fails_the_run(tmp_path):
    data = make_prepared_set(tmp_path / "d", images=24)
    launcher = _train(tmp_path, data, "--epochs", "8", "--nproc", "2", stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL)
    try:
        run_id = wait_until(lambda: _first_epoch_logged(tmp_path), 400, "the first epoch", launcher)
        workers = wait_until(lambda: _workers(psutil.Process(launcher.pid)), 30, "the workers", launcher)
        torchrun = workers[0].parent()
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(timeout=30)
        for process in (torchrun, *workers.values()):
            try:
                process.wait(timeout=60)  # gone, not orphans training on
            except psutil.NoSuchProcess:
                pass
    finally:
        for process in psutil.Process().children(recursive=True):
            if "persondet.training" in " ".join(process.cmdline()) or "torch.distributed.run" in " ".join(
                    process.cmdline()):
                process.kill()
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in (torchrun, *workers.values()))
    wait_until(lambda: _status(tmp_path, run_id) == "FAILED", 60, "the run marked FAILED by rank 0's guard")
    epochs = store_client(tmp_path).get_metric_history(run_id, "epoch_loss")
    assert len(epochs) < 8  # stopped, not finished by orphans


# --- 11: resumes -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_resume_with_other_settings_or_while_resumed_is_refused(tmp_path):
    """A killed training; a resume with another batch size and epochs is refused (naming both); a resume
    runs; a second resume at the same time is refused; the first finishes with each step logged once.
    (The resume's 5 remaining epochs outlast the second process's start-up, about 7 s of imports.)"""
    data = make_prepared_set(tmp_path / "d", images=32)
    ck = tmp_path / "ck"
    first = _train(tmp_path, data, "--epochs", "6", "--checkpoint-dir", str(ck), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    wait_until(lambda: (ck / "last.pt").exists(), 300, "the first checkpoint", first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    run_id = torch.load(ck / "last.pt", weights_only=True)["run_id"]
    wait_until(lambda: _status(tmp_path, run_id) == "FAILED", 60, "the killed run marked FAILED")

    other = subprocess.run([sys.executable, str(TRAIN_SCRIPT), "--data", str(data), *TINY_ARGS, "--batch-size", "4",
                            "--epochs", "5", "--resume", run_id], cwd=tmp_path, env=subprocess_env(tmp_path),
                           capture_output=True, text=True, timeout=300)
    assert other.returncode == 2
    line = _one_error_line(other.stderr)
    assert line.startswith(f"persondet: error: resume='{run_id}': this training differs from run {run_id} in ")
    for difference in ("batch_size (logged 2, now 4)", "epochs (logged 6, now 5)", "iters_per_epoch (logged 16, now 8)"):
        assert difference in line, line
    assert _status(tmp_path, run_id) == "FAILED"  # untouched

    resume = _train(tmp_path, data, "--epochs", "6", "--checkpoint-dir", str(ck), "--resume", run_id,
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def leased_by_resume():
            tag = store_client(tmp_path).get_run(run_id).data.tags.get("persondet.lease")
            return tag and json.loads(tag)["pid"] == resume.pid
        wait_until(leased_by_resume, 300, "the resume's lease", resume)
        second = subprocess.run([sys.executable, str(TRAIN_SCRIPT), "--data", str(data), *TINY_ARGS, "--epochs", "6",
                                 "--resume", run_id], cwd=tmp_path, env=subprocess_env(tmp_path),
                                capture_output=True, text=True, timeout=300)
        assert resume.poll() is None, "the first resume ended before the second could race it"
        assert second.returncode == 2
        assert re.fullmatch(rf"persondet: error: resume='{run_id}': run {run_id} is being trained by pid "
                            rf"{resume.pid} on host \S+ \(lease renewed \d+ s ago, it expires 90 s after the last "
                            r"renewal\); two trainings of one run would log every step twice",
                            _one_error_line(second.stderr))
        _, err = resume.communicate(timeout=600)
        assert resume.returncode == 0, err[-3000:]
    finally:
        if resume.poll() is None:
            resume.kill()
    run = store_client(tmp_path).get_run(run_id)
    assert run.info.status == "FINISHED" and "persondet.lease" not in run.data.tags
    for key in ("loss", "lr", "epoch_loss"):
        steps = sorted(m.step for m in store_client(tmp_path).get_metric_history(run_id, key))
        assert steps == (list(range(96)) if key != "epoch_loss" else list(range(6))), key  # each step once


def _race_for_the_lease(uri: str, run_id: str, start_at: float, results) -> None:
    os.environ["MLFLOW_TRACKING_URI"] = uri
    from persondet.tracking.lease import Lease, LeaseHeld

    lease = Lease(run_id, "race")
    time.sleep(max(0.0, start_at - time.time()))
    try:
        lease.take()
        results.put(("taken", os.getpid()))
    except LeaseHeld as exc:
        results.put(("refused", str(exc)))


def test_four_processes_racing_for_one_lease_one_wins(tmp_path):
    import multiprocessing

    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("race")).info.run_id
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start_at = time.time() + 15  # all four imported and ready by then, even on a loaded machine
    processes = [context.Process(target=_race_for_the_lease, args=(uri, run_id, start_at, results))
                 for _ in range(4)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    winners = [pid for what, pid in outcomes if what == "taken"]
    assert len(winners) == 1, outcomes
    lease = json.loads(client.get_run(run_id).data.tags["persondet.lease"])
    assert lease["pid"] == winners[0]
    # a lease whose process is gone (this host) is stale at once: a fifth taker gets it
    from persondet.tracking.lease import Lease

    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        Lease(run_id, "after").take()
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]
    assert json.loads(client.get_run(run_id).data.tags["persondet.lease"])["pid"] == os.getpid()


def test_lease_liveness_rules():
    import socket

    from persondet.tracking.lease import holder

    now = 1000.0
    alive = {"owner": "a", "host": socket.gethostname(), "pid": os.getpid(), "expires": now + 10}
    assert holder(json.dumps(alive), now) == alive
    assert holder(json.dumps({**alive, "expires": now - 1}), now) is None  # expired
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert holder(json.dumps({**alive, "pid": int(dead.stdout)}), now) is None  # its process is gone
    elsewhere = {**alive, "host": "another-machine", "pid": 1}
    assert holder(json.dumps(elsewhere), now) == elsewhere  # another host: only the expiry tells
    assert holder(None, now) is None and holder("not json", now) is None


# --- 12: two prepare at once on a fresh store --------------------------------------------------------

@pytest.mark.slow
def test_two_prepare_at_once_on_a_fresh_sqlite_store_both_succeed(tmp_path):
    coco = fx.make_coco_tree(tmp_path / "coco")
    cuhk = fx.make_cuhk_tree(tmp_path / "cuhk")
    env = subprocess_env(tmp_path)
    steps = [subprocess.Popen([sys.executable, str(ROOT / "entrypoints" / "prepare.py"), "--coco-root", str(coco),
                               "--cuhk-root", str(cuhk), "--mix", mix, "--check-images", "0"], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for mix in ("coco+cuhk", "coco")]
    errors = [step.communicate(timeout=300)[1] for step in steps]
    assert [step.returncode for step in steps] == [0, 0], "\n".join(e[-2000:] for e in errors)
    runs = store_runs(tmp_path)
    assert sorted(r.data.tags["dataset_mix"] for r in runs) == ["coco", "coco+cuhk"]
    assert {r.info.status for r in runs} == {"FINISHED"}
