"""Checkpoints: what an epoch leaves behind, and how a training resumes from it bit for bit.

A checkpoint (``last.pt``, format 1) holds the run id, the epoch just finished, the model name and the
iterations per epoch (a resume must match both), the model, optimizer, scheduler and scaler states, every
rank's RNG states, and the timing so far.  It is logged as the run artifact ``checkpoints/last.pt``
(overwritten each epoch) and, with ``checkpoint_dir``, placed there atomically.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from persondet.distributed import get_rank, get_world_size, is_distributed
from persondet.errors import PersondetError
from persondet.tracking import RunHandle
from persondet.tracking.search import download_artifact

CHECKPOINT = "last.pt"
ARTIFACT_DIR = "checkpoints"
FORMAT = 1


@dataclass
class Resumed:
    """Where a training continues: the next epoch, its run, and the timing so far."""

    start_epoch: int = 0
    run_id: str | None = None
    timing: dict[str, float] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """This process's RNG states (Python, NumPy, torch, CUDA)."""
    import numpy as np

    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np

    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (``[obj]`` in one process)."""
    import torch.distributed as dist

    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def load_checkpoint(resume: str) -> dict[str, Any]:
    """``resume`` is a checkpoint file or a training run id (its artifact ``checkpoints/last.pt``)."""
    path = Path(resume).expanduser()
    if not path.is_file():
        fetched = download_artifact(resume, f"{ARTIFACT_DIR}/{CHECKPOINT}", tempfile.mkdtemp())
        if fetched is None:
            raise PersondetError(f"resume={resume!r} is neither a checkpoint file nor a training run "
                                 f"with an artifact {ARTIFACT_DIR}/{CHECKPOINT}")
        path = Path(fetched)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - a damaged file is the user's input
        raise PersondetError(f"resume: {path} is not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise PersondetError(f"resume: {path} is not a persondet training checkpoint")
    return checkpoint


def restore(resume: str, model_name: str, iters_per_epoch: int, detector, optimizer, scheduler,
            scaler) -> Resumed:
    """Load the checkpoint ``resume`` names into the training's parts (in place); where to continue.

    The model and the iterations per epoch must be those of the checkpoint; each rank gets its own RNG
    state back when the world size is the same.
    """
    checkpoint = load_checkpoint(resume)
    if checkpoint["model_name"] != model_name or checkpoint["iters_per_epoch"] != iters_per_epoch:
        raise PersondetError(
            f"resume={resume!r}: the checkpoint is of model={checkpoint['model_name']} with "
            f"{checkpoint['iters_per_epoch']} iterations per epoch; this training has "
            f"model={model_name} with {iters_per_epoch}: resume with the same settings")
    detector.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    if scaler is not None and checkpoint.get("scaler"):
        scaler.load_state_dict(checkpoint["scaler"])
    if len(checkpoint["rng"]) == get_world_size():
        _set_rng_state(checkpoint["rng"][get_rank()])
    return Resumed(checkpoint["epoch"] + 1, checkpoint["run_id"], checkpoint["timing"])


def checkpoint_state(run: RunHandle, epoch: int, model_name: str, iters_per_epoch: int, detector, optimizer,
                     scheduler, scaler, rng: list, timing: dict[str, float]) -> dict[str, Any]:
    """The checkpoint of the epoch just finished (``rng``: every rank's states, from ``gather``)."""
    return {"format": FORMAT, "run_id": run.run_id, "epoch": epoch, "model_name": model_name,
            "iters_per_epoch": iters_per_epoch, "world_size": get_world_size(),
            "model": detector.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": rng, "timing": timing}


def save_checkpoint(state: dict[str, Any], run: RunHandle, checkpoint_dir: str) -> None:
    """Write, log to ``run`` as ``checkpoints/last.pt``, then (atomically) place in ``checkpoint_dir``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / CHECKPOINT
        torch.save(state, path)
        run.log_artifact(str(path), ARTIFACT_DIR)
        if checkpoint_dir:
            target = Path(checkpoint_dir)
            target.mkdir(parents=True, exist_ok=True)
            partial = target / f".{CHECKPOINT}.partial"
            shutil.copyfile(path, partial)
            os.replace(partial, target / CHECKPOINT)
