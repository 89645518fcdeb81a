"""torch.distributed helpers: the one ``is_main_process()`` gate for logging and checkpointing."""

from __future__ import annotations

import os
import sys


def get_rank() -> int:
    # A process that has not imported torch has no process group; importing it here would cost
    # ~0.5 GB of memory in steps that never use torch (prepare).
    if "torch" not in sys.modules:
        return int(os.environ.get("RANK", "0"))
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank()
    except ImportError:  # formats-only installs
        pass
    return int(os.environ.get("RANK", "0"))


def get_world_size() -> int:
    if "torch" not in sys.modules:
        return int(os.environ.get("WORLD_SIZE", "1"))
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_world_size()
    except ImportError:
        pass
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """True on global rank 0, and in a plain single process."""
    return get_rank() == 0
