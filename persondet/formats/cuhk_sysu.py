"""CUHK-SYSU person search annotations (.mat) to COCO person detection.

Two layers: readers that unwrap what ``scipy.io.loadmat`` gives back for MATLAB structs (with the helpers of
``persondet.formats.matlab``: 1-element string arrays, struct arrays, cells; ``idlocate`` as uint8 or uint16
per entry, empty ``idlocate``) into plain Python, and a pure converter (``cuhk_to_coco``) from those plain
structures to a COCO dict.  Every box is cast to float64 before any arithmetic (``x + w`` in uint8 wraps
around), by ``mat_box`` one at a time or, for the plain struct arrays the real files hold, by numpy for a whole
column at once (``read_scenes_mat``, ``identity_index_mat``); anything else goes the per-entry way, so that
both give the same records and the same errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from persondet.datasets import CUHK_SPLITS
from persondet.formats.boxes import MAX_COORDINATE, box_is_sane, clip_boxes, first_insane
from persondet.formats.matlab import (MatFormatError, load_mat, mat_int, mat_str, plain_ints, plain_rows, plain_strings,
                                      struct_columns, struct_field, struct_items)
from persondet.formats.merge import PERSON_CATEGORY, person_annotation

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


# --------------------------------------------------------------------------------------------------- readers
@dataclass
class CuhkBox:
    idlocate: Any  # [x, y, w, h] as stored (uint8/uint16 array, list...); cast by mat_box
    ishard: int = 0


@dataclass
class CuhkImage:
    name: str
    boxes: list[CuhkBox] = field(default_factory=list)


@dataclass(eq=False)
class CuhkScenes:
    """Scene images and their boxes as columns: image k owns the box rows ``first[k]:first[k + 1]``."""
    names: list[str]
    first: np.ndarray  # (images + 1,) int64
    idlocate: np.ndarray  # (boxes, 4) float64, cast from the stored type; 0 in the rows of ``odd``
    ishard: np.ndarray  # (boxes,)
    odd: dict[int, Any] = field(default_factory=dict)  # row -> idlocate as stored, for mat_box to check

    @classmethod
    def of(cls, images: Iterable[CuhkImage]) -> CuhkScenes:
        """The columns of ``CuhkImage`` records: a plain 4-number idlocate is cast here, any other one is
        left to ``checked_boxes``."""
        names, first, rows, hard, odd = [], [0], [], [], {}
        for image in images:
            names.append(image.name)
            for box in image.boxes:
                value = box.idlocate
                if type(value) is np.ndarray and value.size == 4 and value.dtype.kind in "uif":
                    rows.append(value.reshape(4).astype(np.float64))
                else:
                    odd[len(rows)] = value
                    rows.append(np.zeros(4))
                hard.append(box.ishard)
            first.append(len(rows))
        return cls(names, np.array(first, dtype=np.int64), np.array(rows, dtype=np.float64).reshape(-1, 4),
                   np.array(hard, dtype=object), odd)

    def __len__(self) -> int:
        return len(self.names)

    def owner(self) -> np.ndarray:
        """The image index of every box row."""
        return np.repeat(np.arange(len(self.names)), np.diff(self.first))

    def take(self, keep: np.ndarray) -> CuhkScenes:
        """The images where the boolean mask ``keep`` is true, with their boxes."""
        counts = np.diff(self.first)
        rows = np.repeat(keep, counts)
        renumber = np.cumsum(rows) - 1
        return CuhkScenes([n for n, k in zip(self.names, keep.tolist()) if k],
                          np.concatenate([[0], np.cumsum(counts[keep])]).astype(np.int64),
                          self.idlocate[rows], self.ishard[rows],
                          {int(renumber[i]): v for i, v in self.odd.items() if rows[i]})

    def checked_boxes(self, where: Callable[[int], str]) -> np.ndarray:
        """The (boxes, 4) float64 boxes, an empty idlocate as [0, 0, 0, 0] (a dropped box); ``mat_box``
        checks the odd entries in order, then any value that is not finite or absurd stops with the error
        of ``mat_box`` naming the row by ``where(row)``."""
        boxes = self.idlocate
        if self.odd:
            boxes = boxes.copy()
            for i, value in sorted(self.odd.items()):
                box = mat_box(value, where(i))
                boxes[i] = (0.0, 0.0, 0.0, 0.0) if box is None else box
        bad = first_insane(boxes)
        if bad is not None:
            mat_box(boxes[bad], where(bad))  # raises, naming the entry
        return boxes


def read_images_mat(path: str | Path) -> list[CuhkImage]:
    """``Images.mat``: every scene image with every person box, idlocate as stored."""
    return _images(load_mat(path, "Img"), path)


def read_scenes_mat(path: str | Path) -> CuhkScenes:
    """``Images.mat`` as columns: what ``read_images_mat`` reads (and the same errors), without an object per
    box for the struct arrays CUHK-SYSU stores."""
    img = load_mat(path, "Img")
    scenes = _plain_scenes(img)
    return scenes if scenes is not None else CuhkScenes.of(_images(img, path))


def _plain_scenes(img: Any) -> CuhkScenes | None:
    if type(img) is not np.ndarray or img.dtype.names is None or "imname" not in img.dtype.names \
            or "box" not in img.dtype.names:
        return None
    flat = img.reshape(-1)
    names = plain_strings(flat["imname"].tolist())
    columns = struct_columns(flat["box"].tolist(), ("idlocate", "ishard"))
    if names is None or columns is None:
        return None
    counts, (idlocate, ishard) = columns
    boxes = plain_rows(idlocate, 4) if idlocate else np.zeros((0, 4))
    hard = plain_ints(ishard)
    if boxes is None or hard is None:
        return None
    return CuhkScenes(names, np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]), boxes, hard)


def _images(img: Any, path: str | Path) -> list[CuhkImage]:
    """The variable Img of Images.mat, entry by entry."""
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
    return _identities(load_mat(path, key), path, key)


def _identities(table: Any, path: str | Path, key: str) -> list[tuple[str, list[Appearance]]]:
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


def identity_index_mat(path: str | Path, key: str) -> dict[tuple[str, tuple[int, ...]], int]:
    """``identity_index(read_identities_mat(path, key), path)`` (the same index, the same errors), at once for
    the struct arrays ``Person.mat`` and ``Train.mat`` hold: every box a (1, 4) number array, finite."""
    table = load_mat(path, key)
    index = _plain_identity_index(table)
    return index if index is not None else identity_index(_identities(table, path, key), path)


def _plain_identity_index(table: Any) -> dict[tuple[str, tuple[int, ...]], int] | None:
    if type(table) is not np.ndarray or table.dtype.names is None or "idname" not in table.dtype.names \
            or "scene" not in table.dtype.names:
        return None
    flat = table.reshape(-1)
    idnames = plain_strings(flat["idname"].tolist())
    columns = struct_columns(flat["scene"].tolist(), ("imname", "idlocate", "ishard"))
    if idnames is None or columns is None or not columns[1][0]:
        return None
    counts, (imnames, idlocate, ishard) = columns
    imnames, boxes = plain_strings(imnames), plain_rows(idlocate, 4)
    if imnames is None or boxes is None or first_insane(boxes) is not None or plain_ints(ishard) is None:
        return None  # ishard is not used, but the per-entry way reads it
    # Only now: the per-entry way reads every entry before it looks at a name.
    numbers = [number for number, count in zip(map(identity_number, idnames), counts) for _ in range(count)]
    keys = np.rint(boxes).astype(np.int64).tolist()
    return {(imname, tuple(key)): number for imname, key, number in zip(imnames, keys, numbers)}


# ------------------------------------------------------------------------------------------------- converter
def select_split(images: CuhkScenes | Sequence[CuhkImage], pool: set[str] | None,
                 split: str) -> CuhkScenes | list[CuhkImage]:
    """``all``; ``test`` = the images named in pool.mat; ``train`` = all the others."""
    if split not in CUHK_SPLITS:
        raise MatFormatError(f"cuhk_split={split!r} must be one of {', '.join(CUHK_SPLITS)}")
    if split == "all":
        return images if isinstance(images, CuhkScenes) else list(images)
    if pool is None:
        raise MatFormatError(f"cuhk_split={split!r} needs pool.mat")
    if isinstance(images, CuhkScenes):
        return images.take(np.array([(name in pool) == (split == "test") for name in images.names], dtype=bool))
    return [im for im in images if (im.name in pool) == (split == "test")]


def cuhk_to_coco(images: CuhkScenes | Iterable[CuhkImage], sizes: Mapping[str, tuple[int, int]],
                 identities: Mapping[tuple[str, tuple[int, ...]], int] | None = None,
                 image_dir: str = IMAGE_DIR, source: str | Path = "") -> tuple[dict, dict[str, int]]:
    """CUHK-SYSU images and boxes to a COCO dict (one category, person) and counts of what was changed.

    Boxes follow ``formats.boxes``: empty ones dropped (``dropped_boxes``, an empty ``idlocate`` too),
    the others clipped to the image (``clipped_boxes``) or dropped when outside it (``outside_boxes``).
    ``file_name`` is relative to the CUHK-SYSU root.  Images left without boxes are counted and left out.
    Annotations are in the prepared set's form (``merge.person_annotation``).  ``source`` (the file the
    images were read from) starts error messages.
    """
    scenes = images if isinstance(images, CuhkScenes) else CuhkScenes.of(images)
    identities = identities or {}
    prefix = f"{source}: " if source else ""
    names = scenes.names
    for name in names:
        if name not in sizes:
            raise MatFormatError(f"{prefix}no image size for {name}")
    owner = scenes.owner()
    first = scenes.first
    boxes = scenes.checked_boxes(lambda i: f"{prefix}{names[owner[i]]} box {i - first[owner[i]]}")
    image_sizes = np.array([sizes[name] for name in names], dtype=np.float64).reshape(-1, 2)
    clipped, kept, counts = clip_boxes(boxes, image_sizes[owner])  # an empty idlocate is [0, 0, 0, 0]: dropped
    index = np.flatnonzero(kept)
    has_boxes = np.zeros(len(names), dtype=bool)
    has_boxes[owner[index]] = True
    new_ids = np.cumsum(has_boxes)
    if identities:
        box_images = np.array(names, dtype=object)[owner[index]].tolist()
        keys = map(tuple, np.rint(boxes[index]).astype(np.int64).tolist())
        person_ids = list(map(identities.get, zip(box_images, keys), repeat(-1)))
    else:
        person_ids = [-1] * len(index)
    out_annotations = [person_annotation(n, image_id, box, box[2] * box[3], 0, 0, person_id, int(ishard))
                       for n, image_id, box, person_id, ishard in
                       zip(range(1, len(index) + 1), new_ids[owner[index]].tolist(), clipped[index].tolist(),
                           person_ids, scenes.ishard[index].tolist())]
    out_images = [{"id": image_id, "file_name": f"{image_dir}/{name}", "width": int(sizes[name][0]),
                   "height": int(sizes[name][1])}
                  for name, image_id, keep in zip(names, new_ids.tolist(), has_boxes.tolist()) if keep]
    counts = {"boxes_total": len(boxes), **counts, "images_without_persons": len(names) - len(out_images),
              "person_ids": len(person_ids) - person_ids.count(-1)}
    coco = {"images": out_images, "annotations": out_annotations,
            "categories": [dict(PERSON_CATEGORY)]}
    return coco, counts
