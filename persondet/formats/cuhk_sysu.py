"""CUHK-SYSU person search annotations (.mat) to COCO person detection.

Two layers: readers that unwrap what ``scipy.io.loadmat`` gives back for MATLAB structs (1-element string
arrays, struct arrays, cells, ``idlocate`` as uint8 or uint16 per entry, empty ``idlocate``) into plain
Python, and a pure converter (``cuhk_to_coco``) from those plain structures to a COCO dict.  Every box goes
through ``mat_box``, which casts to float64 before any arithmetic: ``x + w`` in uint8 wraps around.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from persondet.datasets import CUHK_SPLITS
from persondet.errors import PersondetError
from persondet.formats.merge import PERSON_CATEGORY

IMAGE_DIR = "Image/SSM"
ANNOTATION_DIR = "annotation"


class MatFormatError(PersondetError):
    """A .mat file that is missing, unreadable, or lacks the expected keys or fields."""


# ----------------------------------------------------------------------------------------------- .mat helpers
def load_mat(path: str | Path, key: str) -> np.ndarray:
    """The variable ``key`` of a MATLAB file, with a one-line error for every way this can fail."""
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise MatFormatError(f"{path}: annotation file not found")
    try:
        content = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises ValueError, MatReadError, OSError, zlib/struct errors...
        detail = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise MatFormatError(f"{path}: not a readable MATLAB .mat file ({detail})") from None
    if key not in content:
        found = sorted(k for k in content if not k.startswith("__"))
        raise MatFormatError(f"{path}: no variable {key!r} (found: {', '.join(found) or 'none'})")
    return content[key]


def mat_str(value: Any, where: str) -> str:
    """A MATLAB string as scipy returns it (array(['s1.jpg']) or a cell around one) as str."""
    if type(value) is np.ndarray and value.dtype.kind == "U" and value.size == 1:  # the common case, fast
        return value.item()
    while isinstance(value, np.ndarray):
        if value.size != 1:
            raise MatFormatError(f"{where}: expected one string, found an array of shape {value.shape}")
        value = value.reshape(-1)[0]
    if isinstance(value, (str, np.str_)):
        return str(value)
    raise MatFormatError(f"{where}: expected a string, found {type(value).__name__}")


def mat_box(value: Any, where: str) -> tuple[float, float, float, float] | None:
    """``idlocate`` [x, y, w, h] as float64 (cast first: uint8/uint16 overflow); None when empty."""
    try:
        array = np.asarray(value)
        if array.size == 0:
            return None
        array = array.astype(np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise MatFormatError(f"{where}: idlocate is not numeric ({type(value).__name__})") from None
    if array.size != 4:
        raise MatFormatError(f"{where}: idlocate has {array.size} values, expected [x, y, w, h]")
    return float(array[0]), float(array[1]), float(array[2]), float(array[3])


def mat_int(value: Any, where: str, default: int = 0) -> int:
    if type(value) is np.ndarray and value.size == 1 and value.dtype.kind in "uif":
        return int(value.reshape(-1)[0])
    array = np.asarray(value)
    if array.size == 0:
        return default
    if array.size != 1:
        raise MatFormatError(f"{where}: expected one number, found shape {array.shape}")
    return int(array.astype(np.int64).reshape(-1)[0])


def struct_field(struct: Any, name: str, where: str) -> Any:
    """Field ``name`` of a MATLAB struct (np.void or a 1-element struct array)."""
    if type(struct) is np.void and name in struct.dtype.names:  # the common case, fast
        return struct[name]
    if isinstance(struct, np.ndarray) and struct.dtype.names is None and struct.size == 1:
        struct = struct.reshape(-1)[0]  # a cell around a struct
    names = getattr(getattr(struct, "dtype", None), "names", None)
    if not names:
        raise MatFormatError(f"{where}: expected a MATLAB struct, found {type(struct).__name__}")
    if name not in names:
        raise MatFormatError(f"{where}: struct has no field {name!r} (fields: {', '.join(names)})")
    value = struct[name]
    if isinstance(value, np.ndarray) and value.dtype == object and value.size == 1 and value.ndim > 0 \
            and getattr(struct, "ndim", 0) > 0:
        value = value.reshape(-1)[0]  # field of a 1x1 struct array
    return value


def struct_items(array: Any, where: str) -> Iterator[Any]:
    """The elements of a struct array (or of a cell array of structs), in order."""
    if not isinstance(array, np.ndarray):
        raise MatFormatError(f"{where}: expected an array of structs, found {type(array).__name__}")
    for item in array.reshape(-1):
        if isinstance(item, np.ndarray) and item.dtype.names is None and item.size == 1:
            item = item.reshape(-1)[0]  # cell element
        if isinstance(item, np.ndarray) and item.dtype.names is not None and item.size == 1:
            item = item.reshape(-1)[0]
        yield item


# --------------------------------------------------------------------------------------------------- readers
@dataclass
class CuhkBox:
    idlocate: Any  # [x, y, w, h] as stored (uint8/uint16 array, list...); cast by mat_box
    ishard: int = 0


@dataclass
class CuhkImage:
    name: str
    boxes: list[CuhkBox] = field(default_factory=list)


def read_images_mat(path: str | Path) -> list[CuhkImage]:
    """``Images.mat``: every scene image with every person box."""
    img = load_mat(path, "Img")
    images = []
    for k, entry in enumerate(struct_items(img, f"{path}: Img")):
        where = f"{path}: Img[{k}]"
        name = mat_str(struct_field(entry, "imname", where), f"{where}.imname")
        boxes = struct_field(entry, "box", where)
        items = []
        if np.asarray(boxes).size:
            for j, box in enumerate(struct_items(boxes, f"{where}.box")):
                bw = f"{where} ({name}).box[{j}]"
                items.append(CuhkBox(struct_field(box, "idlocate", bw),
                                     mat_int(struct_field(box, "ishard", bw), f"{bw}.ishard")))
        images.append(CuhkImage(name, items))
    return images


def read_pool_mat(path: str | Path) -> set[str]:
    """``pool.mat``: the names of the test-gallery images."""
    pool = load_mat(path, "pool")
    return {mat_str(v, f"{path}: pool[{k}]") for k, v in enumerate(np.asarray(pool, dtype=object).reshape(-1))}


@dataclass
class Appearance:
    imname: str
    idlocate: Any
    ishard: int = 0


def read_query_gallery(path: str | Path, key: str) -> list[tuple[str, Appearance, list[Appearance]]]:
    """A test protocol file (``TestG50.mat``... key ``TestG50``): (idname, query, gallery) per query.

    Gallery entries whose ``idlocate`` is empty (the person is not in that image) are kept, as read.
    """
    table = load_mat(path, key)
    out = []
    for k, entry in enumerate(struct_items(table, f"{path}: {key}")):
        where = f"{path}: {key}[{k}]"
        query = next(struct_items(np.atleast_1d(struct_field(entry, "Query", where)), f"{where}.Query"))
        idname = mat_str(struct_field(query, "idname", f"{where}.Query"), f"{where}.Query.idname")
        gallery_where = f"{where}.Gallery"
        gallery = [_appearance(g, gallery_where)
                   for g in struct_items(struct_field(entry, "Gallery", where), gallery_where)]
        out.append((idname, _appearance(query, f"{where}.Query"), gallery))
    return out


def read_identities_mat(path: str | Path, key: str) -> list[tuple[str, list[Appearance]]]:
    """``Person.mat`` (key ``Person``) or ``Train.mat`` (key ``Train``): (idname, appearances) per identity."""
    table = load_mat(path, key)
    out = []
    for k, entry in enumerate(struct_items(table, f"{path}: {key}")):
        where = f"{path}: {key}[{k}]"
        idname = mat_str(struct_field(entry, "idname", where), f"{where}.idname")
        scenes = struct_field(entry, "scene", where)
        out.append((idname, [_appearance(s, f"{where}.scene[{j}]")
                             for j, s in enumerate(struct_items(scenes, f"{where}.scene"))]))
    return out


def _appearance(struct: Any, where: str) -> Appearance:
    ishard = struct_field(struct, "ishard", where) if "ishard" in struct.dtype.names else 0
    return Appearance(mat_str(struct_field(struct, "imname", where), where),
                      struct_field(struct, "idlocate", where), mat_int(ishard, where))


def identity_number(idname: str) -> int:
    """'p10581' -> 10581 (the CUHK-SYSU identity naming)."""
    match = re.fullmatch(r"\D*(\d+)", idname.strip())
    if not match:
        raise MatFormatError(f"identity name {idname!r} is not of the form p<number>")
    return int(match.group(1))


def _box_key(xywh: Sequence[float]) -> tuple[int, ...]:
    """The integer box that ties a scene box to an identity's appearance."""
    return tuple(int(round(v)) for v in xywh)


