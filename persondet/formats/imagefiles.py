"""The images an annotation file lists: all present, all readable, and their sizes from the file headers.

Every reader that needs image sizes goes through ``image_sizes``: one place decides how headers are read,
and a missing, empty or unreadable image is found by ``prepare``, not later by training.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from persondet.errors import PersondetError
from persondet.formats.imagesize import ImageHeaderError, image_size


def image_sizes(directory: Path, names: Sequence[str], listed_in: Path) -> dict[str, tuple[int, int]]:
    """name -> (width, height) of every ``directory / name``; missing, empty or unreadable images are one error
    each kind (count and first names), naming ``listed_in``."""
    check_files_exist(directory, names, listed_in)
    return read_image_sizes(directory, names, listed_in)


def check_files_exist(directory: Path, names: Sequence[str], listed_in: Path) -> None:
    """Every name exists under ``directory``: one directory listing per folder, not one stat per file."""
    listings: dict[str, set[str]] = {}
    missing = []
    for name in names:
        sub, _, base = name.rpartition("/")
        if sub not in listings:
            try:
                listings[sub] = set(os.listdir(directory / sub))  # directory / "" is directory
            except (FileNotFoundError, NotADirectoryError):
                listings[sub] = set()
        if base not in listings[sub]:
            missing.append(name)
    if missing:
        first = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise PersondetError(f"{len(missing)} of {len(names)} images listed in {listed_in} are missing "
                             f"under {directory}: {first}")


def read_image_sizes(directory: Path, names: Sequence[str], listed_in: Path) -> dict[str, tuple[int, int]]:
    """(width, height) per name, from the file header; every empty or unreadable file is reported at once."""
    sizes, bad = {}, []
    folder = str(directory)
    for name in _progress(names, f"image headers ({directory.name})"):
        try:
            sizes[name] = image_size(f"{folder}/{name}")  # a str, not a Path: 80,000 of them
        except ImageHeaderError as exc:
            bad.append(f"{name} ({exc.reason})")
    if bad:
        first = ", ".join(bad[:5]) + (", ..." if len(bad) > 5 else "")
        raise PersondetError(f"{len(bad)} of {len(names)} images listed in {listed_in} are empty or unreadable "
                             f"under {directory}: {first}")
    return sizes


def _progress(items: Sequence, desc: str):
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="file", leave=False, mininterval=1.0, disable=len(items) < 1000 or None)
