"""Read the person annotations of a COCO instances file, fast and lean enough for instances_train2017.json.

About 3/4 of a COCO instances file is polygon segmentations, which person detection never uses.  The file
is decoded by ``msgspec`` into typed structs that declare only the fields read here: every other field
(``segmentation``, ``license``, ``coco_url``...) is skipped by the parser without building a Python object,
and ``bbox`` is kept as raw JSON text until it is known to belong to a person (the 260,000 person boxes of
train2017 are then decoded in one call).  Measured for issue 15 on the benchmark's 441 MB train2017-sized
file: msgspec typed decoding 1.8 s / 0.77 GB peak, against ``json`` 18.4 s / 2.9 GB and ``orjson`` 9.4 s /
4.2 GB; with the raw ``bbox`` the decoding peaks at 0.66 GB (the whole of ``prepare``: docs/BENCHMARKS.md).

Boxes follow ``formats.boxes``: non-finite (``NaN``/``Infinity`` tokens, ``1e999``) or absurd values are
refused, empty boxes dropped, boxes clipped to the image; each change is counted.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from persondet.datasets import PersonCategoryError, person_category_id as person_category

from persondet.errors import PersondetError
from persondet.formats.boxes import MAX_COORDINATE, clip_boxes, first_insane
from persondet.formats.paths import safe_relative_path


class CocoFormatError(PersondetError):
    """A COCO file that cannot be read as COCO instances."""


class CocoImage(msgspec.Struct, gc=False):
    id: int
    file_name: str
    width: int
    height: int


class CocoAnnotation(msgspec.Struct, gc=False):
    id: int
    image_id: int
    category_id: int
    bbox: msgspec.Raw = msgspec.Raw()  # JSON text; decoded for person annotations only
    area: float | None = None
    iscrowd: int | bool = 0


class CocoCategory(msgspec.Struct, gc=False):
    id: int
    name: str


class CocoInstances(msgspec.Struct, gc=False):
    images: list[CocoImage]
    annotations: list[CocoAnnotation]
    categories: list[CocoCategory]


class _Entry(msgspec.Struct, gc=False):
    id: Any = None


class _EntryIds(msgspec.Struct, gc=False):
    images: list[msgspec.Raw] = []
    annotations: list[msgspec.Raw] = []
    categories: list[msgspec.Raw] = []


_DECODER = msgspec.json.Decoder(CocoInstances)
_BOX = msgspec.json.Decoder(tuple[float, float, float, float])
_BOXES = msgspec.json.Decoder(list[tuple[float, float, float, float]])
_KIND = {"images": "image", "annotations": "annotation", "categories": "category"}


@dataclass
class CocoPersons:
    """The person part of one COCO instances file. Boxes are [x, y, w, h] float pixels."""

    path: Path
    category_id: int  # the person category's id in this file
    images: list[dict]  # images with at least one person annotation (crowd included)
    annotations: list[dict]  # person annotations: id, image_id, bbox, area, iscrowd
    counts: dict[str, int] = field(default_factory=dict)


def read_coco_persons(path: str | Path, category_name: str = "person") -> CocoPersons:
    """Person annotations (boxes checked, clipped) and the images that hold them; other images counted."""
    path = Path(path)
    data = load_instances(path)
    category_id = person_category_id(data.categories, path, category_name)
    image_list, images = data.images, _index_images(data.images, path)
    persons = [a for a in data.annotations if a.category_id == category_id]
    n_annotations = len(data.annotations)
    _check_unique_ids([a.id for a in persons], "annotation", path)  # the others are not read
    boxes, sizes = _person_boxes(persons, images, path)
    clipped, kept, counts = clip_boxes(boxes, sizes)
    area = np.array([a.area for a in persons], dtype=np.float64)  # None -> NaN: the box area is used
    negative = np.flatnonzero(kept & (area < 0))
    if negative.size:
        raise CocoFormatError(f"{path}: annotation {persons[negative[0]].id} has area {area[negative[0]]}, < 0")
    box_area = clipped[:, 2] * clipped[:, 3]
    clipped_now = kept & (clipped != boxes).any(axis=1)
    area = np.where(np.isnan(area), box_area, np.where(clipped_now, np.minimum(area, box_area), area))
    index = np.flatnonzero(kept).tolist()
    rows = [(persons[i].id, persons[i].image_id, 1 if persons[i].iscrowd else 0) for i in index]
    del data, persons  # the raw bboxes hold the whole file's bytes: free them before building the output
    annotations = [{"id": ann_id, "image_id": image_id, "bbox": box, "area": a, "iscrowd": crowd}
                   for (ann_id, image_id, crowd), box, a in zip(rows, clipped[index].tolist(), area[index].tolist())]
    with_persons = {row[1] for row in rows}
    kept_images = [{"id": im.id, "file_name": im.file_name, "width": im.width, "height": im.height}
                   for im in image_list if im.id in with_persons]
    counts = {"images_total": len(images), "images_without_persons": len(images) - len(kept_images),
              "annotations_total": n_annotations, **counts, "crowd_regions": sum(row[2] for row in rows)}
    return CocoPersons(path=path, category_id=category_id, images=kept_images, annotations=annotations,
                       counts=counts)


def person_category_id(categories: Any, path: Path, category_name: str = "person") -> int:
    """The person category's id by the one rule (``persondet.datasets.person_category_id``); ``categories``
    are msgspec structs or dicts with ``id`` and ``name``."""
    if not isinstance(categories, list):
        raise CocoFormatError(f"{path}: 'categories' is not a list")
    cats = [c if isinstance(c, dict) else {"id": getattr(c, "id", None), "name": getattr(c, "name", None)}
            for c in categories]
    try:
        return person_category(cats, category_name, str(path))
    except PersonCategoryError as exc:  # named as COCO users know them: by name, not by id
        names = sorted(str(c.get("name")) for c in cats)[:10]
        raise CocoFormatError(f"{path}: {exc.problem} {exc.wanted} "
                              f"(categories: {', '.join(names) or 'none'})") from None


def load_instances(path: Path) -> CocoInstances:
    """The file's images, annotations (``bbox`` as raw JSON) and categories; every other field skipped."""
    path = Path(path)
    if not path.is_file():
        raise CocoFormatError(f"{path}: annotation file not found")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CocoFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return _DECODER.decode(data)
    except msgspec.ValidationError as exc:
        raise CocoFormatError(f"{path}: {_validation_message(str(exc), data)}") from None
    except msgspec.DecodeError as exc:
        raise CocoFormatError(f"{path}: {_decode_message(str(exc), data)}") from None
    except RecursionError:
        raise CocoFormatError(f"{path}: not a COCO file (JSON nested too deeply)") from None


