"""COCO 2017 demo data: instances files with the 80 categories, polygons, RLE crowd regions, JPEG images."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from persondet.errors import PersondetError
from persondet.synth.draw import (ImageSink, SILHOUETTE, blob_polygon, other_box, person_box, place_box, progress,
                                  random_colour, random_look, random_sizes, render_scene, stream_rng)

_COCO_CATS = (
    "1:person:person 2:bicycle:vehicle 3:car:vehicle 4:motorcycle:vehicle 5:airplane:vehicle "
    "6:bus:vehicle 7:train:vehicle 8:truck:vehicle 9:boat:vehicle 10:traffic+light:outdoor "
    "11:fire+hydrant:outdoor 13:stop+sign:outdoor 14:parking+meter:outdoor 15:bench:outdoor "
    "16:bird:animal 17:cat:animal 18:dog:animal 19:horse:animal 20:sheep:animal 21:cow:animal "
    "22:elephant:animal 23:bear:animal 24:zebra:animal 25:giraffe:animal 27:backpack:accessory "
    "28:umbrella:accessory 31:handbag:accessory 32:tie:accessory 33:suitcase:accessory "
    "34:frisbee:sports 35:skis:sports 36:snowboard:sports 37:sports+ball:sports 38:kite:sports "
    "39:baseball+bat:sports 40:baseball+glove:sports 41:skateboard:sports 42:surfboard:sports "
    "43:tennis+racket:sports 44:bottle:kitchen 46:wine+glass:kitchen 47:cup:kitchen 48:fork:kitchen "
    "49:knife:kitchen 50:spoon:kitchen 51:bowl:kitchen 52:banana:food 53:apple:food "
    "54:sandwich:food 55:orange:food 56:broccoli:food 57:carrot:food 58:hot+dog:food 59:pizza:food "
    "60:donut:food 61:cake:food 62:chair:furniture 63:couch:furniture 64:potted+plant:furniture "
    "65:bed:furniture 67:dining+table:furniture 70:toilet:furniture 72:tv:electronic "
    "73:laptop:electronic 74:mouse:electronic 75:remote:electronic 76:keyboard:electronic "
    "77:cell+phone:electronic 78:microwave:appliance 79:oven:appliance 80:toaster:appliance "
    "81:sink:appliance 82:refrigerator:appliance 84:book:indoor 85:clock:indoor 86:vase:indoor "
    "87:scissors:indoor 88:teddy+bear:indoor 89:hair+drier:indoor 90:toothbrush:indoor"
)
# The 80 COCO 2017 categories as (id, name, supercategory); person is id 1.
COCO_CATEGORIES: tuple[tuple[int, str, str], ...] = tuple(
    (int(i), n.replace("+", " "), s) for i, n, s in (t.split(":") for t in _COCO_CATS.split())
)
_OTHER_CATEGORY_IDS = [c[0] for c in COCO_CATEGORIES[1:]]


def _polygon_area(xy: np.ndarray) -> float:
    x, y = xy[:, 0], xy[:, 1]
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2.0)


def _person_polygon(box) -> np.ndarray:
    x, y, w, h = box
    return np.column_stack([x + SILHOUETTE[:, 0] * w, y + SILHOUETTE[:, 1] * h])


def _coco_ann(polygon: np.ndarray, W: int, H: int, category_id: int, image_id: int, ann_id: int) -> dict:
    poly = np.clip(polygon, 0, [W, H]).round(2)
    x0, y0 = poly.min(axis=0)
    x1, y1 = poly.max(axis=0)
    return {"segmentation": [poly.ravel().tolist()], "area": round(_polygon_area(poly), 4), "iscrowd": 0,
            "image_id": image_id, "bbox": [float(x0), float(y0), round(float(x1 - x0), 2), round(float(y1 - y0), 2)],
            "category_id": category_id, "id": ann_id}


def rect_rle(x: int, y: int, w: int, h: int, W: int, H: int) -> list[int]:
    """Uncompressed COCO RLE counts (column-major) of an axis-aligned rectangle."""
    counts = [x * H + y]
    for col in range(w):
        counts.append(h)
        counts.append(H - h if col < w - 1 else H - (y + h) + (W - x - w) * H)
    return counts


def _crowd_ann(rng, W, H, image_id) -> dict:
    w = int(rng.uniform(0.3, 0.6) * W)
    h = int(rng.uniform(0.15, 0.3) * H)
    x, y = int(rng.integers(0, W - w)), int(rng.integers(H // 3, H - h))
    return {"segmentation": {"counts": rect_rle(x, y, w, h, W, H), "size": [H, W]}, "area": w * h,
            "iscrowd": 1, "image_id": image_id, "bbox": [x, y, w, h], "category_id": 1,
            "id": 900100000000 + image_id}


def _coco_image_annotations(seed, stream, index, image_id, W, H, has_person, *, person_height, persons,
                            others, polygon_points, crowd_fraction, first_ann_id):
    """Annotations of one image plus what is needed to draw it (deterministic per image)."""
    rng = stream_rng(seed, stream, index)
    anns, shapes, placed = [], [], []
    ann_id = first_ann_id
    if has_person:
        for _ in range(int(rng.integers(persons[0], persons[1] + 1))):
            box = place_box(rng, lambda: person_box(rng, W, H, person_height), placed)
            placed.append(box)
            anns.append(_coco_ann(_person_polygon(box), W, H, 1, image_id, ann_id))
            shapes.append(("person", box, random_look(rng)))
            ann_id += 1
    for _ in range(int(rng.integers(others[0], others[1] + 1))):
        box = place_box(rng, lambda: other_box(rng, W, H), placed)
        placed.append(box)
        poly = blob_polygon(rng, box, polygon_points)
        category_id = _OTHER_CATEGORY_IDS[int(rng.integers(len(_OTHER_CATEGORY_IDS)))]
        anns.append(_coco_ann(poly, W, H, category_id, image_id, ann_id))
        shapes.append(("blob", poly, random_colour(rng)))
        ann_id += 1
    if has_person and rng.random() < crowd_fraction:
        crowd = _crowd_ann(rng, W, H, image_id)
        anns.append(crowd)
        shapes.insert(0, ("crowd", crowd["bbox"], None))
    return anns, shapes, rng


def _coco_image_entry(split: str, i: int, image_id: int, W: int, H: int) -> dict:
    file_name = f"{image_id:012d}.jpg"
    return {"license": 1 + i % 8, "file_name": file_name,
            "coco_url": f"http://images.cocodataset.org/{split}/{file_name}",
            "height": H, "width": W, "date_captured": "2013-11-14 16:28:13",
            "flickr_url": "http://farm4.staticflickr.com/demo.jpg", "id": image_id}


def _write_coco_split(path: Path, root: Path, split: str, stream: int, seed: int, ids: np.ndarray,
                      sizes: np.ndarray, has_person: np.ndarray, sink: ImageSink, params: dict) -> None:
    """Stream one instances file to ``path`` (atomically): full-scale files never sit in memory whole."""
    def dumps(obj) -> str:
        return json.dumps(obj, separators=(",", ":"))

    info = {"description": "persondet demo data (COCO 2017 layout)", "version": "1.0", "year": 2017,
            "contributor": "persondet.synth", "date_created": "2017/09/01"}
    licenses = [{"url": "http://creativecommons.org/licenses/by/2.0/", "id": k, "name": f"license {k}"}
                for k in range(1, 9)]
    categories = [{"supercategory": s, "id": i, "name": n} for i, n, s in COCO_CATEGORIES]
    rows = list(zip(ids.tolist(), sizes.tolist(), has_person.tolist()))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(f'{{"info":{dumps(info)},"licenses":{dumps(licenses)},"images":[')
        f.write(",".join(dumps(_coco_image_entry(split, i, image_id, W, H))
                         for i, (image_id, (W, H), _) in enumerate(rows)))
        f.write('],"annotations":[')
        next_ann, first = 1 + stream * 10_000_000, True
        for i, (image_id, (W, H), hp) in enumerate(progress(rows, f"COCO {split}")):
            anns, shapes, rng = _coco_image_annotations(seed, stream, i, image_id, W, H, hp,
                                                        first_ann_id=next_ann, **params)
            next_ann += sum(1 for a in anns if not a["iscrowd"])
            if anns:
                f.write(("" if first else ",") + ",".join(dumps(a) for a in anns))
                first = False
            sink.write(root / split / f"{image_id:012d}.jpg", W, H, lambda: render_scene(rng, W, H, shapes))
        f.write(f'],"categories":{dumps(categories)}}}')
    os.replace(tmp, path)


def _image_ids(rng, n: int) -> np.ndarray:
    """Sparse, sorted, unique COCO-like image ids."""
    return np.sort(rng.choice(np.arange(1, max(2 * n, 600_000)), size=n, replace=False))


def write_coco(root: str | Path, *, seed: int = 0, train_images: int = 240, val_images: int = 60,
               train_person_images: int | None = None, val_person_images: int | None = None,
               person_fraction: float = 0.75, size_range=((320, 240), (400, 300)),
               person_height=(0.35, 0.85), persons=(1, 3), others=(0, 2), polygon_points: int = 12,
               crowd_fraction: float = 0.05, cheap_images: bool = False) -> Path:
    """Write a COCO 2017 layout under ``root``; returns ``root``.

    ``*_person_images`` images (default ``person_fraction`` of each split) hold ``persons`` people each
    (a uniform range) plus ``others`` non-person objects; the rest hold only non-person objects or nothing.
    """
    root = Path(root)
    rng = stream_rng(seed, 100)
    ids = _image_ids(rng, train_images + val_images)
    rng.shuffle(ids)
    sink = ImageSink(root, cheap_images)
    params = dict(person_height=person_height, persons=persons, others=others, polygon_points=polygon_points,
                  crowd_fraction=crowd_fraction)
    splits = (("train2017", 1, np.sort(ids[:train_images]), train_person_images),
              ("val2017", 2, np.sort(ids[train_images:]), val_person_images))
    for split, stream, split_ids, n_person in splits:
        n = len(split_ids)
        n_person = int(round(n * person_fraction)) if n_person is None else n_person
        if not 0 <= n_person <= n:
            raise PersondetError(f"{split}: person images {n_person} must be between 0 and the {n} images")
        srng = stream_rng(seed, 200 + stream)
        sizes = random_sizes(srng, n, size_range)
        has_person = np.zeros(n, bool)
        has_person[srng.choice(n, n_person, replace=False)] = True
        (root / split).mkdir(parents=True, exist_ok=True)
        _write_coco_split(root / "annotations" / f"instances_{split}.json", root, split, stream, seed,
                          split_ids, sizes, has_person, sink, params)
    sink.finish()
    return root
