"""torch.distributed helpers: the one ``is_main_process()`` gate for logging and checkpointing."""

from __future__ import annotations

import os
import sys


def _process_group():
    """``torch.distributed`` when a process group is initialised, else None.

    A process that has not imported torch has no process group; importing it here would cost
    ~0.5 GB of memory in steps that never use torch (prepare).
    """
    if "torch" not in sys.modules:
        return None
    try:
        import torch.distributed as dist
    except ImportError:  # formats-only installs
        return None
    return dist if dist.is_available() and dist.is_initialized() else None


def get_rank() -> int:
    dist = _process_group()
    return dist.get_rank() if dist is not None else int(os.environ.get("RANK", "0"))


def get_world_size() -> int:
    dist = _process_group()
    return dist.get_world_size() if dist is not None else int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process (collectives are needed)."""
    dist = _process_group()
    return dist is not None and dist.get_world_size() > 1


def is_main_process() -> bool:
    """True on global rank 0, and in a plain single process."""
    return get_rank() == 0


def device_for(want: str):
    """The torch device of a ``device`` setting (auto, cpu, cuda): auto is CUDA when one is visible; this
    process's GPU is LOCAL_RANK's (torchrun sets it; 0 otherwise)."""
    import torch

    from persondet.errors import PersondetError

    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda":
        if not torch.cuda.is_available():
            raise PersondetError("device=cuda but no CUDA device is visible (torch.cuda.is_available() is False)")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def device_name(device) -> str:
    """What a run logs as the device it ran on: ``cpu`` or the GPU's name."""
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
