"""The checks a COCO file read as plain JSON passes before anyone uses it: a test set given to ``evaluate``,
a training or validation set given to ``train`` as a json path.

pycocotools and the training data loader trust these files: a duplicate image id silently merges two images'
boxes, an annotation pointing at no listed image is silently ignored, a negative width gives a negative area
that no area range holds (the box vanishes from the metrics), a non-numeric box is a traceback.  So:
image ids and annotation ids present, integers and unique; every annotation names a listed image; every
``bbox`` is four finite numbers within ``boxes.MAX_COORDINATE`` with ``w, h >= 0`` (``x, y`` may be negative:
a box may start left of or above the image).  File names are checked where they are resolved
(``datasets.image_path``).
"""

from __future__ import annotations

from typing import Any, Mapping

from persondet.errors import PersondetError
from persondet.formats.boxes import MAX_COORDINATE, box_is_sane


class CocoSetError(PersondetError):
    """A COCO file whose entries contradict each other or the COCO format."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_coco_set(dataset: Mapping[str, Any], where: str) -> None:
    """Refuse (CocoSetError naming ``where`` and the entry) what the module docstring lists."""
    for key in ("images", "annotations"):
        if not isinstance(dataset.get(key, []), list):
            raise CocoSetError(f"{where}: {key!r} is not a list")
    image_ids: set[int] = set()
    for index, image in enumerate(dataset.get("images") or []):
        if not isinstance(image, Mapping) or not _is_int(image.get("id")):
            raise CocoSetError(f"{where}: image entry {index} has no integer id")
        if image["id"] in image_ids:
            raise CocoSetError(f"{where}: image id {image['id']} appears twice; ids must be unique")
        image_ids.add(image["id"])
    annotation_ids: set[int] = set()
    for index, ann in enumerate(dataset.get("annotations") or []):
        if not isinstance(ann, Mapping) or not _is_int(ann.get("id")):
            raise CocoSetError(f"{where}: annotation entry {index} has no integer id")
        name = f"{where}: annotation {ann['id']}"
        if ann["id"] in annotation_ids:
            raise CocoSetError(f"{where}: annotation id {ann['id']} appears twice; ids must be unique")
        annotation_ids.add(ann["id"])
        if "image_id" not in ann:
            raise CocoSetError(f"{name} has no image_id")
        if ann["image_id"] not in image_ids:
            raise CocoSetError(f"{name} refers to image_id {ann['image_id']!r}, not listed in images")
        box = ann.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)
                and box_is_sane(*box)):
            raise CocoSetError(f"{name} (image {ann['image_id']}): bbox {box!r} is not [x, y, w, h] in finite "
                               f"numbers within {MAX_COORDINATE:g} pixels")
        if box[2] < 0 or box[3] < 0:
            raise CocoSetError(f"{name} (image {ann['image_id']}): bbox {box!r} has a negative width or height")
