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
