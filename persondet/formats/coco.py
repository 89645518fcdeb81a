"""Read the person annotations of a COCO instances file, fast and lean enough for instances_train2017.json.

Most of a COCO instances file (about 3/4 of its 450 MB) is polygon segmentations, which person detection
never uses.  The file is read in 4 MiB blocks and every polygon value (``"segmentation": [[x, y, ...]]``)
is replaced by ``[]`` with one regular expression before parsing; RLE segmentations (crowd regions,
``{"counts": ...}``) are left alone.  The remaining ~140 MB are parsed by the standard ``json`` module with
an ``object_hook`` that turns each image and annotation into a small tuple at once.  Measured on a
568 MB synthetic file (860,000 annotations) on 2 cores: 5.6 s and 0.75 GB peak, against 13.4 s for
``ijson.items(f, "annotations.item")`` with the C backend (plus 8 s for a second pass over ``images``),
and ~25 s / 3 GB for ``pycocotools.coco.COCO``.

A polygon is only ever replaced when it is followed by ``,"key"`` or ``}``, i.e. when it is complete, so a
block boundary never cuts one; errors in malformed files are reported at their byte offset in the
original file.
"""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from persondet.datasets import PersonCategoryError, person_category_id as person_category
from persondet.errors import PersondetError

_BLOCK = 1 << 22
_KEY = b'"segmentation"'
# A polygon list: only numbers, commas, brackets and white space, up to the bracket that ends the value.
_POLYGON = re.compile(rb'("segmentation"\s*:\s*)\[[-+0-9.eE,\s\[\]]*\](?=\s*(?:\}|,\s*"))')


class CocoFormatError(PersondetError):
    """A COCO file that cannot be read as COCO instances."""


@dataclass
class CocoPersons:
    """The person part of one COCO instances file. Boxes are [x, y, w, h] float pixels."""

    path: Path
    category_id: int  # the person category's id in this file
    images: list[dict]  # images with at least one person annotation (crowd included)
    annotations: list[dict]  # person annotations: id, image_id, bbox, area, iscrowd
    counts: dict[str, int] = field(default_factory=dict)


def read_coco_persons(path: str | Path, category_name: str = "person") -> CocoPersons:
    """Person annotations and the images that hold them; images without persons are counted, left out."""
    path = Path(path)
    data = load_instances(path)
    category_id = person_category_id(data["categories"], path, category_name)
    images = {}
    for entry in data["images"]:
        if not isinstance(entry, tuple):
            raise CocoFormatError(f"{path}: image entry {str(entry)[:80]} lacks id or file_name")
        images[entry[0]] = entry
    annotations, dropped = [], 0
    with_persons: set = set()
    for ann in data["annotations"]:
        if not isinstance(ann, tuple):
            raise CocoFormatError(f"{path}: annotation {str(ann)[:80]} lacks image_id or category_id")
        if ann[2] != category_id:
            continue
        ann_id, image_id, _, bbox, area, iscrowd = ann
        if image_id not in images:
            raise CocoFormatError(f"{path}: annotation {ann_id} refers to image_id {image_id}, not listed")
        box = _box(bbox, ann_id, path)
        if box[2] <= 0 or box[3] <= 0:
            dropped += 1
            continue
        with_persons.add(image_id)
        annotations.append({"id": ann_id, "image_id": image_id, "bbox": box,
                            "area": float(area) if area is not None else box[2] * box[3],
                            "iscrowd": 1 if iscrowd else 0})
    kept = [_image(images[i], path) for i in images if i in with_persons]
    counts = {"images_total": len(images), "images_without_persons": len(images) - len(kept),
              "annotations_total": len(data["annotations"]), "dropped_boxes": dropped,
              "crowd_regions": sum(a["iscrowd"] for a in annotations)}
    return CocoPersons(path=path, category_id=category_id, images=kept, annotations=annotations,
                       counts=counts)


def person_category_id(categories: Any, path: Path, category_name: str = "person") -> int:
    """The person category's id by the one rule (``persondet.datasets.person_category_id``)."""
    if not isinstance(categories, list):
        raise CocoFormatError(f"{path}: 'categories' is not a list")
    try:
        return person_category(categories, category_name, str(path))
    except PersonCategoryError as exc:  # named as COCO users know them: by name, not by id
        names = sorted(str(c.get("name")) for c in categories if isinstance(c, dict))[:10]
        raise CocoFormatError(f"{path}: {exc.problem} {exc.wanted} "
                              f"(categories: {', '.join(names) or 'none'})") from None


