"""Tiny COCO and CUHK-SYSU trees written by hand for the prepare tests (independent of persondet.synth)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def mat_struct(shape, fields, rows):
    """A MATLAB struct array as scipy writes it: object fields, filled row-major from ``rows``."""
    array = np.zeros(shape, dtype=[(f, "O") for f in fields])
    flat = array.reshape(-1)
    for i, row in enumerate(rows):
        for f in fields:
            flat[i][f] = row[f]
    return array


def write_images_mat(path: Path, images: list[tuple[str, list[tuple[list[int], int, str]]]]) -> None:
    """images: (name, [(idlocate, ishard, dtype), ...])."""
    rows = []
    for name, boxes in images:
        box = mat_struct((1, len(boxes)), ("idlocate", "ishard"),
                         [{"idlocate": np.array([loc], dtype=dt), "ishard": np.array([[hard]], dtype=np.uint8)}
                          for loc, hard, dt in boxes])
        rows.append({"imname": np.array([name]), "nAppear": np.array([[len(boxes)]], dtype=np.uint8), "box": box})
    scipy.io.savemat(path, {"Img": mat_struct((1, len(rows)), ("imname", "nAppear", "box"), rows)})


def write_person_mat(path: Path, people: list[tuple[str, list[tuple[str, list[int]]]]]) -> None:
    rows = []
    for idname, scenes in people:
        scene = mat_struct((1, len(scenes)), ("imname", "idlocate", "ishard"),
                           [{"imname": np.array([im]), "idlocate": np.array([loc], dtype=np.uint16),
                             "ishard": np.array([[0]], dtype=np.uint8)} for im, loc in scenes])
        rows.append({"idname": np.array([idname]), "nAppear": np.array([[len(scenes)]]), "scene": scene})
    scipy.io.savemat(path, {"Person": mat_struct((1, len(rows)), ("idname", "nAppear", "scene"), rows)})


def write_pool_mat(path: Path, names: list[str]) -> None:
    cell = np.empty((len(names), 1), dtype=object)
    for i, n in enumerate(names):
        cell[i, 0] = np.array([n])
    scipy.io.savemat(path, {"pool": cell})


# Scenes: name, (width, height), boxes (idlocate, ishard, dtype).  s2 has a box running past the right
# border (clipped) and a zero-width box (dropped); s3's box is uint8 with x + w = 260 > 255.
CUHK_SCENES = [
    ("s1.jpg", (320, 240), [([10, 20, 30, 80], 0, np.uint8), ([100, 30, 40, 100], 1, np.uint16)]),
    ("s2.jpg", (300, 200), [([280, 10, 50, 90], 0, np.uint16), ([50, 50, 0, 40], 0, np.uint8)]),
    ("s3.jpg", (400, 300), [([250, 100, 10, 60], 0, np.uint8)]),
]
COCO_IMAGES = [(1, "000000000001.jpg", 64, 48), (2, "000000000002.jpg", 80, 60), (3, "000000000003.jpg", 50, 40)]


def coco_json() -> dict:
    categories = [{"id": 1, "name": "bicycle"}, {"id": 7, "name": "person"}]
    annotations = [
        {"id": 10, "image_id": 1, "category_id": 7, "bbox": [1.5, 2.0, 10.0, 20.0], "area": 150.0, "iscrowd": 0,
         "segmentation": [[1.5, 2.0, 11.5, 2.0, 11.5, 22.0]]},
        {"id": 11, "image_id": 1, "category_id": 7, "bbox": [20, 5, 30, 30], "area": 800.0, "iscrowd": 1,
         "segmentation": {"counts": [5, 10, 20], "size": [48, 64]}},
        {"id": 12, "image_id": 2, "category_id": 7, "bbox": [0, 0, 40, 30], "area": 1000.0, "iscrowd": 0,
         "segmentation": [[0, 0, 40, 0, 40, 30]]},
        {"id": 13, "image_id": 3, "category_id": 1, "bbox": [0, 0, 5, 5], "area": 25.0, "iscrowd": 0,
         "segmentation": [[0, 0, 5, 0, 5, 5]]},
    ]
    images = [{"id": i, "file_name": f, "width": w, "height": h} for i, f, w, h in COCO_IMAGES]
    return {"info": {}, "images": images, "annotations": annotations, "categories": categories}


def make_coco_tree(root: Path) -> Path:
    (root / "annotations").mkdir(parents=True)
    (root / "train2017").mkdir()
    for _, name, w, h in COCO_IMAGES:
        Image.new("RGB", (w, h), (90, 120, 150)).save(root / "train2017" / name)
    (root / "annotations" / "instances_train2017.json").write_text(json.dumps(coco_json()))
    return root


def make_cuhk_tree(root: Path) -> Path:
    (root / "Image" / "SSM").mkdir(parents=True)
    (root / "annotation").mkdir()
    for name, size, _ in CUHK_SCENES:
        Image.new("RGB", size, (200, 180, 160)).save(root / "Image" / "SSM" / name)
    write_images_mat(root / "annotation" / "Images.mat", [(n, b) for n, _, b in CUHK_SCENES])
    write_pool_mat(root / "annotation" / "pool.mat", ["s3.jpg"])
    write_person_mat(root / "annotation" / "Person.mat",
                     [("p00007", [("s1.jpg", [100, 30, 40, 100]), ("s3.jpg", [250, 100, 10, 60])])])
    return root
