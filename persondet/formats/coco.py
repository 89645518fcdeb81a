"""Read the person annotations of a COCO instances file, fast and lean enough for instances_train2017.json.

About 3/4 of a COCO instances file is polygon segmentations, which person detection never uses.  The file
is decoded by ``msgspec`` into typed structs that declare only the fields read here: every other field
(``segmentation``, ``license``, ``coco_url``...) is skipped by the parser without building a Python object,
and ``bbox`` is kept as raw JSON text until it is known to belong to a person (the 260,000 person boxes of
train2017 are then decoded in one call).  Measured for issue 15 on the benchmark's 441 MB train2017-sized
file: msgspec typed decoding 1.8 s / 0.77 GB peak, against ``json`` 18.4 s / 2.9 GB and ``orjson`` 9.4 s /
4.2 GB.  A file of 64 MB or more is decoded in pieces of 16 MB (``formats.json_chunks``), keeping only the
persons of each piece: the whole read then peaks at 0.27 GB instead of 0.73 GB, so the other sources can be
read beside it (docs/BENCHMARKS.md).

Boxes follow ``formats.boxes``: non-finite (``NaN``/``Infinity`` tokens, ``1e999``) or absurd values are
refused, empty boxes dropped, boxes clipped to the image; each change is counted.
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import msgspec
import numpy as np

from persondet.datasets import PersonCategoryError, person_category_id as person_category

from persondet.errors import PersondetError
from persondet.formats.boxes import MAX_COORDINATE, clip_boxes, first_insane
from persondet.formats.json_chunks import SENTINEL, NoFit, decode_member_in_pieces, find_array
from persondet.formats.coco_errors import decode_message, validation_message
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


class _Rest(msgspec.Struct, gc=False):
    """The file with its annotations decoded apart (``json_chunks.SENTINEL`` in their place)."""
    images: list[CocoImage]
    annotations: msgspec.Raw
    categories: list[CocoCategory]


_DECODER = msgspec.json.Decoder(CocoInstances)
_ANNOTATIONS = msgspec.json.Decoder(list[CocoAnnotation])
_CATEGORIES = msgspec.json.Decoder(list[CocoCategory])
_REST = msgspec.json.Decoder(_Rest)
_PEEK = 1 << 16
PIECES_FROM_BYTES = 1 << 26  # a smaller file is decoded whole: little memory to save
_BOX = msgspec.json.Decoder(tuple[float, float, float, float])
_BOXES = msgspec.json.Decoder(list[tuple[float, float, float, float]])


@dataclass
class CocoPersons:
    """The person part of one COCO instances file. Boxes are [x, y, w, h] float pixels."""

    path: Path
    category_id: int  # the person category's id in this file
    images: list[dict]  # images with at least one person annotation (crowd included)
    annotations: list[dict]  # person annotations: id, image_id, bbox, area, iscrowd
    counts: dict[str, int] = field(default_factory=dict)


def _plain_annotation(ann_id: int, image_id: int, bbox: list[float], area: float, iscrowd: int) -> dict:
    return {"id": ann_id, "image_id": image_id, "bbox": bbox, "area": area, "iscrowd": iscrowd}


def read_coco_persons(path: str | Path, category_name: str = "person",
                      annotation: Callable[[int, int, list[float], float, int], dict] = _plain_annotation
                      ) -> CocoPersons:
    """Person annotations (boxes checked, clipped) and the images that hold them; other images counted.
    ``annotation(id, image_id, bbox, area, iscrowd)`` builds each annotation's record (by default a dict of
    those five keys; ``prepare`` builds them in the prepared set's form, ``merge.person_annotation``).

    The file is decoded in pieces (``formats.json_chunks``: memory holds a block of the file, not all of
    it) when its layout allows, else whole; both give the same result, and any fault in the file is
    reported by the whole decoding, which names it precisely.
    """
    path = Path(path)
    rows = None
    with contextlib.suppress(OSError):  # a missing file is reported by the whole decoding
        if path.stat().st_size >= PIECES_FROM_BYTES:
            rows = _person_rows_in_pieces(path, category_name)
    rows = rows or _person_rows(path, category_name)
    boxes, sizes = rows.boxes, rows.sizes
    clipped, kept, counts = clip_boxes(boxes, sizes)
    area = rows.area
    negative = np.flatnonzero(kept & (area < 0))
    if negative.size:
        raise CocoFormatError(f"{path}: annotation {int(rows.ids[negative[0]])} has area {area[negative[0]]}, < 0")
    box_area = clipped[:, 2] * clipped[:, 3]
    clipped_now = kept & (clipped != boxes).any(axis=1)
    area = np.where(np.isnan(area), box_area, np.where(clipped_now, np.minimum(area, box_area), area))
    index = np.flatnonzero(kept)
    crowd = rows.crowd[index]
    annotations = list(map(annotation, rows.ids[index].tolist(), rows.image_ids[index].tolist(),
                           clipped[index].tolist(), area[index].tolist(), crowd.tolist()))
    with_persons = set(rows.image_ids[index].tolist())
    kept_images = [{"id": im.id, "file_name": im.file_name, "width": im.width, "height": im.height}
                   for im in rows.images if im.id in with_persons]
    counts = {"images_total": len(rows.images), "images_without_persons": len(rows.images) - len(kept_images),
              "annotations_total": rows.n_annotations, **counts, "crowd_regions": int(crowd.sum())}
    return CocoPersons(path=path, category_id=rows.category_id, images=kept_images, annotations=annotations,
                       counts=counts)


@dataclass
class _PersonRows:
    """The person annotations of a file as columns (file order), before clipping."""

    category_id: int
    images: list[CocoImage]
    n_annotations: int
    ids: np.ndarray  # int64
    image_ids: np.ndarray  # int64
    crowd: np.ndarray  # int64, 0 or 1
    area: np.ndarray  # float64, NaN where the file gives none
    boxes: np.ndarray  # (n, 4) float64 as in the file
    sizes: np.ndarray  # (n, 2) float64: width, height of each annotation's image


def _person_rows(path: Path, category_name: str) -> _PersonRows:
    """The whole file decoded at once; every fault raised with the entry it is in."""
    data = load_instances(path)
    category_id = person_category_id(data.categories, path, category_name)
    images = _index_images(data.images, path)
    persons = [a for a in data.annotations if a.category_id == category_id]
    _check_unique_ids([a.id for a in persons], "annotation", path)  # the others are not read
    boxes, sizes = _person_boxes(persons, images, path)
    return _PersonRows(category_id, data.images, len(data.annotations), *_columns(persons), boxes, sizes)


def _columns(persons: list[CocoAnnotation]) -> tuple[np.ndarray, ...]:
    """ids, image_ids, crowd (0/1), area (None -> NaN) of annotations."""
    n = len(persons)
    return (np.fromiter((a.id for a in persons), np.int64, count=n),
            np.fromiter((a.image_id for a in persons), np.int64, count=n),
            np.fromiter((1 if a.iscrowd else 0 for a in persons), np.int64, count=n),
            np.array([a.area for a in persons], dtype=np.float64).reshape(n))


def _decode_boxes(persons: list[CocoAnnotation]) -> np.ndarray:
    """(n, 4) float64 boxes from the raw ``bbox`` JSON of the annotations, decoded in one call; msgspec's
    error when one is not [x, y, w, h] in numbers."""
    n = len(persons)
    decoded = _BOXES.decode(b"[" + b",".join(a.bbox for a in persons) + b"]")
    return np.fromiter(itertools.chain.from_iterable(decoded), np.float64, count=4 * n).reshape(n, 4)


def _person_rows_in_pieces(path: Path, category_name: str) -> _PersonRows | None:
    """The file decoded in pieces (``formats.json_chunks``); None when its layout does not allow it or it
    has a fault (the whole decoding then reports it)."""
    category_id = _guess_person_category(path, category_name)
    if category_id is None:
        return None
    pieces, n_annotations = [], 0

    def take(annotations: list[CocoAnnotation]) -> None:
        nonlocal n_annotations
        n_annotations += len(annotations)
        persons = [a for a in annotations if a.category_id == category_id]
        if any(len(a.bbox) == 0 for a in persons):
            raise NoFit  # a person without a bbox: the whole decoding names it
        try:
            boxes = _decode_boxes(persons)
        except msgspec.MsgspecError:
            raise NoFit from None
        pieces.append((*_columns(persons), boxes))

    rest = decode_member_in_pieces(path, "annotations", _ANNOTATIONS, take)
    if rest is None:
        return None
    try:
        top = _REST.decode(rest)
        if bytes(top.annotations) != SENTINEL or person_category_id(top.categories, path,
                                                                     category_name) != category_id:
            return None
    except (msgspec.MsgspecError, PersondetError):
        return None
    _index_images(top.images, path)  # checks ids and file names (raises as the whole decoding would)
    if not pieces:
        return None
    ids, image_ids, crowd, area, boxes = (np.concatenate([p[k] for p in pieces]) for k in range(5))
    ordered = np.sort(ids)
    if (ordered[1:] == ordered[:-1]).any() or first_insane(boxes) is not None:
        return None
    sizes = _image_sizes_of(image_ids, top.images)
    if sizes is None:
        return None
    return _PersonRows(category_id, top.images, n_annotations, ids, image_ids, crowd, area, boxes, sizes)


def _guess_person_category(path: Path, category_name: str) -> int | None:
    """The person category id from the ``categories`` near the end of the file (where COCO writes them) or
    near its start; None when not found there.  Confirmed once the whole file is decoded."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            for offset in (max(0, size - _PEEK), 0):
                f.seek(offset)
                categories = find_array(f.read(_PEEK), "categories", _CATEGORIES, last=offset > 0)
                if categories is not None:
                    return person_category_id(categories, path, category_name)
    except (OSError, PersondetError):
        return None
    return None


