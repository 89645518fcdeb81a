"""``launch(config)``: the training in this process, or in torchrun's worker processes.

With ``nproc * nnodes > 1`` it starts ``python -m torch.distributed.run ... -m persondet.training.worker
<config.json> <result.json>``.  The config file carries the run: node 0's launcher takes ``mlflow run``'s
run or creates one (not when resuming: the checkpoint names its run), so every worker logs to that one run
(only global rank 0 does); when the workers fail, the launcher ends it FAILED (a resume's run too), naming a
worker killed by a signal.  Nobody outlives the launcher: torchrun gets SIGTERM when the launcher dies (its
agent then stops the workers), and each worker gets SIGTERM when torchrun dies (``die_with_parent``, Linux's
PR_SET_PDEATHSIG); rank 0's run guard then marks the run FAILED (``tracking.lease``).
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from persondet.config import TrainConfig
from persondet.errors import PersondetError
from persondet.model_names import REGISTERED_MODEL
from persondet.tracking import RunHandle, create_run
from persondet.tracking.permissions import check_may_train
from persondet.tracking.runs import launcher_run_id


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
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={config.nproc}",
                   f"--nnodes={config.nnodes}", f"--node-rank={config.node_rank}",
                   f"--master-addr={config.master_addr}", f"--master-port={port}",
                   "-m", "persondet.training.worker", str(config_file), str(result_file)]
        code, killed = _run_torchrun(command)
        result = json.loads(result_file.read_text()) if result_file.exists() else {}
    if code != 0 or "error" in result:
        run.end_if_running("FAILED")
        if result.get("error"):
            raise PersondetError(result["error"])
        ended = f"; run {run.run_id} marked FAILED" if run.run_id else ""
        if killed:
            rank, number = killed
            raise PersondetError(f"training process rank {rank} was killed by signal {_signal_name(number)} "
                                 f"(SIGKILL: e.g. the out-of-memory killer; SIGSEGV: a crash){ended}")
        raise PersondetError(f"the training processes failed (torchrun exit status {code}); "
                             f"the first error is printed above{ended}")
    return result.get("metrics", {})


def _resumed_run_id(resume: str) -> str | None:
    """The run a resume continues: the run id given, or the one its checkpoint file names."""
    from persondet.training.checkpoint import load_checkpoint

    if os.path.isfile(resume):
        return load_checkpoint(resume).get("run_id")
    return resume.strip() or None


TORCHRUN_PID = "PERSONDET_TORCHRUN_PID"
_FAILURE = re.compile(r"rank\s*:\s*(\d+).*?\n\s*exitcode\s*:\s*(-\d+)", re.S)


def _run_torchrun(command: list[str]) -> tuple[int, tuple[int, int] | None]:
    """Run torchrun (dying with this process) and wait; its exit status and, when its failure summary
    names a worker ended by a signal, (rank, signal number).  Its stderr passes through unchanged."""
    launcher = os.getpid()

    def in_torchrun() -> None:  # after fork, before exec: this is torchrun's process
        die_with_parent(signal.SIGTERM, launcher)
        os.environ[TORCHRUN_PID] = str(os.getpid())  # the workers' parent, for their own check

    process = subprocess.Popen(command, stderr=subprocess.PIPE, preexec_fn=in_torchrun)
    tail = bytearray()

    def relay() -> None:
        out = sys.stderr.buffer if hasattr(sys.stderr, "buffer") else None
        while chunk := os.read(process.stderr.fileno(), 65536):
            tail.extend(chunk)
            del tail[:-65536]
            if out is not None:
                out.write(chunk)
                out.flush()
            else:
                sys.stderr.write(chunk.decode(errors="replace"))

    thread = threading.Thread(target=relay, daemon=True)
    thread.start()
    code = process.wait()
    thread.join(timeout=10)
    found = _FAILURE.search(tail.decode(errors="replace"))
    return code, (int(found.group(1)), -int(found.group(2))) if found else None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _load_prctl():
    """libc's prctl on Linux (loaded once, before any fork: no dynamic loading in a forked child)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()
PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int, parent: int) -> None:
    """Ask Linux to send ``sig`` to this process when its parent (pid ``parent``) dies; if it already has,
    send it now.  A no-op where prctl(PR_SET_PDEATHSIG) does not exist."""
    if _PRCTL is None or _PRCTL(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return
    if os.getppid() != parent:
        os.kill(os.getpid(), sig)


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
