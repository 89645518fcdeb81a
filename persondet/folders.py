"""Putting a finished folder in place: built beside its target, then renamed in, so a reader sees the old
folder or the new one, never half of one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def replace_folder(new: Path, target: Path) -> Path:
    """Rename the finished folder ``new`` to ``target``; an earlier ``target`` is set aside first and removed
    only once the new one is in place.  Returns the resolved target."""
    target = target.resolve()
    old: Path | None = target.with_name(f".{target.name}.old-{os.getpid()}")
    try:
        target.rename(old)
    except FileNotFoundError:  # nothing there (or another process set it aside first)
        old = None
    new.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target
