"""CUHK-SYSU person search annotations (.mat) to COCO person detection.

Two layers: readers that unwrap what ``scipy.io.loadmat`` gives back for MATLAB structs (with the helpers of
``persondet.formats.matlab``: 1-element string arrays, struct arrays, cells; ``idlocate`` as uint8 or uint16
per entry, empty ``idlocate``) into plain Python, and a pure converter (``cuhk_to_coco``) from those plain
structures to a COCO dict.  Every box goes through ``mat_box``, which casts to float64 before any
arithmetic: ``x + w`` in uint8 wraps around.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from persondet.datasets import CUHK_SPLITS
from persondet.formats.boxes import MAX_COORDINATE, box_is_sane, clip_boxes, first_insane
from persondet.formats.matlab import MatFormatError, load_mat, mat_int, mat_str, struct_field, struct_items
from persondet.formats.merge import PERSON_CATEGORY

IMAGE_DIR = "Image/SSM"
ANNOTATION_DIR = "annotation"


# ------------------------------------------------------------------------------------------------ idlocate
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
    box = float(array[0]), float(array[1]), float(array[2]), float(array[3])
    if not box_is_sane(*box):
        raise MatFormatError(f"{where}: idlocate {list(box)} has a value that is not finite or beyond "
                             f"{MAX_COORDINATE:g} pixels")
    return box


def mat_boxes(values: Sequence[Any], where: Callable[[int], str]) -> np.ndarray:
    """Many ``idlocate`` values as one (n, 4) float64 array; an empty one becomes [0, 0, 0, 0] (a dropped box).

    ``where(i)`` names entry i in the error of ``mat_box``, which checks every value that is not a plain
    4-number array, and any value that is not finite or absurd.
    """
    rows = []
    for i, value in enumerate(values):
        if type(value) is np.ndarray and value.size == 4 and value.dtype.kind in "uif":  # the common case
            rows.append(value.reshape(1, 4))
        else:
            box = mat_box(value, where(i))
            rows.append(np.zeros((1, 4)) if box is None else np.array([box]))
    boxes = np.concatenate(rows).astype(np.float64) if rows else np.zeros((0, 4))
    bad = first_insane(boxes)
    if bad is not None:
        mat_box(values[bad], where(bad))  # raises, naming the entry
    return boxes


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
        if _plain_boxes(boxes):  # the common case, without a call per box
            items = [CuhkBox(loc, int(hard.item()) if type(hard) is np.ndarray and hard.size == 1
                             and hard.dtype.kind in "uif" else mat_int(hard, f"{where} ({name}).box.ishard"))
                     for loc, hard in zip(boxes["idlocate"].reshape(-1), boxes["ishard"].reshape(-1))]
        elif np.asarray(boxes).size:
            for j, box in enumerate(struct_items(boxes, f"{where}.box")):
                bw = f"{where} ({name}).box[{j}]"
                items.append(CuhkBox(struct_field(box, "idlocate", bw),
                                     mat_int(struct_field(box, "ishard", bw), f"{bw}.ishard")))
        images.append(CuhkImage(name, items))
    return images


def _plain_boxes(boxes: Any) -> bool:
    """A struct array of boxes whose fields are idlocate and ishard, as Images.mat stores them."""
    return type(boxes) is np.ndarray and boxes.dtype.names is not None and boxes.size > 0 \
        and "idlocate" in boxes.dtype.names and "ishard" in boxes.dtype.names


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


def _first_box(owner: np.ndarray, i: int) -> int:
    """Index of the first box of the image that owns box i (for messages: 'box j' counts within the image)."""
    return int(np.searchsorted(owner, owner[i]))


def _box_key(xywh: Sequence[float]) -> tuple[int, ...]:
    """The integer box that ties a scene box to an identity's appearance."""
    return tuple(int(round(v)) for v in xywh)


def identity_index(groups: Iterable[tuple[str, Sequence[Appearance]]],
                   source: str | Path = "") -> dict[tuple[str, tuple[int, ...]], int]:
    """(image name, integer box) -> identity number, from (idname, appearances) groups read from ``source``."""
    index: dict[tuple[str, tuple[int, ...]], int] = {}
    prefix = f"{source}: " if source else ""
    for idname, appearances in groups:
        number = identity_number(idname)
        for app in appearances:
            box = mat_box(app.idlocate, f"{prefix}{idname} in {app.imname}")
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
                 image_dir: str = IMAGE_DIR, source: str | Path = "") -> tuple[dict, dict[str, int]]:
    """CUHK-SYSU images and boxes to a COCO dict (one category, person) and counts of what was changed.

    Boxes follow ``formats.boxes``: empty ones dropped (``dropped_boxes``, an empty ``idlocate`` too),
    the others clipped to the image (``clipped_boxes``) or dropped when outside it (``outside_boxes``).  ``file_name`` is relative
    to the CUHK-SYSU root.  Images left without boxes are counted and left out.  ``source`` (the file the
    images were read from) starts error messages.
    """
    identities = identities or {}
    prefix = f"{source}: " if source else ""
    images = list(images)
    for image in images:
        if image.name not in sizes:
            raise MatFormatError(f"{prefix}no image size for {image.name}")
    owner = np.array([k for k, image in enumerate(images) for _ in image.boxes], dtype=np.int64)
    flat = [box for image in images for box in image.boxes]
    boxes = mat_boxes([box.idlocate for box in flat],
                      lambda i: f"{prefix}{images[owner[i]].name} box {i - _first_box(owner, i)}")
    image_sizes = np.array([sizes[image.name] for image in images], dtype=np.float64).reshape(-1, 2)
    clipped, kept, counts = clip_boxes(boxes, image_sizes[owner])  # an empty idlocate is [0, 0, 0, 0]: dropped
    index = np.flatnonzero(kept)
    has_boxes = np.zeros(len(images), dtype=bool)
    has_boxes[owner[index]] = True
    new_ids = np.cumsum(has_boxes).tolist()
    keys = np.rint(boxes[index]).astype(np.int64).tolist() if identities else [()] * len(index)
    out_annotations = []
    for n, (i, box, key) in enumerate(zip(index.tolist(), clipped[index].tolist(), keys), start=1):
        person_id = identities.get((images[owner[i]].name, tuple(key)), -1) if identities else -1
        out_annotations.append({"id": n, "image_id": new_ids[owner[i]], "bbox": box, "area": box[2] * box[3],
                                "iscrowd": 0, "person_id": person_id, "ishard": int(flat[i].ishard)})
    out_images = [{"id": new_ids[k], "file_name": f"{image_dir}/{image.name}", "width": int(sizes[image.name][0]),
                   "height": int(sizes[image.name][1])} for k, image in enumerate(images) if has_boxes[k]]
    counts = {"boxes_total": len(flat), **counts, "images_without_persons": len(images) - len(out_images),
              "person_ids": sum(a["person_id"] != -1 for a in out_annotations)}
    coco = {"images": out_images, "annotations": out_annotations,
            "categories": [dict(PERSON_CATEGORY)]}
    return coco, counts