# ------------------------------------------------------------------------------------------------ checks
def _index_images(images: list[CocoImage], path: Path) -> dict[int, CocoImage]:
    index = {im.id: im for im in images}
    if len(index) != len(images):
        _check_unique_ids([im.id for im in images], "image", path)
    for im in images:
        safe_relative_path(im.file_name, f"{path}: image {im.id}")
    return index


def _check_unique_ids(ids: list[int], kind: str, path: Path) -> None:
    if len(set(ids)) == len(ids):
        return
    seen: dict[int, int] = {}
    for k, i in enumerate(ids):
        if i in seen:
            raise CocoFormatError(f"{path}: {kind} id {i} appears twice; ids must be unique")
        seen[i] = k


def _refuse_person(ann: CocoAnnotation, image: CocoImage | None, path: Path) -> None:
    if image is None:
        raise CocoFormatError(f"{path}: annotation {ann.id} refers to image_id {ann.image_id}, not listed")
    if image.width <= 0 or image.height <= 0:
        raise CocoFormatError(f"{path}: image {image.id} ({image.file_name!r}) has size "
                              f"{image.width}x{image.height}, not positive")
    raise CocoFormatError(f"{path}: annotation {ann.id} (image {ann.image_id}) has no bbox")


def _person_boxes(persons: list[CocoAnnotation], images: dict[int, CocoImage],
                  path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(n, 4) boxes, decoded in one pass and checked, and (n, 2) sizes of their images."""
    owners = [images.get(a.image_id) for a in persons]
    for ann, image in zip(persons, owners):
        if image is None or image.width <= 0 or image.height <= 0 or len(ann.bbox) == 0:
            _refuse_person(ann, image, path)
    n = len(persons)
    sizes = np.stack([np.fromiter((im.width for im in owners), np.float64, count=n),
                      np.fromiter((im.height for im in owners), np.float64, count=n)], axis=1)
    try:
        decoded = _BOXES.decode(b"[" + b",".join(a.bbox for a in persons) + b"]")
    except (msgspec.ValidationError, msgspec.DecodeError):
        for ann in persons:  # error path: find the first bad box
            try:
                _BOX.decode(ann.bbox)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                raise CocoFormatError(f"{path}: annotation {ann.id} (image {ann.image_id}): bbox "
                                      f"{bytes(ann.bbox)[:60].decode(errors='replace')} is not [x, y, w, h] in "
                                      f"finite numbers ({exc})") from None
        raise
    boxes = np.fromiter(itertools.chain.from_iterable(decoded), np.float64, count=4 * n).reshape(n, 4)
    bad = first_insane(boxes)
    if bad is not None:
        ann = persons[bad]
        raise CocoFormatError(f"{path}: annotation {ann.id} (image {ann.image_id}): bbox {boxes[bad].tolist()} "
                              f"has a value that is not finite or beyond {MAX_COORDINATE:g} pixels")
    return boxes, sizes


# ------------------------------------------------------------------------------------------ error messages
_PATH = re.compile(r"\$\.(images|annotations|categories)\[(\d+)\]")
_NON_FINITE = (b"NaN", b"Infinity")
_NON_FINITE_TOKEN = re.compile(rb"-?(?:NaN|Infinity)")


def _validation_message(message: str, data: bytes) -> str:
    """msgspec's "<what> - at `$.annotations[3].bbox`" as "annotation <id> (<path>): <what>"."""
    what, _, at = message.partition(" - at ")
    at = at.strip("`")
    if not at or at == "$":
        if what.startswith("Expected `object`"):
            return f"not a COCO file (top level: {what[0].lower()}{what[1:]})"
        missing = re.search(r"missing required field `(\w+)`", what)
        if missing:
            return f"not a COCO instances file: no list '{missing.group(1)}'"
        return f"not a COCO instances file: {what}"
    match = _PATH.match(at)
    if not match:
        return f"not a COCO instances file: {what} at {at}"
    section, index = match.group(1), int(match.group(2))
    entry = _entry_id(data, section, index)
    name = f"{_KIND[section]} {entry}" if entry is not None else f"{_KIND[section]} entry {index}"
    return f"{name} ({at}): {what}"


def _entry_id(data: bytes, section: str, index: int) -> Any:
    """The ``id`` of entry ``index`` of a section, from a second, lenient pass (error path only)."""
    try:
        raw = getattr(msgspec.json.decode(data, type=_EntryIds), section)[index]
        entry = msgspec.json.decode(raw, type=_Entry)
        return entry.id if isinstance(entry.id, (int, str)) else None
    except (msgspec.MsgspecError, IndexError, TypeError, RecursionError):
        return None


def _decode_message(message: str, data: bytes) -> str:
    """msgspec's "JSON is malformed: <what> (byte N)" as "malformed JSON at byte N: <what>[, in <entry>]"."""
    if message == "Input data was truncated":
        return f"malformed JSON at byte {len(data)}: the text ends early (truncated file?)"
    found = re.search(r"\(byte (\d+)\)$", message)
    what = re.sub(r"^JSON is malformed: ", "", message[:found.start()] if found else message).strip()
    if not found:
        return f"malformed JSON: {what}"
    pos = int(found.group(1))
    token = next((t for t in _NON_FINITE if data.startswith(t, pos)), None)
    if token is None:
        return f"malformed JSON at byte {pos}: {what}"
    entry = _entry_around(data, pos)
    return (f"malformed JSON at byte {pos}: {'-' if data[pos - 1:pos] == b'-' else ''}{token.decode()} is not a "
            f"JSON number (non-finite values are refused){f', in {entry}' if entry else ''}")


def _entry_around(data: bytes, pos: int, limit: int = 1 << 24) -> str | None:
    """'annotation <id>' or 'image <id>' for the object holding byte ``pos`` (error path only)."""
    end = pos
    for _ in range(3):  # the value may sit in a nested object (an RLE segmentation)
        start = _enclosing_open(data, end, limit)
        if start is None:
            return None
        # non-finite tokens become numbers of the same length, so msgspec's byte offsets stay true
        window = _NON_FINITE_TOKEN.sub(lambda m: b"0." + b"0" * (len(m.group()) - 2), data[start:start + limit])
        try:
            obj = msgspec.json.decode(window)
        except msgspec.DecodeError as exc:  # the object ends just before the "trailing characters"
            stop = re.search(r"trailing characters \(byte (\d+)\)", str(exc))
            try:
                obj = msgspec.json.decode(window[:int(stop.group(1)) - 1]) if stop else None
            except msgspec.DecodeError:
                return None
        if isinstance(obj, dict) and "id" in obj:
            kind = "annotation" if "image_id" in obj else "image" if "file_name" in obj else "entry"
            return f"{kind} {obj['id']}"
        end = start
    return None


def _enclosing_open(data: bytes, pos: int, limit: int) -> int | None:
    """Offset of the ``{`` that opens the object around ``pos`` (braces counted; COCO strings hold none)."""
    depth, i = 0, pos
    while i > max(0, pos - limit):
        opening, closing = data.rfind(b"{", 0, i), data.rfind(b"}", 0, i)
        if opening < 0:
            return None
        if closing > opening:
            depth, i = depth + 1, closing
        elif depth == 0:
            return opening
        else:
            depth, i = depth - 1, opening
    return None
