"""Merge per-source COCO person sets into the prepared set (docs/ARCHITECTURE.md, "The prepared set").

Image and annotation ids are renumbered from 1; each image's ``file_name`` is prefixed by its source
(``coco/train2017/x.jpg``), so names never collide and resolve as ``roots[source] / rest`` (the image path
rule, ``persondet.datasets.image_path``); the top-level
``persondet`` key records the roots, the mix, the CUHK-SYSU split and a digest of the content.

Every annotation has ``id``, ``image_id``, ``category_id`` (1), ``bbox``, ``area``, ``iscrowd``, ``ignore``
(1: an ignore region, CityPersons label 0 or a CrowdHuman mask / ignored person: never a training box,
never a person in the statistics), ``person_id`` and ``ishard`` (CUHK-SYSU's, else -1 and 0), in that
order.  A source's other keys are kept as it gave them (CityPersons ``class_label``, ``instance_id``,
``vis_ratio``; CrowdHuman ``vis_ratio``): they cost a few bytes per box and let a later step select by
visibility or class without re-reading the source.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import msgspec

from persondet.errors import PersondetError
from persondet.formats.imagefiles import ImageFilesCheck

PERSON_CATEGORY = {"id": 1, "name": "person", "supercategory": "person"}
_PERSON_ID = PERSON_CATEGORY["id"]


def person_annotation(ann_id: int, image_id: int, bbox: list[float], area: float, iscrowd: int = 0,
                      ignore: int = 0, person_id: int = -1, ishard: int = 0) -> dict:
    """An annotation in the prepared set's form: its keys in their order, its defaults (module docstring).
    A reader that builds every annotation with it says so (``SourceSet.prepared_form``), and ``merge``
    then renumbers them in place instead of building each again (0.1 s for COCO train2017's persons)."""
    return {"id": ann_id, "image_id": image_id, "category_id": _PERSON_ID, "bbox": bbox, "area": area,
            "iscrowd": iscrowd, "ignore": ignore, "person_id": person_id, "ishard": ishard}


_ANNOTATION = person_annotation(0, 0, None, 0.0)


@dataclass
class SourceSet:
    """One source, converted: images with ``file_name`` relative to ``root``, person annotations."""

    name: str  # the source's name in the registry (persondet.datasets.SOURCES)
    root: Path
    images: list[dict]  # id, file_name (relative to root), width, height; original_file_name optional
    annotations: list[dict]  # id, image_id, bbox, area, iscrowd; ignore, person_id, ishard, extras optional
    # image files the reader listed without opening them: the caller checks them (prepare, beside the merge)
    image_check: ImageFilesCheck | None = None
    digest: str | None = None  # records_digest(self) when the reading process computed it, else None
    prepared_form: bool = False  # every annotation was built by person_annotation (merge may renumber it in place)


def merge(sources: Sequence[SourceSet], mix: str, cuhk_split: str = "all", consume: bool = False) -> dict:
    """One COCO dict with the ``persondet`` key (mix, roots, cuhk_split, digest, source_digests).

    ``consume``: the caller gives the sources up, so annotations in the prepared form are renumbered in place
    and become the merged set's (the sources' records change); else every record is copied."""
    names = [s.name for s in sources]
    if len(set(names)) != len(names) or any("/" in n or not n for n in names):
        raise PersondetError(f"source names must be unique and without '/': {names}")
    digests = {s.name: s.digest or records_digest(s) for s in sources}  # of the records as read: before renumbering
    images, annotations = [], []
    category = PERSON_CATEGORY["id"]
    for source in sources:
        name, prefix, new_ids = source.name, f"{source.name}/", {}
        for image in source.images:
            new_ids[image["id"]] = number = len(images) + 1
            original = image.get("original_file_name") or image["file_name"].rpartition("/")[2]
            images.append({"id": number, "file_name": prefix + image["file_name"], "width": image["width"],
                           "height": image["height"], "source": name, "original_file_name": original})
        new_id, append = new_ids.get, annotations.append
        in_place = consume and source.prepared_form
        for number, ann in enumerate(source.annotations, start=len(annotations) + 1):
            image_id = new_id(ann["image_id"])
            if image_id is None:
                raise PersondetError(f"{name}: annotation {ann.get('id')} refers to an image not kept")
            # the template fixes the key order and the defaults; the source's values, then the new ids, win
            merged = ann if in_place else _ANNOTATION | ann
            merged["id"], merged["image_id"], merged["category_id"] = number, image_id, category
            append(merged)
    dataset = {"info": {"description": f"persondet prepared set ({mix})"},
               "categories": [dict(PERSON_CATEGORY)], "images": images, "annotations": annotations}
    dataset["persondet"] = {"mix": mix, "roots": {s.name: str(Path(s.root).resolve()) for s in sources},
                            "cuhk_split": cuhk_split, "digest": _sha256(list(digests.items())),
                            "source_digests": digests}
    return dataset


def records_digest(source: SourceSet) -> str:
    """sha256 of a source's images and annotations as converted (not of its root).

    The merged set is a deterministic function of its sources in order, so its digest is the hash of
    the (name, digest) list: the content is serialised once, not twice.
    """
    return _sha256({"images": source.images, "annotations": source.annotations})


def _sha256(value) -> str:
    """sha256 of ``value`` serialised with sorted keys: msgpack, which encodes in half the time of sorted JSON
    (COCO train2017's persons: 0.14-0.21 s against 0.30-0.42 s, three runs on a busy 2-core machine)."""
    return hashlib.sha256(msgspec.msgpack.encode(value, order="sorted")).hexdigest()


def write_dataset(dataset: dict, path: str | Path) -> Path:
    """Write atomically (temporary file in the same folder, then rename); a full disk is one line, no leftover."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    data = msgspec.json.encode(dataset)  # compact UTF-8; 5-8x faster than json.dumps at full scale
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        tmp.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise PersondetError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return path
