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


# CityPersons: (city, image name, bbs rows [class_label, x1, y1, w, h, instance_id, x1_vis, y1_vis, w_vis, h_vis],
# stored dtype) as MATLAB stores them (the smallest integer type per image; int16 for a negative corner).
# a.png (200x100): a pedestrian, a rider starting left of the image (clipped), a group, an ignore region.
# b.png: an ignore region only (left out, counted). c.png: no boxes at all (an empty bbs).
CITYPERSONS_SCENES = [
    ("aachen", "aachen_000000_000019_leftImg8bit.png", (200, 100),
     [[1, 10, 20, 16, 40, 24000, 10, 20, 16, 30], [2, -4, 30, 12, 30, 25000, 0, 30, 8, 30],
      [5, 100, 10, 60, 50, 24, 0, 0, 0, 0], [0, 170, 5, 20, 30, 0, 170, 5, 20, 30]], np.int16),
    ("bochum", "bochum_000001_000019_leftImg8bit.png", (200, 100), [[0, 5, 5, 20, 20, 0, 5, 5, 20, 20]], np.uint8),
    ("bochum", "bochum_000002_000019_leftImg8bit.png", (160, 120), [], np.uint8),
]


def citypersons_cell(scenes=CITYPERSONS_SCENES) -> np.ndarray:
    cell = np.empty((1, len(scenes)), dtype=object)
    for k, (city, name, _, rows, dtype) in enumerate(scenes):
        cell[0, k] = mat_struct((1, 1), ("cityname", "im_name", "bbs"),
                                [{"cityname": np.array([city]), "im_name": np.array([name]),
                                  "bbs": np.array(rows, dtype=dtype).reshape(-1, 10)}])
    return cell


def make_citypersons_tree(root: Path, scenes=CITYPERSONS_SCENES) -> Path:
    (root / "annotations").mkdir(parents=True)
    for city, name, size, _, _ in scenes:
        folder = root / "leftImg8bit" / "train" / city
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (120, 140, 160)).save(folder / name)
    scipy.io.savemat(root / "annotations" / "anno_train.mat", {"anno_train_aligned": citypersons_cell(scenes)})
    return root


# CrowdHuman: image ID, size, gtboxes as the .odgt holds them.  1,a: two persons (one's fbox past the left
# border), a mask, an ignored person; 2,b: a mask only (left out, counted).
CROWDHUMAN_LINES = [
    ("284193,a1f", (120, 90), [
        {"fbox": [-6, 10, 30, 70], "tag": "person", "hbox": [4, 10, 8, 8], "extra": {"box_id": 0, "occ": 1},
         "vbox": [0, 10, 24, 50], "head_attr": {"ignore": 0, "occ": 0, "unsure": 0}},
        {"fbox": [60, 20, 20, 50], "tag": "person", "hbox": [66, 20, 6, 6], "extra": {"box_id": 1, "ignore": 0},
         "vbox": [60, 20, 20, 50], "head_attr": {}},
        {"fbox": [90, 5, 25, 30], "tag": "mask", "hbox": [90, 5, 25, 30], "extra": {"ignore": 1},
         "vbox": [90, 5, 25, 30], "head_attr": {}},
        {"fbox": [40, 60, 8, 20], "tag": "person", "hbox": [42, 60, 3, 3], "extra": {"ignore": 1},
         "vbox": [40, 60, 8, 20], "head_attr": {}}]),
    ("284194,b2e", (100, 80), [
        {"fbox": [10, 10, 30, 30], "tag": "mask", "extra": {"ignore": 1}, "vbox": [10, 10, 30, 30]}]),
]


def make_crowdhuman_tree(root: Path, lines=CROWDHUMAN_LINES) -> Path:
    (root / "Images").mkdir(parents=True)
    with open(root / "annotation_train.odgt", "w") as f:
        for image_id, size, gtboxes in lines:
            f.write(json.dumps({"ID": image_id, "gtboxes": gtboxes}) + "\n")
            Image.new("RGB", size, (60, 80, 100)).save(root / "Images" / f"{image_id}.jpg")
    return root


