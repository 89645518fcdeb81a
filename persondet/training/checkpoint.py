"""Checkpoints: what an epoch leaves behind, and how a training resumes from it bit for bit.

A checkpoint (``last.pt``, format 2) holds the run id, the epoch just finished, the model name and the
iterations per epoch (a resume must match both), the model, optimizer, scheduler and scaler states, every
rank's RNG states, and the timing so far: tensors and plain Python values only (NumPy's RNG state as a
tensor and numbers), so it is read with ``torch.load(weights_only=True)``, which unpickles no code.  A file
holding anything else (a crafted pickle, a format-1 checkpoint with NumPy arrays) is refused.  It is logged
as the run artifact ``checkpoints/last.pt`` (overwritten each epoch) and, with ``checkpoint_dir``, written
there in a temporary folder and renamed over the previous one only when complete: a full disk keeps the
previous checkpoint and stops the training with one line naming the file.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from persondet.distributed import get_rank, get_world_size, is_distributed
from persondet.errors import PersondetError
from persondet.tracking import RunHandle
from persondet.tracking.runs import same_logged_param
from persondet.tracking.search import download_artifact, get_run

CHECKPOINT = "last.pt"
ARTIFACT_DIR = "checkpoints"
FORMAT = 2


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
    """This process's RNG states (Python, NumPy, torch, CUDA) as tensors and plain values."""
    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "python": random.getstate()}  # (version, tuple of ints, None or float)
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np

    torch.set_rng_state(state["torch"])
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"],
                         numpy["has_gauss"], numpy["gauss"]))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
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
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # what weights_only refuses: a class, a function, an array...
        raise PersondetError(f"resume: {path} holds objects other than tensors and plain values; refused "
                             "unread (loading it could run code; persondet checkpoints hold only data)") from None
    except Exception as exc:  # noqa: BLE001 - a damaged file is the user's input
        raise PersondetError(f"resume: {path} is not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise PersondetError(f"resume: {path} is not a persondet training checkpoint")
    return checkpoint


def restore(checkpoint: dict[str, Any], resume: str, model_name: str, iters_per_epoch: int, detector, optimizer,
            scheduler, scaler) -> Resumed:
    """Load a checkpoint (``load_checkpoint(resume)``) into the training's parts (in place); where to continue.

    The model and the iterations per epoch must be those of the checkpoint; each rank gets its own RNG
    state back when the world size is the same.
    """
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


def check_same_training(run_id: str, params: dict[str, Any], resume: str) -> None:
    """A resume continues the same training: every parameter the run logged that this training would log
    (``trainer.training_params``: the settings and what was derived from them, e.g. ``world_size``,
    ``gpu_type``) must hold the same value; a PersondetError naming each difference otherwise."""
    run = get_run(run_id)
    if run is None:
        raise PersondetError(f"resume={resume!r}: the checkpoint's run {run_id} is not in the tracking store")
    logged = run.data.params
    differ = [f"{key} (logged {logged[key]}, now {value})" for key, value in params.items()
              if key in logged and not same_logged_param(logged[key], value)]
    if differ:
        raise PersondetError(f"resume={resume!r}: this training differs from run {run_id} in "
                             f"{', '.join(differ)}; a resume continues the same training: give the logged "
                             "settings, or start a new training")


def checkpoint_state(run: RunHandle, epoch: int, model_name: str, iters_per_epoch: int, detector, optimizer,
                     scheduler, scaler, rng: list, timing: dict[str, float]) -> dict[str, Any]:
    """The checkpoint of the epoch just finished (``rng``: every rank's states, from ``gather``)."""
    return {"format": FORMAT, "run_id": run.run_id, "epoch": epoch, "model_name": model_name,
            "iters_per_epoch": iters_per_epoch, "world_size": get_world_size(),
            "model": detector.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": rng, "timing": timing}


def save_checkpoint(state: dict[str, Any], run: RunHandle, checkpoint_dir: str) -> None:
    """Write the checkpoint, log it to ``run`` as ``checkpoints/last.pt``, then, with ``checkpoint_dir``, rename
    it over the previous ``last.pt`` there.  It is written in a temporary folder inside ``checkpoint_dir``
    (else the system's): a write that fails (a full disk) leaves the previous checkpoint, logged and local,
    and is one PersondetError naming the file."""
    folder = Path(checkpoint_dir).expanduser() if checkpoint_dir else None
    kept = (f"the previous checkpoint {folder / CHECKPOINT} is kept" if folder is not None and
            (folder / CHECKPOINT).exists() else f"the run keeps its previous {ARTIFACT_DIR}/{CHECKPOINT}")
    try:
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.TemporaryDirectory(prefix=f".{CHECKPOINT}-", dir=folder)
    except OSError as exc:
        raise PersondetError(f"checkpoint_dir={checkpoint_dir!r}: cannot write there ({_reason(exc)})") from None
    with tmp:
        path = Path(tmp.name) / CHECKPOINT
        try:
            with open(path, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
        except (OSError, RuntimeError) as exc:  # torch reports a failed write as a RuntimeError
            raise PersondetError(f"{path}: cannot write the checkpoint ({_reason(exc)}); {kept}") from None
        try:
            run.log_artifact(str(path), ARTIFACT_DIR)
        except OSError as exc:  # a local artifact store (./mlruns) on a full disk
            where = exc.filename or f"the artifact store of run {run.run_id}"
            raise PersondetError(f"{where}: cannot store the checkpoint as {ARTIFACT_DIR}/{CHECKPOINT} "
                                 f"({_reason(exc)})" + (f"; the previous checkpoint {folder / CHECKPOINT} is kept"
                                                        if folder is not None and (folder / CHECKPOINT).exists()
                                                        else "")) from None
        if folder is not None:
            os.replace(path, folder / CHECKPOINT)


def _reason(exc: BaseException) -> str:
    """The OS's reason behind an error (torch wraps the OSError of a failed write in a RuntimeError)."""
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    return " ".join(str(exc).split())[:160]
