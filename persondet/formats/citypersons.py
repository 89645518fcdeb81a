"""CityPersons (``annotations/anno_{train,val}.mat``, images ``leftImg8bit/<split>/<city>/<im_name>``) to records.

The file (cvgroup-njust/CityPersons, ``annotations/README.txt``; Zhang, Benenson, Schiele, "CityPersons: A
Diverse Dataset for Pedestrian Detection", CVPR 2017) holds one variable ``anno_<split>_aligned``: a 1 x N cell
array of 1 x 1 structs with ``cityname``, ``im_name`` and ``bbs``, an n x 10 array of
``[class_label, x1, y1, w, h, instance_id, x1_vis, y1_vis, w_vis, h_vis]``.  MATLAB stored ``bbs`` as doubles
in the smallest integer type that holds each image's values, so scipy returns uint8, uint16 or int16 (boxes
starting left of the image) per image: every array is cast to float64 before any arithmetic.

Two pure steps: ``read_annotations`` (the .mat -> checked ``CityImage`` list) and ``to_records`` (plus image
sizes -> image and annotation records); ``read_citypersons`` joins them with the image headers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from persondet.datasets import CITYPERSONS_SPLITS, CITYPERSONS_SUBSETS
from persondet.errors import PersondetError
from persondet.formats.imagefiles import image_sizes
from persondet.formats.matlab import MatFormatError, check_mat_variable, load_mat, mat_str, struct_field, struct_items
from persondet.formats.merge import SourceSet

NAME = "citypersons"
SPLITS = CITYPERSONS_SPLITS
SUBSETS = CITYPERSONS_SUBSETS
ANNOTATION_DIR = "annotations"
IMAGE_DIR = "leftImg8bit"
CLASS_NAMES = ("ignore", "pedestrian", "rider", "sitting", "other", "group")  # class_label 0..5
# The benchmark's "reasonable" setting: pedestrians at least 50 px tall and at least 65 % visible.
REASONABLE_MIN_HEIGHT = 50.0
REASONABLE_MIN_VISIBILITY = 0.65
_COLUMNS = "[class_label, x1, y1, w, h, instance_id, x1_vis, y1_vis, w_vis, h_vis]"


@dataclass
class CityImage:
    index: int  # position in the cell array, from 0
    city: str
    name: str  # im_name
    file_name: str  # leftImg8bit/<split>/<city>/<im_name>, relative to the CityPersons root
    bbs: np.ndarray  # (n, 10) float64, cast from the stored dtype; checked: labels 0-5, sizes finite, >= 0
    stored_dtype: str  # what scipy returned: uint8, uint16, int16...


def annotation_path(root: str | Path, split: str) -> Path:
    return Path(root) / ANNOTATION_DIR / f"anno_{split}.mat"


def read_annotations(path: str | Path, split: str = "train") -> list[CityImage]:
    """Every image of ``anno_<split>.mat`` with its boxes; a bad box is one error naming the image and row."""
    _check_choice("citypersons_split", split, SPLITS)
    key = f"anno_{split}_aligned"
    cells = load_mat(path, key)
    images = []
    for k, entry in enumerate(struct_items(cells, f"{path}: {key}")):
        where = f"{path}: {key}[{k}]"
        city = mat_str(struct_field(entry, "cityname", where), f"{where}.cityname")
        name = mat_str(struct_field(entry, "im_name", where), f"{where}.im_name")
        raw = np.asarray(struct_field(entry, "bbs", where))
        images.append(CityImage(k, city, name, f"{IMAGE_DIR}/{split}/{city}/{name}",
                                _cast(raw, f"{path}: image {k} ({name})"), str(raw.dtype)))
    _check_boxes(images, path)
    return images


def _cast(raw: np.ndarray, where: str) -> np.ndarray:
    if raw.size == 0:
        return np.zeros((0, 10))
    if raw.dtype.kind not in "uif":
        raise MatFormatError(f"{where}: bbs is not numeric ({raw.dtype})")
    if raw.ndim != 2 or raw.shape[1] != 10:
        raise MatFormatError(f"{where}: bbs has shape {raw.shape}, expected n x 10 {_COLUMNS}")
    return raw.astype(np.float64)  # before any arithmetic: uint8/uint16 sums wrap around


def _check_boxes(images: Sequence[CityImage], path) -> None:
    """Labels 0-5, finite values, no negative size: else one error naming the first bad box."""
    bbs, owner = _stack(images)
    finite = np.isfinite(bbs).all(axis=1)
    known = np.isin(bbs[:, 0], np.arange(len(CLASS_NAMES)))
    sized = (bbs[:, [3, 4, 8, 9]] >= 0).all(axis=1)
    good = finite & known & sized
    if good.all():
        return
    first = int(np.argmin(good))
    image = images[owner[first]]
    j = first - int(np.searchsorted(owner, owner[first]))
    row, where = bbs[first].tolist(), f"{path}: image {image.index} ({image.name}): box {j}"
    if not finite[first]:
        raise MatFormatError(f"{where} is not a number: {_show(row)}")
    if not known[first]:
        raise MatFormatError(f"{where}: unknown class label {row[0]:g} (CityPersons labels: "
                             + ", ".join(f"{k} {n}" for k, n in enumerate(CLASS_NAMES)) + ")")
    raise MatFormatError(f"{where} has a negative width or height: {_show(row)} {_COLUMNS}")


def _stack(images: Sequence[CityImage]) -> tuple[np.ndarray, np.ndarray]:
    """All boxes in one (N, 10) array and the index of the image holding each."""
    lengths = [len(image.bbs) for image in images]
    bbs = np.concatenate([image.bbs for image in images]) if images else np.zeros((0, 10))
    return bbs, np.repeat(np.arange(len(images)), lengths)


def to_records(images: Sequence[CityImage], sizes: Mapping[str, tuple[int, int]],
               subset: str = "all") -> tuple[list[dict], list[dict], dict[str, int]]:
    """(images, annotations, counts): boxes clipped to the image, images without a person left out.

    ``subset="all"``: labels 1-4 are person boxes (the full-body box), 5 a crowd region (``iscrowd: 1``),
    0 an ignore region (``ignore: 1``).  ``subset="reasonable"``: only pedestrians (1) at least 50 px tall
    and 65 % visible are person boxes, every other box is an ignore region.  An image is kept when it has
    a person box or a crowd region (as for COCO); image ids are the 1-based position in the file.
    Counts: ``class_<label>_<name>`` and ``boxes_total`` over the file; ``dropped_boxes`` (w or h = 0),
    ``outside_boxes`` (nothing left after clipping), ``clipped_boxes``; ``person_boxes``,
    ``crowd_regions``, ``ignore_regions`` and ``persons_ignored`` (labels 1-5 made ignore regions by
    the subset) over the images kept.
    """
    _check_choice("citypersons_subset", subset, SUBSETS)
    missing = [image.file_name for image in images if image.file_name not in sizes]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise MatFormatError(f"no image size for {missing[0]}{more}")
    bbs, owner = _stack(images)
    size = np.array([sizes[image.file_name] for image in images], dtype=np.float64).reshape(-1, 2)[owner]
    label, x, y, w, h, instance_id = bbs[:, :6].T
    x1, y1 = np.maximum(x, 0.0), np.maximum(y, 0.0)
    x2, y2 = np.minimum(x + w, size[:, 0]), np.minimum(y + h, size[:, 1])
    empty = (w == 0) | (h == 0)
    outside = ~empty & ((x2 <= x1) | (y2 <= y1))
    keep = ~empty & ~outside
    visibility = np.divide(bbs[:, 8] * bbs[:, 9], w * h, out=np.zeros(len(bbs)), where=~empty)
    if subset == "reasonable":
        person = (label == 1) & (h >= REASONABLE_MIN_HEIGHT) & (visibility >= REASONABLE_MIN_VISIBILITY)
        crowd, ignore = np.zeros(len(bbs), bool), ~person
    else:
        crowd, ignore = label == 5, label == 0
    with_person = np.bincount(owner[keep & ~ignore], minlength=len(images)) > 0
    keep &= with_person[owner]

    clipped = ~empty & ~outside & ((x1 != x) | (y1 != y) | (x2 != x + w) | (y2 != y + h))
    counts = {"images_total": len(images), "images_without_persons": int((~with_person).sum()),
              "boxes_total": len(bbs), "person_boxes": int((keep & ~crowd & ~ignore).sum()),
              "crowd_regions": int((keep & crowd).sum()), "ignore_regions": int((keep & ignore).sum()),
              "persons_ignored": int((keep & ignore & (label != 0)).sum()), "dropped_boxes": int(empty.sum()),
              "clipped_boxes": int(clipped.sum()), "outside_boxes": int(outside.sum())}
    labels = np.bincount(label.astype(np.int64), minlength=len(CLASS_NAMES))
    counts.update({_class_key(k): int(n) for k, n in enumerate(labels.tolist())})

    out_images = [{"id": image.index + 1, "file_name": image.file_name, "width": int(sizes[image.file_name][0]),
                   "height": int(sizes[image.file_name][1]), "original_file_name": image.name}
                  for image, kept in zip(images, with_person.tolist()) if kept]
    image_ids = np.array([image.index + 1 for image in images], dtype=np.int64)[owner]
    columns = (image_ids, x1, y1, x2 - x1, y2 - y1, crowd, ignore, label.astype(np.int64),
               instance_id.astype(np.int64), np.round(visibility, 4))
    rows = zip(*(c[keep].tolist() for c in columns))
    annotations = [{"id": k, "image_id": i, "bbox": [bx, by, bw, bh], "area": bw * bh, "iscrowd": int(c),
                    "ignore": int(g), "class_label": lab, "instance_id": inst, "vis_ratio": vis}
                   for k, (i, bx, by, bw, bh, c, g, lab, inst, vis) in enumerate(rows, start=1)]
    return out_images, annotations, counts


def read_citypersons(root: str | Path, split: str = "train",
                     subset: str = "all") -> tuple[SourceSet, dict[str, int]]:
    """A CityPersons root (``annotations/``, ``leftImg8bit/``) -> (source ``citypersons``, counts).

    Every image listed must exist; sizes come from the image headers.
    """
    _check_choice("citypersons_split", split, SPLITS)
    _check_choice("citypersons_subset", subset, SUBSETS)
    root = Path(root)
    path = annotation_path(root, split)
    images = read_annotations(path, split)
    sizes = image_sizes(root, [image.file_name for image in images], path)
    out_images, annotations, counts = to_records(images, sizes, subset)
    return SourceSet(NAME, root, out_images, annotations), counts


def _class_key(label: int) -> str:
    return f"class_{label}_{CLASS_NAMES[label]}"


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise PersondetError(f"{name}={value!r} must be one of {', '.join(choices)}")


def _show(values) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def check_root(root: str | Path, split: str = "train", subset: str = "all") -> None:
    """In seconds, before a study: ``anno_<split>.mat`` holds its variable (read from the header only) and
    the image folder exists; the full read is ``prepare``'s."""
    _check_choice("citypersons_split", split, SPLITS)
    _check_choice("citypersons_subset", subset, SUBSETS)
    check_mat_variable(annotation_path(root, split), f"anno_{split}_aligned")
    if not (Path(root) / IMAGE_DIR / split).is_dir():
        raise PersondetError(f"citypersons_root={str(root)!r}: no image folder {IMAGE_DIR}/{split}/")
