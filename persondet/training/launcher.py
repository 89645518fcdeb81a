"""``launch(config)``: the training in this process, or in torchrun's worker processes.

With ``nproc * nnodes > 1`` it starts ``python -m torch.distributed.run ... -m persondet.training.worker
<config.json> <result.json>``.  The config file carries the run: node 0's launcher takes ``mlflow run``'s
run or creates one (not when resuming: the checkpoint names its run), so every worker logs to that one run
(only global rank 0 does); when the workers fail, the launcher ends it FAILED.
"""

from __future__ import annotations

import dataclasses
import json
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


def launch(config: TrainConfig) -> dict[str, Any]:
    """Run the training: in this process, or through torchrun when nproc * nnodes > 1; its metrics."""
    from persondet.training.trainer import train

    check_may_train(REGISTERED_MODEL if config.register else None)
    if config.nproc * config.nnodes == 1:
        return train(config)
    port = config.master_port or (_free_port() if config.nnodes == 1 else 29500)
    run = RunHandle(None)
    if config.node_rank == 0 and not config.resume:
        given = launcher_run_id()
        run = RunHandle(given) if given else create_run("train")
    with tempfile.TemporaryDirectory() as tmp:
        config_file, result_file = Path(tmp) / "config.json", Path(tmp) / "result.json"
        config_file.write_text(worker_config_json(config, run.run_id))
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={config.nproc}",
                   f"--nnodes={config.nnodes}", f"--node-rank={config.node_rank}",
                   f"--master-addr={config.master_addr}", f"--master-port={port}",
                   "-m", "persondet.training.worker", str(config_file), str(result_file)]
        code = subprocess.run(command).returncode
        result = json.loads(result_file.read_text()) if result_file.exists() else {}
    if code != 0 or "error" in result:
        run.end_if_running("FAILED")
        if result.get("error"):
            raise PersondetError(result["error"])
        raise PersondetError(f"the training processes failed (torchrun exit status {code}); "
                             "the first error is printed above")
    return result.get("metrics", {})


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
