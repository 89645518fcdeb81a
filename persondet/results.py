"""COCO results files: the detections of a detector trained elsewhere, read and checked for ``evaluate``.

A results file is what COCO's ``loadRes`` reads: a JSON list of ``{"image_id", "category_id", "bbox":
[x, y, w, h], "score"}`` in pixels of the test set's images.  Entries of the test set's person category
are scored; entries of other categories are counted and left out.  Every problem is one line naming the
file and the entry (its position in the list, from 0).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Collection

from persondet.errors import PersondetError


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _problem(entry: Any, image_ids: Collection[int]) -> str:
    """What is wrong with one entry ('' when nothing)."""
    if not isinstance(entry, dict):
        return f"is a {type(entry).__name__}, not an object with image_id, category_id, bbox and score"
    for key in ("image_id", "category_id", "bbox", "score"):
        if key not in entry:
            return f"has no {key}"
    image_id, category_id = entry["image_id"], entry["category_id"]
    if not isinstance(image_id, int) or isinstance(image_id, bool):
        return f"image_id {image_id!r} is not an integer"
    if image_id not in image_ids:
        return f"image_id {image_id} is not an image of the test set"
    if not isinstance(category_id, int) or isinstance(category_id, bool):
        return f"category_id {category_id!r} is not an integer"
    bbox = entry["bbox"]
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) for v in bbox)):
        return f"bbox {bbox!r} is not [x, y, w, h] of four finite numbers"
    if bbox[2] < 0 or bbox[3] < 0:
        return f"bbox {bbox!r} has a negative width or height"
    if not _number(entry["score"]):
        return f"score {entry['score']!r} is not a finite number"
    return ""


def read_detections(path: str, image_ids: Collection[int], category_id: int) -> tuple[list[dict], int]:
    """(the person detections of the results file ``path``, how many entries of other categories were left
    out); a one-line PersondetError naming the file and the entry for anything else.

    A non-empty file without a single entry of ``category_id`` is an error (the detector's person category
    is not the test set's: nothing would be scored); an empty list is a detector that found nothing."""
    file = Path(path).expanduser()
    where = f"detections={path!r}"
    if not file.is_file():
        raise PersondetError(f"{where}: no such file")
    try:
        entries = json.loads(file.read_bytes())
    except (OSError, ValueError) as exc:
        raise PersondetError(f"{where} is not valid JSON ({' '.join(str(exc).split())[:120]})") from None
    if not isinstance(entries, list):
        raise PersondetError(f"{where} is not a COCO results file: a JSON list of {{image_id, category_id, "
                             f"bbox, score}} objects expected, found a {type(entries).__name__}")
    ids = set(image_ids)
    kept, other_categories = [], set()
    for index, entry in enumerate(entries):
        problem = _problem(entry, ids)
        if problem:
            raise PersondetError(f"{where}: entry {index} {problem}")
        if entry["category_id"] != category_id:
            other_categories.add(entry["category_id"])
            continue
        kept.append({"image_id": entry["image_id"], "category_id": category_id,
                     "bbox": [float(v) for v in entry["bbox"]], "score": float(entry["score"])})
    if entries and not kept:
        found = ", ".join(str(c) for c in sorted(other_categories))
        raise PersondetError(f"{where}: no entry has category_id {category_id}, the test set's person category "
                             f"(the file's category ids: {found}); write the detections with that id")
    return kept, len(entries) - len(kept)
