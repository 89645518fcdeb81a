"""CrowdHuman (``annotation_{train,val}.odgt``, images ``Images/<ID>.jpg``) to person records.

The format (Shao et al., "CrowdHuman: A Benchmark for Detecting Human in a Crowd", arXiv:1805.00123, and the
annotation format on crowdhuman.org/download.html): one JSON object per line, ``{"ID": ..., "gtboxes": [...]}``;
each gtbox has ``tag`` "person" or "mask" (crowds, reflections, person-like things: to be ignored), boxes
``fbox`` (full body, often running past the image), ``vbox`` (visible part), ``hbox`` (head) as
``[x, y, w, h]``, and optional ``extra`` (``ignore`` 0/1, ``box_id``, ``occ``) and ``head_attr``.  No image
sizes are stored: they come from the JPEG headers.

Two pure steps: ``read_odgt`` (lines -> checked ``CrowdImage`` list; a bad line is one error naming the file
and line number) and ``to_records`` (plus image sizes -> records); ``read_crowdhuman`` joins them with the
image headers.  Lines are decoded by msgspec into typed structs when it is installed (fields the records do
not use, ``hbox`` and ``head_attr``, are skipped without being built), else by ``json``.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from persondet.datasets import CROWDHUMAN_BOXES, CROWDHUMAN_SPLITS
from persondet.errors import PersondetError
from persondet.formats.imagefiles import image_sizes
from persondet.formats.merge import SourceSet

try:
    import msgspec
except ImportError:  # the json path reads the same files, slower
    msgspec = None

NAME = "crowdhuman"
SPLITS = CROWDHUMAN_SPLITS
BOXES = CROWDHUMAN_BOXES  # the person box a record takes: full body (default) or visible part
TAGS = ("person", "mask")
IMAGE_DIR = "Images"
_INF = math.inf
Box = tuple[float, float, float, float]  # x, y, w, h


if msgspec is not None:
    class _Extra(msgspec.Struct):
        ignore: int = 0

    class _GtBox(msgspec.Struct):  # hbox and head_attr are skipped by the decoder, never built
        tag: str
        fbox: tuple[float, float, float, float] | None = None
        vbox: tuple[float, float, float, float] | None = None
        extra: _Extra | None = None

    class _Line(msgspec.Struct):
        ID: str
        gtboxes: list[_GtBox]

    _LINE_DECODER = msgspec.json.Decoder(_Line)


class OdgtFormatError(PersondetError):
    """An .odgt file that is missing or has a line that is not a CrowdHuman annotation."""


@dataclass
class CrowdImage:
    line: int  # line number in the .odgt file, from 1
    id: str  # the ID, also the image's file name without ".jpg"
    boxes: list[tuple[str, int, Box | None, Box | None]]  # (tag, extra.ignore, fbox, vbox) as read

    @property
    def file_name(self) -> str:
        return f"{IMAGE_DIR}/{self.id}.jpg"


def annotation_path(root: str | Path, split: str) -> Path:
    return Path(root) / f"annotation_{split}.odgt"


def read_odgt(path: str | Path, decoder: str = "auto") -> list[CrowdImage]:
    """Every line of an .odgt file (blank lines skipped); ``decoder`` is "auto", "msgspec" or "json"."""
    path = Path(path)
    if not path.is_file():
        raise OdgtFormatError(f"{path}: annotation file not found")
    decode = _line_decoder(decoder)
    images: list[CrowdImage] = []
    seen: set[str] = set()
    with open(path, "rb") as f, _gc_paused():
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}: line {number}"
            image_id, boxes = decode(line.rstrip(b"\r\n"), where)
            for j, (tag, *_) in enumerate(boxes):
                if tag not in TAGS:
                    raise OdgtFormatError(f"{where} (ID {image_id}): gtboxes[{j}] has tag {tag!r}, "
                                          f"expected one of {', '.join(TAGS)}")
            if image_id in seen:
                raise OdgtFormatError(f"{where}: ID {image_id} is listed twice")
            seen.add(image_id)
            images.append(CrowdImage(number, image_id, boxes))
    return images


def _line_decoder(name: str) -> Callable[[bytes, str], tuple[str, list]]:
    if name == "auto":
        name = "json" if msgspec is None else "msgspec"
    if name not in ("msgspec", "json") or (name == "msgspec" and msgspec is None):
        raise PersondetError(f"odgt decoder {name!r}: choose json" + ("" if msgspec is None else " or msgspec"))
    return _msgspec_line if name == "msgspec" else _json_line


def _msgspec_line(line: bytes, where: str) -> tuple[str, list]:
    try:
        record = _LINE_DECODER.decode(line)
    except msgspec.DecodeError as exc:  # ValidationError included
        raise OdgtFormatError(f"{where}: not a CrowdHuman annotation line ({exc})") from None
    return record.ID, [(b.tag, b.extra.ignore if b.extra is not None else 0, b.fbox, b.vbox) for b in record.gtboxes]


def _json_line(line: bytes, where: str) -> tuple[str, list]:
    try:
        record = json.loads(line, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        detail = f"{exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise OdgtFormatError(f"{where}: not a JSON object ({detail})") from None
    if not isinstance(record, dict) or not isinstance(record.get("ID"), str) \
            or not isinstance(record.get("gtboxes"), list):
        raise OdgtFormatError(f"{where}: not a CrowdHuman annotation line (needs a string 'ID' and a list 'gtboxes')")
    boxes = []
    for j, box in enumerate(record["gtboxes"]):
        at = f"{where}: gtboxes[{j}]"
        extra = box.get("extra") if isinstance(box, dict) else None
        if not isinstance(box, dict) or not isinstance(box.get("tag"), str) \
                or not isinstance(extra if extra is not None else {}, dict):
            raise OdgtFormatError(f"{at}: not a gtbox (needs a string 'tag', 'extra' an object)")
        ignore = (extra or {}).get("ignore", 0)
        if not isinstance(ignore, int):
            raise OdgtFormatError(f"{at}: extra.ignore is {ignore!r}, not 0 or 1")
        boxes.append((box["tag"], ignore, _xywh(box.get("fbox"), f"{at}.fbox"), _xywh(box.get("vbox"), f"{at}.vbox")))
    return record["ID"], boxes


def _xywh(value: Any, where: str) -> Box | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 4 \
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise OdgtFormatError(f"{where} is {str(value)[:60]}, not [x, y, w, h]")
    return tuple(float(v) for v in value)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def to_records(images: Sequence[CrowdImage], sizes: Mapping[str, tuple[int, int]], box: str = "fbox",
               where: str | Path = "crowdhuman") -> tuple[list[dict], list[dict], dict[str, int]]:
    """(images, annotations, counts): boxes clipped to the image, images without a person left out.

    A ``person`` without ``extra.ignore`` is a person box (its ``box``: fbox or vbox); a ``mask`` and an
    ignored person are ignore regions (``ignore: 1``, their ``box``, else the other one).  ``vis_ratio`` =
    vbox area / fbox area where both are given.  Image ids are the 1-based position in the file.
    A negative or non-finite size is an error naming ``where``, the line and the box.  Counts:
    ``boxes_total``, ``masks``, ``ignored_persons`` over the file; ``dropped_boxes`` (w or h = 0),
    ``outside_boxes`` (nothing left after clipping), ``clipped_boxes``; ``person_boxes`` and
    ``ignore_regions`` over the images kept.
    """
    if box not in BOXES:
        raise PersondetError(f"crowdhuman_box={box!r} must be one of {', '.join(BOXES)}")
    counts = dict.fromkeys(("images_total", "images_without_persons", "boxes_total", "person_boxes",
                            "ignore_regions", "masks", "ignored_persons", "dropped_boxes", "clipped_boxes",
                            "outside_boxes"), 0)
    counts["images_total"] = len(images)
    out_images, out_annotations = [], []
    with _gc_paused():  # hundreds of thousands of small dicts: the cyclic GC would rescan them again and again
        for index, image in enumerate(images):
            if image.file_name not in sizes:
                raise OdgtFormatError(f"no image size for {image.file_name}")
            width, height = sizes[image.file_name]
            kept = _image_boxes(image, box, float(width), float(height), counts, f"{where}: line {image.line}")
            ignored = sum(ann["ignore"] for ann in kept)
            if ignored == len(kept):
                counts["images_without_persons"] += 1
                continue
            out_images.append({"id": index + 1, "file_name": image.file_name, "width": int(width),
                               "height": int(height), "original_file_name": f"{image.id}.jpg"})
            for ann in kept:
                ann["id"], ann["image_id"] = len(out_annotations) + 1, index + 1
                out_annotations.append(ann)
            counts["ignore_regions"] += ignored
            counts["person_boxes"] += len(kept) - ignored
    return out_images, out_annotations, counts


def _image_boxes(image: CrowdImage, box: str, width: float, height: float, counts: dict[str, int],
                 where: str) -> list[dict]:
    kept = []
    masks = ignored_persons = dropped = outside = clipped = 0
    use_fbox = box == "fbox"
    for j, (tag, ignore, fbox, vbox) in enumerate(image.boxes):
        if tag == "mask":
            masks += 1
        elif ignore:
            ignored_persons += 1
        xywh = fbox if use_fbox else vbox
        if xywh is None:
            xywh = _fallback_box(image, j, box, where)
        x, y, w, h = xywh
        if not (0.0 <= w < _INF and 0.0 <= h < _INF and -_INF < x < _INF and -_INF < y < _INF):
            key = box if (fbox if use_fbox else vbox) is not None else ("fbox" if fbox is not None else "vbox")
            raise OdgtFormatError(f"{where} (ID {image.id}): gtboxes[{j}].{key} = {list(xywh)}: "
                                  "negative or non-finite width or height")
        if w == 0.0 or h == 0.0:
            dropped += 1
            continue
        x2, y2 = x + w, y + h
        x1, y1 = (x if x > 0.0 else 0.0), (y if y > 0.0 else 0.0)
        cx2, cy2 = (x2 if x2 < width else width), (y2 if y2 < height else height)
        if cx2 <= x1 or cy2 <= y1:
            outside += 1
            continue
        if x1 != x or y1 != y or cx2 != x2 or cy2 != y2:
            clipped += 1
        ann = {"bbox": [x1, y1, cx2 - x1, cy2 - y1], "area": (cx2 - x1) * (cy2 - y1), "iscrowd": 0,
               "ignore": 0 if tag == "person" and not ignore else 1}
        if fbox is not None and vbox is not None and fbox[2] * fbox[3] > 0.0:
            ann["vis_ratio"] = round(vbox[2] * vbox[3] / (fbox[2] * fbox[3]), 4)
        kept.append(ann)
    counts["boxes_total"] += len(image.boxes)
    counts["masks"] += masks
    counts["ignored_persons"] += ignored_persons
    counts["dropped_boxes"] += dropped
    counts["outside_boxes"] += outside
    counts["clipped_boxes"] += clipped
    return kept


def _fallback_box(image: CrowdImage, j: int, box: str, where: str) -> Box:
    """An ignore region without the chosen box takes the other one; a person must have it."""
    tag, ignore, fbox, vbox = image.boxes[j]
    if tag == "person" and not ignore:
        raise OdgtFormatError(f"{where} (ID {image.id}): gtboxes[{j}] is a person without {box}")
    if fbox is None and vbox is None:
        raise OdgtFormatError(f"{where} (ID {image.id}): gtboxes[{j}] ({tag}) has neither fbox nor vbox")
    return fbox if fbox is not None else vbox


@contextlib.contextmanager
def _gc_paused():
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_crowdhuman(root: str | Path, split: str = "train", box: str = "fbox",
                    decoder: str = "auto") -> tuple[SourceSet, dict[str, int]]:
    """A CrowdHuman root (``annotation_<split>.odgt``, ``Images/``) -> (source ``crowdhuman``, counts).

    Every image listed must exist; sizes come from the JPEG headers.
    """
    if split not in SPLITS:
        raise PersondetError(f"crowdhuman_split={split!r} must be one of {', '.join(SPLITS)}")
    if box not in BOXES:
        raise PersondetError(f"crowdhuman_box={box!r} must be one of {', '.join(BOXES)}")
    root = Path(root)
    path = annotation_path(root, split)
    images = read_odgt(path, decoder)
    sizes = image_sizes(root, [image.file_name for image in images], path)
    out_images, annotations, counts = to_records(images, sizes, box, where=path)
    return SourceSet(NAME, root, out_images, annotations), counts



def check_root(root: str | Path, split: str = "train", box: str = "fbox") -> None:
    """In seconds, before a study: ``annotation_<split>.odgt`` is there and its first line is a JSON object,
    the image folder exists; the full read is ``prepare``'s."""
    if split not in SPLITS:
        raise PersondetError(f"crowdhuman_split={split!r} must be one of {', '.join(SPLITS)}")
    if box not in BOXES:
        raise PersondetError(f"crowdhuman_box={box!r} must be one of {', '.join(BOXES)}")
    path = annotation_path(root, split)
    try:
        with open(path, "rb") as f:
            first = f.readline(1 << 20).strip()
    except OSError as exc:
        raise OdgtFormatError(f"{path}: cannot read the annotation file ({exc.strerror})") from None
    if not first.startswith(b"{"):
        raise OdgtFormatError(f"{path}: line 1 is not a JSON object (an .odgt file has one per line)")
    if not (Path(root) / IMAGE_DIR).is_dir():
        raise PersondetError(f"crowdhuman_root={str(root)!r}: no image folder {IMAGE_DIR}/")
