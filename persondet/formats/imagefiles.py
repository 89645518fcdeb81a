"""The images an annotation file lists: all present, and their sizes from the file headers.

Every reader that needs image sizes goes through ``image_sizes`` (one place to change how headers are read).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from persondet.formats import imagesize


def image_sizes(directory: Path, names: Sequence[str], listed_in: Path) -> dict[str, tuple[int, int]]:
    """name -> (width, height) of every ``directory / name``; missing images are one error (count, first names)."""
    # prepare's check (one directory listing per folder); imported here, not at the top, because prepare
    # imports the format readers.
    from persondet.prepare import check_files_exist

    check_files_exist(directory, names, listed_in)
    return {name: imagesize.image_size(directory / name) for name in _progress(names)}


def _progress(names: Sequence[str]):
    from tqdm import tqdm

    return tqdm(names, desc=f"image headers ({len(names)})", unit="file", leave=False, mininterval=1.0,
                disable=len(names) < 1000 or None)
