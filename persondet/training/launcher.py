"""``launch(config)``: the training in this process, or in torchrun's worker processes.

With ``nproc * nnodes > 1`` it starts torchrun (``python -m persondet.training.torchrun <failure.json>
--nproc-per-node ... -m persondet.training.worker <config.json> <result.json>``).  The config file carries the run: node 0's launcher takes ``mlflow run``'s
run or creates one (not when resuming: the checkpoint names its run), so every worker logs to that one run
(only global rank 0 does); when the workers fail, the launcher ends it FAILED (a resume's run too), naming a
worker killed by a signal.  Nobody outlives the launcher: torchrun gets SIGTERM when the launcher dies (its
agent then stops the workers), and each worker gets SIGTERM when torchrun dies (Linux's PR_SET_PDEATHSIG:
``training.torchrun``); rank 0's run guard then marks the run FAILED (``tracking.lease``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from persondet.config import TrainConfig
from persondet.errors import PersondetError
from persondet.model_names import REGISTERED_MODEL
from persondet.tracking import RunHandle, create_run
from persondet.tracking.permissions import check_may_train
from persondet.tracking.runs import launcher_run_id
from persondet.training.torchrun import LAUNCHER_PID


def launch(config: TrainConfig) -> dict[str, Any]:
    """Run the training: in this process, or through torchrun when nproc * nnodes > 1; its metrics."""
    from persondet.training.trainer import train

    check_may_train(REGISTERED_MODEL if config.register else None)
    if config.nproc * config.nnodes == 1:
        return train(config)
    port = config.master_port or (_free_port() if config.nnodes == 1 else 29500)
    run = RunHandle(None)
    if config.node_rank == 0:
        if config.resume:
            run = RunHandle(_resumed_run_id(config.resume))
        else:
            given = launcher_run_id()
            run = RunHandle(given) if given else create_run("train")
    with tempfile.TemporaryDirectory() as tmp:
        config_file, result_file = Path(tmp) / "config.json", Path(tmp) / "result.json"
        config_file.write_text(worker_config_json(config, None if config.resume else run.run_id))
        command = [f"--nproc-per-node={config.nproc}", f"--nnodes={config.nnodes}", f"--node-rank={config.node_rank}",
                   f"--master-addr={config.master_addr}", f"--master-port={port}",
                   "-m", "persondet.training.worker", str(config_file), str(result_file)]
        code, failure = _run_torchrun(command, Path(tmp) / "failure.json")
        result = json.loads(result_file.read_text()) if result_file.exists() else {}
    if code != 0 or "error" in result:
        run.end_if_running("FAILED")
        if result.get("error"):
            raise PersondetError(result["error"])
        ended = f"; run {run.run_id} marked FAILED" if run.run_id else ""
        if failure is not None and failure[1] < 0:
            rank, number = failure[0], -failure[1]
            raise PersondetError(f"training process rank {rank} was killed by signal {_signal_name(number)} "
                                 f"(SIGKILL: e.g. the out-of-memory killer; SIGSEGV: a crash){ended}")
        which = f"training process rank {failure[0]} exited with status {failure[1]}" if failure else \
            f"the training processes failed (torchrun exit status {code})"
        raise PersondetError(f"{which}; the first error is printed above{ended}")
    return result.get("metrics", {})


def _resumed_run_id(resume: str) -> str | None:
    """The run a resume continues: the run id given, or the one its checkpoint file names."""
    from persondet.training.checkpoint import load_checkpoint

    if os.path.isfile(resume):
        return load_checkpoint(resume).get("run_id")
    return resume.strip() or None


def _run_torchrun(command: list[str], failure_file: Path) -> tuple[int, tuple[int, int] | None]:
    """Run ``persondet.training.torchrun`` (it dies with this process) and wait; its exit status and, when a
    worker failed, (rank, exit code) of the first failure."""
    env = {**os.environ, LAUNCHER_PID: str(os.getpid())}
    code = subprocess.run([sys.executable, "-m", "persondet.training.torchrun", str(failure_file), *command],
                          env=env).returncode
    try:
        failure = json.loads(failure_file.read_text())
        return code, (int(failure["rank"]), int(failure["exitcode"]))
    except (OSError, ValueError, KeyError, TypeError):
        return code, None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def worker_config_json(config: TrainConfig, run_id: str | None) -> str:
    """What a torchrun worker needs: the config (with the strings the user typed) and the run to log to."""
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "raw"}
    return json.dumps({"values": values, "raw": dict(config.raw), "run_id": run_id})


def read_worker_config(text: str) -> tuple[TrainConfig, str | None]:
    """The config and run id written by ``worker_config_json``."""
    payload = json.loads(text)
    return TrainConfig(raw=payload["raw"], **payload["values"]), payload["run_id"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