def load_instances(path: Path) -> dict:
    """The file as a dict; images and annotations as tuples, polygon segmentations dropped."""
    if not path.is_file():
        raise CocoFormatError(f"{path}: annotation file not found")
    data, pieces = _read_without_polygons(path)
    try:
        result = json.loads(data, object_hook=_compact)
    except json.JSONDecodeError as exc:
        offset = _original_offset(path, data, exc.pos, pieces)
        raise CocoFormatError(f"{path}: malformed JSON at byte {offset}: {exc.msg}") from None
    except (UnicodeDecodeError, RecursionError) as exc:
        raise CocoFormatError(f"{path}: not a JSON text ({type(exc).__name__})") from None
    if not isinstance(result, dict):
        raise CocoFormatError(f"{path}: not a COCO file (top level is {type(result).__name__}, not an object)")
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(result.get(k), list)]
    if missing:
        raise CocoFormatError(f"{path}: not a COCO instances file: no list {', '.join(map(repr, missing))}")
    return result


def _compact(obj: dict) -> Any:
    if "image_id" in obj and "category_id" in obj:
        return (obj.get("id"), obj["image_id"], obj["category_id"], obj.get("bbox"), obj.get("area"),
                obj.get("iscrowd", 0))
    if "file_name" in obj and "id" in obj:
        return (obj["id"], obj["file_name"], obj.get("width"), obj.get("height"))
    return obj


def _box(bbox: Any, ann_id: Any, path: Path) -> list[float]:
    try:
        if len(bbox) != 4:
            raise ValueError
        return [float(v) for v in bbox]
    except (TypeError, ValueError):
        raise CocoFormatError(f"{path}: annotation {ann_id} has bbox {bbox!r}, not [x, y, w, h]") from None


def _image(entry: tuple, path: Path) -> dict:
    image_id, file_name, width, height = entry
    if not isinstance(file_name, str) or not isinstance(width, int) or not isinstance(height, int) \
            or width <= 0 or height <= 0:
        raise CocoFormatError(f"{path}: image {image_id} ({file_name!r}) has no valid file_name, width, height")
    return {"id": image_id, "file_name": file_name, "width": width, "height": height}


def _read_without_polygons(path: Path) -> tuple[bytes, list[tuple[int, int]]]:
    """File bytes with polygon values emptied, and (filtered offset, original offset) per processed piece."""
    parts: list[bytes] = []
    pieces: list[tuple[int, int]] = []
    original = filtered = 0
    carry = b""
    with open(path, "rb") as f:
        while True:
            block = f.read(_BLOCK)
            buf = carry + block
            if block:
                # Hold back from the last key on (its value may continue in the next block), or a few
                # bytes where the key itself may be cut.
                cut = buf.rfind(_KEY)
                cut = cut if cut >= 0 else max(0, len(buf) - len(_KEY))
            else:
                cut = len(buf)
            head, carry = buf[:cut], buf[cut:]
            if head:
                out = _POLYGON.sub(rb"\1[]", head)
                pieces.append((filtered, original))
                parts.append(out)
                original += len(head)
                filtered += len(out)
            if not block:
                break
    return b"".join(parts), pieces


def _original_offset(path: Path, data: bytes, char_pos: int, pieces: list[tuple[int, int]]) -> int:
    """Byte offset in the original file of a character position in the filtered text."""
    byte_pos = len(data.decode("utf-8", errors="replace")[:char_pos].encode("utf-8", errors="replace"))
    k = max(0, bisect.bisect_right([p[0] for p in pieces], byte_pos) - 1)
    filtered_start, original_start = pieces[k] if pieces else (0, 0)
    end = pieces[k + 1][1] if k + 1 < len(pieces) else None
    with open(path, "rb") as f:
        f.seek(original_start)
        original = f.read() if end is None else f.read(end - original_start)
    shift, pos = 0, byte_pos - filtered_start
    for match in _POLYGON.finditer(original):
        removed = match.end() - match.start() - (len(match.group(1)) + 2)
        if match.start() + len(match.group(1)) + 2 - shift > pos:
            break
        shift += removed
    return original_start + pos + shift