# ------------------------------------------------------------------ independent counts of a tree's persons
def independent_counts(roots: dict[str, Path]) -> dict[str, dict]:
    """{source: {images, objects, avg_rel_size, ignore_regions}} counted straight from the files (json, scipy,
    PIL), not with persondet's readers: persons clipped to the image (sizes from the image files where the
    annotations hold none), boxes with w or h <= 0 or nothing left after clipping dropped, an image counted
    when it keeps a person (or a crowd region)."""
    count = {"coco": _count_coco, "cuhk": _count_cuhk, "citypersons": _count_citypersons,
             "crowdhuman": _count_crowdhuman}
    return {name: count[name](Path(root)) for name, root in roots.items()}


def _clipped_area(x, y, w, h, width, height) -> float:
    if w <= 0 or h <= 0:
        return 0.0
    x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    return (x2 - x1) * (y2 - y1) if x2 > x1 and y2 > y1 else 0.0


def _row(images: int, rel: list[float], ignore: int = 0) -> dict:
    return {"images": images, "objects": len(rel), "avg_rel_size": float(np.mean(rel)) if rel else 0.0,
            "ignore_regions": ignore}


def _count_coco(root: Path) -> dict:
    data = json.loads((root / "annotations" / "instances_train2017.json").read_text())
    person = next(c["id"] for c in data["categories"] if c["name"] == "person")
    sizes = {im["id"]: (im["width"], im["height"]) for im in data["images"]}
    anns = [a for a in data["annotations"] if a["category_id"] == person]
    rel = [_clipped_area(*a["bbox"], *sizes[a["image_id"]]) / (sizes[a["image_id"]][0] * sizes[a["image_id"]][1])
           for a in anns if not a["iscrowd"]]
    return _row(len({a["image_id"] for a in anns}), [r for r in rel if r > 0])


def _count_cuhk(root: Path) -> dict:
    img = scipy.io.loadmat(root / "annotation" / "Images.mat")["Img"][0]
    rel, n_images = [], 0
    for entry in img:
        name = str(entry["imname"].item() if entry["imname"].size == 1 else entry["imname"][0])
        with Image.open(root / "Image" / "SSM" / name) as im:
            width, height = im.size
        kept = 0
        for box in entry["box"].reshape(-1):
            loc = np.asarray(box["idlocate"], dtype=np.int64).reshape(-1)
            area = _clipped_area(*loc.tolist(), width, height) if loc.size == 4 else 0.0
            if area > 0:
                rel.append(area / (width * height))
                kept += 1
        n_images += kept > 0
    return _row(n_images, rel)


def _count_citypersons(root: Path, split: str = "train") -> dict:
    """Labels 1-4 persons, 5 crowd regions, 0 ignore regions (the default subset)."""
    cells = scipy.io.loadmat(root / "annotations" / f"anno_{split}.mat")[f"anno_{split}_aligned"][0]
    rel, ignore, n_images = [], 0, 0
    for cell in cells:
        entry = cell[0, 0]
        city, name = str(entry["cityname"][0]), str(entry["im_name"][0])
        with Image.open(root / "leftImg8bit" / split / city / name) as im:
            width, height = im.size
        persons, regions, ignored = [], 0, 0
        for row in np.asarray(entry["bbs"], dtype=np.int64).reshape(-1, 10).tolist():
            area = _clipped_area(*row[1:5], width, height)
            if area > 0 and row[0] in (1, 2, 3, 4):
                persons.append(area / (width * height))
            regions += area > 0 and row[0] == 5
            ignored += area > 0 and row[0] == 0
        if persons or regions:
            n_images += 1
            rel += persons
            ignore += ignored
    return _row(n_images, rel, ignore)


def _count_crowdhuman(root: Path, split: str = "train") -> dict:
    """A person without extra.ignore is a person (its fbox); masks and ignored persons are ignore regions."""
    rel, ignore, n_images = [], 0, 0
    for line in (root / f"annotation_{split}.odgt").read_text().splitlines():
        record = json.loads(line)
        with Image.open(root / "Images" / f"{record['ID']}.jpg") as im:
            width, height = im.size
        persons, ignored = [], 0
        for box in record["gtboxes"]:
            area = _clipped_area(*box["fbox"], width, height)
            if area > 0 and box["tag"] == "person" and not box.get("extra", {}).get("ignore", 0):
                persons.append(area / (width * height))
            elif area > 0:
                ignored += 1
        if persons:
            n_images += 1
            rel += persons
            ignore += ignored
    return _row(n_images, rel, ignore)