def identity_index(groups: Iterable[tuple[str, Sequence[Appearance]]]) -> dict[tuple[str, tuple[int, ...]], int]:
    """(image name, integer box) -> identity number, from (idname, appearances) groups."""
    index: dict[tuple[str, tuple[int, ...]], int] = {}
    for idname, appearances in groups:
        number = identity_number(idname)
        for app in appearances:
            box = mat_box(app.idlocate, f"{idname} in {app.imname}")
            if box is not None:
                index[(app.imname, _box_key(box))] = number
    return index


# ------------------------------------------------------------------------------------------------- converter
def select_split(images: Sequence[CuhkImage], pool: set[str] | None, split: str) -> list[CuhkImage]:
    """``all``; ``test`` = the images named in pool.mat; ``train`` = all the others."""
    if split not in CUHK_SPLITS:
        raise MatFormatError(f"cuhk_split={split!r} must be one of {', '.join(CUHK_SPLITS)}")
    if split == "all":
        return list(images)
    if pool is None:
        raise MatFormatError(f"cuhk_split={split!r} needs pool.mat")
    return [im for im in images if (im.name in pool) == (split == "test")]


def cuhk_to_coco(images: Iterable[CuhkImage], sizes: Mapping[str, tuple[int, int]],
                 identities: Mapping[tuple[str, tuple[int, ...]], int] | None = None,
                 image_dir: str = IMAGE_DIR) -> tuple[dict, dict[str, int]]:
    """CUHK-SYSU images and boxes to a COCO dict (one category, person) and counts of what was changed.

    Boxes with w <= 0 or h <= 0 are dropped (``dropped_boxes``); boxes are clipped to the image
    (``clipped_boxes``) and dropped when nothing is left (``outside_boxes``).  ``file_name`` is relative
    to the CUHK-SYSU root.  Images left without boxes are counted and left out.
    """
    identities = identities or {}
    out_images, out_annotations = [], []
    counts = {"boxes_total": 0, "dropped_boxes": 0, "clipped_boxes": 0, "outside_boxes": 0,
              "images_without_persons": 0, "person_ids": 0}
    for image in images:
        if image.name not in sizes:
            raise MatFormatError(f"no image size for {image.name}")
        width, height = sizes[image.name]
        image_id = len(out_images) + 1
        kept = []
        for j, box in enumerate(image.boxes):
            counts["boxes_total"] += 1
            xywh = mat_box(box.idlocate, f"{image.name} box {j}")
            if xywh is None or xywh[2] <= 0 or xywh[3] <= 0:
                counts["dropped_boxes"] += 1
                continue
            x, y, w, h = xywh
            x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + w, float(width)), min(y + h, float(height))
            if x2 <= x1 or y2 <= y1:
                counts["outside_boxes"] += 1
                continue
            if (x1, y1, x2, y2) != (x, y, x + w, y + h):
                counts["clipped_boxes"] += 1
            person_id = identities.get((image.name, _box_key(xywh)), -1)
            counts["person_ids"] += person_id != -1
            kept.append({"id": len(out_annotations) + len(kept) + 1, "image_id": image_id,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                         "iscrowd": 0, "person_id": person_id, "ishard": int(box.ishard)})
        if not kept:
            counts["images_without_persons"] += 1
            continue
        out_images.append({"id": image_id, "file_name": f"{image_dir}/{image.name}",
                           "width": int(width), "height": int(height)})
        out_annotations.extend(kept)
    coco = {"images": out_images, "annotations": out_annotations,
            "categories": [dict(PERSON_CATEGORY)]}
    return coco, counts
