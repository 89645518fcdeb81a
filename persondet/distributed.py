"""torch.distributed helpers: the one ``is_main_process()`` gate for logging and checkpointing."""

from __future__ import annotations

import os


def get_rank() -> int:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank()
    except ImportError:  # formats-only installs
        pass
    return int(os.environ.get("RANK", "0"))


def get_world_size() -> int:
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