def _image_sizes_of(image_ids: np.ndarray, images: list[CocoImage]) -> np.ndarray | None:
    """(n, 2) width, height of the image of each annotation; None when one is not listed or not positive."""
    n = len(images)
    ids = np.fromiter((im.id for im in images), np.int64, count=n)
    wh = np.stack([np.fromiter((im.width for im in images), np.float64, count=n),
                   np.fromiter((im.height for im in images), np.float64, count=n)], axis=1)
    order = np.argsort(ids, kind="stable")
    at = np.searchsorted(ids[order], image_ids)
    if n == 0 or (at >= n).any():
        return None
    at = order[at]
    if (ids[at] != image_ids).any():
        return None
    sizes = wh[at]
    return sizes if (sizes > 0).all() else None


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
        raise CocoFormatError(f"{path}: {validation_message(str(exc), data)}") from None
    except msgspec.DecodeError as exc:
        raise CocoFormatError(f"{path}: {decode_message(str(exc), data)}") from None
    except RecursionError:
        raise CocoFormatError(f"{path}: not a COCO file (JSON nested too deeply)") from None


# ------------------------------------------------------------------------------------------------ checks
def _index_images(images: list[CocoImage], path: Path) -> dict[int, CocoImage]:
    index = {im.id: im for im in images}
    if len(index) != len(images):
        _check_unique_ids([im.id for im in images], "image", path)
    for im in images:
        safe_relative_path(im.file_name, lambda: f"{path}: image {im.id}")
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
        boxes = _decode_boxes(persons)
    except (msgspec.ValidationError, msgspec.DecodeError):
        for ann in persons:  # error path: find the first bad box
            try:
                _BOX.decode(ann.bbox)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                raise CocoFormatError(f"{path}: annotation {ann.id} (image {ann.image_id}): bbox "
                                      f"{bytes(ann.bbox)[:60].decode(errors='replace')} is not [x, y, w, h] in "
                                      f"finite numbers ({exc})") from None
        raise
    bad = first_insane(boxes)
    if bad is not None:
        ann = persons[bad]
        raise CocoFormatError(f"{path}: annotation {ann.id} (image {ann.image_id}): bbox {boxes[bad].tolist()} "
                              f"has a value that is not finite or beyond {MAX_COORDINATE:g} pixels")
    return boxes, sizes
