"""Built-in demo data: COCO 2017, CUHK-SYSU and an "in-house" COCO test set, generated from a seed.

The files follow the real on-disk formats (docs/DATA.md): COCO JSON with the 80 categories, polygon
segmentations and RLE crowd regions; CUHK-SYSU ``.mat`` files that scipy reads back the way it reads the
real ones (strings as 1-element arrays, ``idlocate`` uint8 or uint16 per entry, empty ``idlocate`` in
galleries, some zero-size boxes and boxes running past the image border); an in-house set whose person
category has another id and name.  People are drawn as high-contrast stylised figures (head, torso, arms,
legs) and their box is tight around the drawing, so a small detector learns them on CPU in minutes.

``cheap_images=True`` writes the same annotations with one solid-colour JPEG per image size, hard-linked
to every file name: full-scale trees (118,287 + 18,184 images) for benchmarks in minutes.
Pure numpy / PIL / scipy: no torch, no mlflow.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.io
from PIL import Image, ImageDraw

from persondet.errors import PersondetError
from persondet.formats.merge import write_dataset

FORMAT_VERSION = "1"
MARKER = ".persondet-demo-complete"
_MAT_HEADER = "MATLAB 5.0 MAT-file, Platform: persondet.synth, Created on: Sun Nov  1 12:06:30 2015"

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

# Person silhouette in box-relative (u, v) coordinates; it touches all four sides of the box.
_SILHOUETTE = np.array([
    (0.32, 0.085), (0.38, 0.02), (0.5, 0.0), (0.62, 0.02), (0.68, 0.085), (0.62, 0.16), (0.8, 0.16),
    (1.0, 0.18), (1.0, 0.55), (0.82, 0.55), (0.8, 0.58), (0.76, 0.58), (0.76, 1.0), (0.52, 1.0),
    (0.5, 0.62), (0.48, 1.0), (0.24, 1.0), (0.24, 0.58), (0.2, 0.58), (0.18, 0.55), (0.0, 0.55),
    (0.0, 0.18), (0.2, 0.16), (0.38, 0.16),
])
_SKIN = ((241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172))


@dataclass(frozen=True)
class DemoProfile:
    """How much demo data to write.  The defaults are small enough for CPU training in about a minute."""

    name: str = "default"
    coco_train_images: int = 240
    coco_val_images: int = 60
    coco_person_fraction: float = 0.75
    cuhk_images: int = 160
    cuhk_pool_images: int = 60
    inhouse_images: int = 80
    cheap_images: bool = False


@dataclass(frozen=True)
class DemoData:
    coco_root: Path
    cuhk_root: Path
    inhouse_annotations: Path
    inhouse_images: Path


# ----------------------------------------------------------------------------------------------- helpers

def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, *stream])


def _sizes(rng: np.random.Generator, n: int, size_range, step: int = 16) -> np.ndarray:
    """``n`` (width, height) pairs on a grid of ``step`` pixels inside ``size_range`` ((wmin,hmin),(wmax,hmax))."""
    (w0, h0), (w1, h1) = size_range
    w = rng.integers(w0 // step, w1 // step + 1, n) * step
    # keep the aspect close to the range's, like real photos (mostly landscape)
    aspect = rng.uniform(h0 / w0 * 0.95, h1 / w1 * 1.05, n) if w1 else np.ones(n)
    h = np.clip(np.round(w * aspect / step) * step, h0, h1).astype(int)
    return np.stack([w, h], axis=1)


def _person_box(rng, W, H, height_range, aspect=(0.35, 0.45), allow_outside=False):
    h = max(12.0, rng.uniform(*height_range) * H)
    w = max(5.0, h * rng.uniform(*aspect))
    w, h = min(w, W - 1.0), min(h, H - 1.0)
    if allow_outside:  # the figure runs past the right or bottom border
        return [W - w * rng.uniform(0.4, 0.8), rng.uniform(0, H - h), w, h] if rng.random() < 0.5 else \
            [rng.uniform(0, W - w), H - h * rng.uniform(0.6, 0.9), w, h]
    return [rng.uniform(0, W - w), rng.uniform(0, H - h), w, h]


def _other_box(rng, W, H, rel=(0.08, 0.35)):
    w = rng.uniform(*rel) * W
    h = min(w / rng.uniform(0.9, 2.5), H - 1.0)
    return [rng.uniform(0, W - w), rng.uniform(0, H - h), w, h]


def _iou(a, b) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter + 1e-9)


def _place(rng, make, placed, tries=8):
    """Draw a box with ``make()`` that overlaps the ``placed`` ones little (best of a few tries)."""
    best, best_overlap = None, 2.0
    for _ in range(tries):
        box = make()
        overlap = max((_iou(box, p) for p in placed), default=0.0)
        if overlap < best_overlap:
            best, best_overlap = box, overlap
        if overlap < 0.05:
            break
    return best


def _polygon_area(xy: np.ndarray) -> float:
    x, y = xy[:, 0], xy[:, 1]
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2.0)


def _person_polygon(box) -> np.ndarray:
    x, y, w, h = box
    return np.column_stack([x + _SILHOUETTE[:, 0] * w, y + _SILHOUETTE[:, 1] * h])


def _blob_polygon(rng, box, points: int) -> np.ndarray:
    """A star-shaped blob inscribed in ``box`` and touching its four sides."""
    x, y, w, h = box
    t = np.sort(rng.uniform(0, 2 * np.pi, points))
    r = rng.uniform(0.75, 1.0, points)
    u, v = np.cos(t) * r, np.sin(t) * r
    u = (u - u.min()) / max(u.max() - u.min(), 1e-6)
    v = (v - v.min()) / max(v.max() - v.min(), 1e-6)
    return np.column_stack([x + u * w, y + v * h])


def _coco_ann(polygon: np.ndarray, W: int, H: int, category_id: int, image_id: int, ann_id: int) -> dict:
    poly = np.clip(polygon, 0, [W, H]).round(2)
    x0, y0 = poly.min(axis=0)
    x1, y1 = poly.max(axis=0)
    return {"segmentation": [poly.ravel().tolist()], "area": round(_polygon_area(poly), 4), "iscrowd": 0,
            "image_id": image_id, "bbox": [float(x0), float(y0), round(float(x1 - x0), 2), round(float(y1 - y0), 2)],
            "category_id": category_id, "id": ann_id}


def _rect_rle(x: int, y: int, w: int, h: int, W: int, H: int) -> list[int]:
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
    return {"segmentation": {"counts": _rect_rle(x, y, w, h, W, H), "size": [H, W]}, "area": w * h,
            "iscrowd": 1, "image_id": image_id, "bbox": [x, y, w, h], "category_id": 1,
            "id": 900100000000 + image_id}


# ------------------------------------------------------------------------------------------------ drawing

def _background(rng, W: int, H: int) -> Image.Image:
    base = rng.integers(60, 200, 3)
    coarse = rng.normal(0, 28, (max(2, H // 24), max(2, W // 24), 3))
    coarse_img = Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8)).resize((W, H), Image.BILINEAR)
    arr = np.asarray(coarse_img, dtype=np.int16) - 128 + base + rng.normal(0, 10, (H, W, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _colour(rng, lo=0, hi=256) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(lo, hi, 3))


def _draw_clutter(rng, draw: ImageDraw.ImageDraw, W, H, n):
    for _ in range(n):
        x, y = rng.uniform(0, W), rng.uniform(0, H)
        s = rng.uniform(0.03, 0.12) * W
        kind = rng.integers(3)
        if kind == 0:
            draw.ellipse([x, y, x + s, y + s * rng.uniform(0.5, 1.0)], fill=_colour(rng))
        elif kind == 1:
            draw.line([x, y, x + rng.uniform(-2, 2) * s, y + rng.uniform(-1, 1) * s], fill=_colour(rng),
                      width=int(rng.integers(1, 4)))
        else:
            draw.rectangle([x, y, x + s * 1.5, y + s * 0.4], fill=_colour(rng))


def _draw_blob(draw, polygon: np.ndarray, colour):
    draw.polygon([tuple(p) for p in polygon], fill=colour, outline=(20, 20, 20))


def _draw_person(draw: ImageDraw.ImageDraw, box, look) -> None:
    """The stylised figure filling ``box`` = [x, y, w, h]; ``look`` = (skin, shirt, trousers)."""
    x, y, w, h = box
    skin, shirt, trousers = look
    lw = max(1, int(round(w / 18)))
    ink = (15, 15, 15)

    def rect(u0, v0, u1, v1, fill):
        draw.rectangle([x + u0 * w, y + v0 * h, x + u1 * w - 1, y + v1 * h - 1], fill=fill, outline=ink, width=lw)

    rect(0.0, 0.18, 0.2, 0.55, shirt)     # arms
    rect(0.8, 0.18, 1.0, 0.55, shirt)
    rect(0.24, 0.56, 0.48, 1.0, trousers)  # legs
    rect(0.52, 0.56, 0.76, 1.0, trousers)
    rect(0.19, 0.16, 0.81, 0.6, shirt)     # torso
    draw.ellipse([x + 0.32 * w, y, x + 0.68 * w - 1, y + 0.17 * h], fill=skin, outline=ink, width=lw)


def _random_look(rng):
    skin = _SKIN[int(rng.integers(len(_SKIN)))]
    return skin, _colour(rng), _colour(rng, 0, 140)


def _draw_crowd(rng, draw, bbox):
    x, y, w, h = bbox
    for _ in range(int(rng.integers(5, 10))):
        ph = h * rng.uniform(0.6, 1.0)
        pw = ph * 0.4
        if pw >= w:
            continue
        _draw_person(draw, [x + rng.uniform(0, w - pw), y + (h - ph) * rng.random(), pw, ph], _random_look(rng))


class _ImageSink:
    """Writes scene images, or in cheap mode hard-links one solid-colour file per (size, format)."""

    def __init__(self, root: Path, cheap: bool):
        self.root, self.cheap, self._cache = root, cheap, {}

    def write(self, path: Path, W: int, H: int, render) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = path.suffix.lower()
        if not self.cheap:
            img = render()
            img.save(path, quality=90) if suffix in (".jpg", ".jpeg") else img.save(path)
            return
        key = (W, H, suffix)
        src = self._cache.get(key)
        if src is None:
            src = self.root / ".cheap" / f"{W}x{H}{suffix}"
            src.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (W, H), (int(W) % 200 + 30, 120, int(H) % 200 + 30)).save(src)
            self._cache[key] = src
        try:
            os.link(src, path)
        except OSError:
            shutil.copyfile(src, path)

    def finish(self) -> None:
        shutil.rmtree(self.root / ".cheap", ignore_errors=True)


# ---------------------------------------------------------------------------------------------------- COCO

def _coco_image_annotations(seed, stream, index, image_id, W, H, has_person, *, person_height, persons,
                            others, polygon_points, crowd_fraction, first_ann_id):
    """Annotations of one image plus what is needed to draw it (deterministic per image)."""
    rng = _rng(seed, stream, index)
    anns, shapes, placed = [], [], []
    ann_id = first_ann_id
    if has_person:
        for _ in range(int(rng.integers(persons[0], persons[1] + 1))):
            box = _place(rng, lambda: _person_box(rng, W, H, person_height), placed)
            placed.append(box)
            anns.append(_coco_ann(_person_polygon(box), W, H, 1, image_id, ann_id))
            shapes.append(("person", box, _random_look(rng)))
            ann_id += 1
    for _ in range(int(rng.integers(others[0], others[1] + 1))):
        box = _place(rng, lambda: _other_box(rng, W, H), placed)
        placed.append(box)
        poly = _blob_polygon(rng, box, polygon_points)
        category_id = _OTHER_CATEGORY_IDS[int(rng.integers(len(_OTHER_CATEGORY_IDS)))]
        anns.append(_coco_ann(poly, W, H, category_id, image_id, ann_id))
        shapes.append(("blob", poly, _colour(rng)))
        ann_id += 1
    if has_person and rng.random() < crowd_fraction:
        crowd = _crowd_ann(rng, W, H, image_id)
        anns.append(crowd)
        shapes.insert(0, ("crowd", crowd["bbox"], None))
    return anns, shapes, rng


def _render_scene(rng, W, H, shapes, clutter=(2, 6)):
    img = _background(rng, W, H)
    draw = ImageDraw.Draw(img)
    _draw_clutter(rng, draw, W, H, int(rng.integers(clutter[0], clutter[1] + 1)))
    for kind, geom, look in shapes:
        if kind == "crowd":
            _draw_crowd(rng, draw, geom)
        elif kind == "blob":
            _draw_blob(draw, geom, look)
    for kind, geom, look in shapes:  # people on top, so their boxes stay tight and visible
        if kind == "person":
            _draw_person(draw, geom, look)
    return img


def _coco_image_entry(split: str, i: int, image_id: int, W: int, H: int) -> dict:
    file_name = f"{image_id:012d}.jpg"
    return {"license": 1 + i % 8, "file_name": file_name,
            "coco_url": f"http://images.cocodataset.org/{split}/{file_name}",
            "height": H, "width": W, "date_captured": "2013-11-14 16:28:13",
            "flickr_url": "http://farm4.staticflickr.com/demo.jpg", "id": image_id}


def _write_coco_split(path: Path, root: Path, split: str, stream: int, seed: int, ids: np.ndarray,
                      sizes: np.ndarray, has_person: np.ndarray, sink: _ImageSink, params: dict) -> None:
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
        for i, (image_id, (W, H), hp) in enumerate(_progress(rows, f"COCO {split}")):
            anns, shapes, rng = _coco_image_annotations(seed, stream, i, image_id, W, H, hp,
                                                        first_ann_id=next_ann, **params)
            next_ann += sum(1 for a in anns if not a["iscrowd"])
            if anns:
                f.write(("" if first else ",") + ",".join(dumps(a) for a in anns))
                first = False
            sink.write(root / split / f"{image_id:012d}.jpg", W, H, lambda: _render_scene(rng, W, H, shapes))
        f.write(f'],"categories":{dumps(categories)}}}')
    os.replace(tmp, path)


def _progress(items, desc: str):
    """A tqdm bar for long loops (full-scale benchmark trees); silent for demo-sized ones."""
    if len(items) < 5000:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="img", mininterval=5)


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
    rng = _rng(seed, 100)
    ids = _image_ids(rng, train_images + val_images)
    rng.shuffle(ids)
    sink = _ImageSink(root, cheap_images)
    params = dict(person_height=person_height, persons=persons, others=others, polygon_points=polygon_points,
                  crowd_fraction=crowd_fraction)
    splits = (("train2017", 1, np.sort(ids[:train_images]), train_person_images),
              ("val2017", 2, np.sort(ids[train_images:]), val_person_images))
    for split, stream, split_ids, n_person in splits:
        n = len(split_ids)
        n_person = int(round(n * person_fraction)) if n_person is None else n_person
        if not 0 <= n_person <= n:
            raise PersondetError(f"{split}: person images {n_person} must be between 0 and the {n} images")
        srng = _rng(seed, 200 + stream)
        sizes = _sizes(srng, n, size_range)
        has_person = np.zeros(n, bool)
        has_person[srng.choice(n, n_person, replace=False)] = True
        (root / split).mkdir(parents=True, exist_ok=True)
        _write_coco_split(root / "annotations" / f"instances_{split}.json", root, split, stream, seed,
                          split_ids, sizes, has_person, sink, params)
    sink.finish()
    return root


# ----------------------------------------------------------------------------------------------- CUHK-SYSU

def _idlocate(box) -> np.ndarray:
    """[x, y, w, h] as MATLAB's integer-valued doubles come back from scipy: uint8 if it fits, else uint16."""
    arr = np.asarray([box], dtype=np.int64)
    return arr.astype(np.uint8 if arr.max() <= 255 else np.uint16)


def _small_uint(value: int) -> np.ndarray:
    return np.array([[value]], dtype=np.uint8 if value <= 255 else np.uint16)


def _struct(shape, names: Sequence[str]) -> np.ndarray:
    return np.empty(shape, dtype=[(n, object) for n in names])


def _scene(appearances) -> np.ndarray:
    scene = _struct((1, len(appearances)), ("imname", "idlocate", "ishard"))
    for k, (imname, box, hard) in enumerate(appearances):
        scene[0, k] = (imname, _idlocate(box), _small_uint(hard))
    return scene


def _identity(name: str, appearances) -> tuple:
    return name, _small_uint(len(appearances)), _scene(appearances)


def _savemat(path: Path, key: str, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    scipy.io.savemat(buf, {key: value}, do_compression=True)
    data = bytearray(buf.getvalue())
    # the 116-byte text header carries the wall-clock time: fix it so equal seeds give equal bytes
    data[:116] = _MAT_HEADER.ljust(116).encode("ascii")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(bytes(data))
    os.replace(tmp, path)


def write_cuhk(root: str | Path, *, seed: int = 0, images: int = 160, boxes: int | None = None,
               pool_images: int = 60, identities: int | None = None, size_range=((480, 360), (640, 480)),
               person_height=(0.2, 0.45), gallery_size: int = 50, zero_size_fraction: float = 0.01,
               outside_fraction: float = 0.03, hard_fraction: float = 0.05, cheap_images: bool = False) -> Path:
    """Write a CUHK-SYSU layout under ``root`` (``Image/SSM`` + the ``annotation`` folder); returns ``root``.

    ``boxes`` person boxes (default 3 per image, at least one per image) are spread over the images; a
    share of them belongs to ``identities`` labelled people, each seen in 2-4 images of one split
    (``pool_images`` images form the test split, like pool.mat).
    """
    root = Path(root)
    boxes = 3 * images if boxes is None else boxes
    if images < 2 or not 1 <= pool_images < images or boxes < images:
        raise PersondetError(f"CUHK-SYSU demo: need images >= 2, 1 <= pool_images < images, boxes >= images "
                             f"(got images={images}, pool_images={pool_images}, boxes={boxes})")
    identities = max(2, round(boxes * 0.0877)) if identities is None else identities
    rng = _rng(seed, 300)
    names = [f"s{k}.jpg" for k in range(1, images + 1)]
    sizes = _sizes(rng, images, size_range)
    counts = 1 + rng.multinomial(boxes - images, np.ones(images) / images)
    pool = np.sort(rng.choice(images, pool_images, replace=False))
    in_pool = np.zeros(images, bool)
    in_pool[pool] = True

    # boxes per image: [x, y, w, h] ints, hard flag, identity index or -1
    per_image: list[list[list]] = []
    n_zero = max(1, round(boxes * zero_size_fraction))
    n_out = max(1, round(boxes * outside_fraction))
    special = rng.permutation(boxes)[: n_zero + n_out]
    zero_set, out_set = set(special[:n_zero].tolist()), set(special[n_zero:].tolist())
    b = 0
    for i in range(images):
        W, H = sizes[i]
        placed, rows = [], []
        for _ in range(counts[i]):
            if b in zero_set:
                x, y = int(rng.integers(0, W - 20)), int(rng.integers(0, H - 20))
                box = [x, y, 0, int(rng.integers(0, 40))] if rng.random() < 0.5 else [x, y, int(rng.integers(0, 20)), 0]
            else:
                box = _place(rng, lambda: _person_box(rng, W, H, person_height, allow_outside=b in out_set), placed)
                box = [int(round(v)) for v in box]
                placed.append(box)
            hard = int(box[2] > 0 and box[3] > 0 and rng.random() < hard_fraction)
            rows.append([box, hard, -1])
            b += 1
        per_image.append(rows)

    # labelled identities: each seen in 2-4 distinct images of one split, on drawable boxes
    looks, appearances = [], []
    free = {split: [(i, k) for i in range(images) if in_pool[i] == split
                    for k, row in enumerate(per_image[i]) if row[0][2] > 0 and row[0][3] > 0]
            for split in (False, True)}
    for split in free:
        rng.shuffle(free[split])
    for p in range(identities):
        split = p % 3 == 2  # about a third of the identities are test identities
        slots, used_images = [], set()
        want = int(rng.integers(2, 5))
        for slot in list(free[split]):
            if slot[0] not in used_images:
                slots.append(slot)
                used_images.add(slot[0])
                free[split].remove(slot)
                if len(slots) == want:
                    break
        if len(slots) < 2:
            free[split].extend(slots)
            continue
        for i, k in slots:
            per_image[i][k][2] = len(looks)
        appearances.append(sorted(slots))
        looks.append((_random_look(rng), split))

    sink = _ImageSink(root, cheap_images)
    for i, name in enumerate(names):
        W, H = (int(v) for v in sizes[i])
        rows = per_image[i]

        def render(rows=rows, W=W, H=H, i=i):
            r = _rng(seed, 302, i)
            img = _background(r, W, H)
            draw = ImageDraw.Draw(img)
            _draw_clutter(r, draw, W, H, int(r.integers(4, 10)))
            for _ in range(int(r.integers(1, 4))):  # unannotated non-person objects
                _draw_blob(draw, _blob_polygon(r, _other_box(r, W, H, (0.05, 0.2)), 10), _colour(r))
            for box, _, ident in rows:
                if box[2] > 0 and box[3] > 0:
                    _draw_person(draw, box, looks[ident][0] if ident >= 0 else _random_look(r))
            return img

        sink.write(root / "Image" / "SSM" / name, W, H, render)
    sink.finish()

    ann = root / "annotation"
    img = _struct((1, images), ("imname", "nAppear", "box"))
    for i, name in enumerate(names):
        box = _struct((1, len(per_image[i])), ("idlocate", "ishard"))
        for k, (xywh, hard, _) in enumerate(per_image[i]):
            box[0, k] = (_idlocate(xywh), _small_uint(hard))
        img[0, i] = (name, _small_uint(len(per_image[i])), box)
    _savemat(ann / "Images.mat", "Img", img)

    def apps(p):
        return [(names[i], per_image[i][k][0], per_image[i][k][1]) for i, k in appearances[p]]

    person = _struct((1, len(looks)), ("idname", "nAppear", "scene"))
    for p in range(len(looks)):
        person[0, p] = _identity(f"p{p + 1}", apps(p))
    _savemat(ann / "Person.mat", "Person", person)

    pool_cell = np.empty((pool_images, 1), dtype=object)
    for r, i in enumerate(pool.tolist()):
        pool_cell[r, 0] = names[i]
    _savemat(ann / "pool.mat", "pool", pool_cell)

    train_ids = [p for p in range(len(looks)) if not looks[p][1]]
    train = np.empty((len(train_ids), 1), dtype=object)
    for r, p in enumerate(train_ids):
        one = _struct((1, 1), ("idname", "nAppear", "scene"))
        one[0, 0] = _identity(f"p{p + 1}", apps(p))
        train[r, 0] = one
    _savemat(ann / "test" / "train_test" / "Train.mat", "Train", train)

    test_ids = [p for p in range(len(looks)) if looks[p][1]]
    g = min(gallery_size, pool_images - 1)
    test = _struct((1, len(test_ids)), ("Query", "Gallery"))
    grng = _rng(seed, 303)
    for r, p in enumerate(test_ids):
        (qname, qbox, qhard), *rest = apps(p)
        query = _struct((1, 1), ("imname", "idlocate", "ishard", "idname"))
        query[0, 0] = (qname, _idlocate(qbox), _small_uint(qhard), f"p{p + 1}")
        shown = {n for n, _, _ in rest} | {qname}
        negatives = [names[i] for i in pool.tolist() if names[i] not in shown]
        grng.shuffle(negatives)
        entries = [(n, _idlocate(bx), _small_uint(h)) for n, bx, h in rest]
        empty = np.zeros((1, 0))
        entries += [(n, empty, empty) for n in negatives[: max(0, g - len(entries))]]
        gallery = _struct((1, len(entries)), ("imname", "idlocate", "ishard"))
        for k, e in enumerate(entries):
            gallery[0, k] = e
        test[0, r] = (query, gallery)
    _savemat(ann / "test" / "train_test" / "TestG50.mat", "TestG50", test)
    return root


# ------------------------------------------------------------------------------------------------ in-house

INHOUSE_CATEGORIES = ({"id": 1, "name": "vehicle", "supercategory": "object"},
                      {"id": 3, "name": "pedestrian", "supercategory": "human"})
INHOUSE_PERSON_ID = 3


def write_inhouse(root: str | Path, *, seed: int = 0, images: int = 80, person_fraction: float = 0.85,
                  size_range=((400, 300), (560, 420)), person_height=(0.25, 0.6), persons=(1, 3),
                  cheap_images: bool = False) -> Path:
    """Write ``root/annotations.json`` and ``root/images/cam<k>/...`` (PNG and JPEG); returns ``root``."""
    root = Path(root)
    rng = _rng(seed, 400)
    sizes = _sizes(rng, images, size_range)
    has_person = np.zeros(images, bool)
    has_person[rng.choice(images, int(round(images * person_fraction)), replace=False)] = True
    sink = _ImageSink(root, cheap_images)
    out_images, out_anns = [], []
    for i in range(images):
        W, H = (int(v) for v in sizes[i])
        r = _rng(seed, 401, i)
        file_name = f"cam{i % 3 + 1}/{i + 1:06d}." + ("png" if i % 4 == 1 else "jpg")
        image_id = 1000 + 7 * i
        out_images.append({"id": image_id, "file_name": file_name, "width": W, "height": H})
        shapes, placed = [], []
        n_person = int(r.integers(persons[0], persons[1] + 1)) if has_person[i] else 0
        for _ in range(n_person):
            box = _place(r, lambda: _person_box(r, W, H, person_height), placed)
            placed.append(box)
            shapes.append(("person", box, _random_look(r)))
        for _ in range(int(r.integers(0, 2))):
            box = _place(r, lambda: _other_box(r, W, H), placed)
            placed.append(box)
            shapes.append(("blob", _blob_polygon(r, box, 10), _colour(r)))
        for kind, geom, _ in shapes:
            if kind == "person":
                bbox = [round(float(v), 1) for v in geom]
                cat = INHOUSE_PERSON_ID
            else:
                x0, y0 = geom.min(axis=0)
                x1, y1 = geom.max(axis=0)
                bbox, cat = [round(float(x0), 1), round(float(y0), 1), round(float(x1 - x0), 1),
                             round(float(y1 - y0), 1)], 1
            ann = {"id": len(out_anns) + 1, "image_id": image_id, "category_id": cat, "bbox": bbox,
                   "area": round(bbox[2] * bbox[3], 2), "iscrowd": 0}
            k = len(out_anns)
            if k % 7 == 3:  # in-house exports are not always complete
                del ann["area"]
            if k % 5 == 2:
                del ann["iscrowd"]
            out_anns.append(ann)
        sink.write(root / "images" / file_name, W, H, lambda: _render_scene(r, W, H, shapes))
    sink.finish()
    root.mkdir(parents=True, exist_ok=True)
    write_dataset({"images": out_images, "annotations": out_anns, "categories": list(INHOUSE_CATEGORIES)},
                  root / "annotations.json")
    return root


# --------------------------------------------------------------------------------------------- demo tree

def _demo_home(root) -> Path:
    if root is not None:
        return Path(root)
    env = os.environ.get("PERSONDET_DEMO_HOME")
    return Path(env) if env else Path.home() / ".cache" / "persondet" / "demo"


def _demo_data(target: Path) -> DemoData:
    return DemoData(coco_root=target / "coco", cuhk_root=target / "cuhk",
                    inhouse_annotations=target / "inhouse" / "annotations.json",
                    inhouse_images=target / "inhouse" / "images")


def _is_complete(target: Path) -> bool:
    marker = target / MARKER
    return marker.is_file() and marker.read_text().strip() == FORMAT_VERSION


def build_demo_tree(target: str | Path, seed: int = 0, profile: DemoProfile | None = None) -> DemoData:
    """Write coco/, cuhk/ and inhouse/ into ``target`` atomically (temp sibling, then rename); reuse if complete."""
    target = Path(target).absolute()
    profile = profile or DemoProfile()
    if _is_complete(target):
        return _demo_data(target)
    if target.exists() and any(target.iterdir()):
        raise PersondetError(f"{target}: exists, is not empty and holds no complete demo data; "
                             "remove it or choose another directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        cheap = profile.cheap_images
        write_coco(tmp / "coco", seed=seed, train_images=profile.coco_train_images,
                   val_images=profile.coco_val_images, person_fraction=profile.coco_person_fraction,
                   cheap_images=cheap)
        write_cuhk(tmp / "cuhk", seed=seed, images=profile.cuhk_images, pool_images=profile.cuhk_pool_images,
                   cheap_images=cheap)
        write_inhouse(tmp / "inhouse", seed=seed, images=profile.inhouse_images, cheap_images=cheap)
        (tmp / MARKER).write_text(FORMAT_VERSION + "\n")
        if target.exists():
            target.rmdir()  # empty (checked above)
        try:
            os.rename(tmp, target)
        except OSError:
            if not _is_complete(target):  # another process did not finish it either
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _demo_data(target)


def ensure_demo_data(seed: int = 0, root: str | Path | None = None, profile: DemoProfile | None = None) -> DemoData:
    """The built-in demo data for ``seed``, written once under ``root`` (default ``$PERSONDET_DEMO_HOME`` or
    ``~/.cache/persondet/demo``) / ``seed<seed>`` (plus ``-<profile name>`` for a non-default profile)."""
    profile = profile or DemoProfile()
    name = f"seed{seed}" + ("" if profile.name == "default" else f"-{profile.name}")
    return build_demo_tree(_demo_home(root) / name, seed=seed, profile=profile)


# --------------------------------------------------------------------------------------------------- CLI

def _main(argv: Sequence[str] | None = None) -> None:
    d = DemoProfile()
    p = argparse.ArgumentParser(prog="persondet-demo-data", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="directory to write coco/, cuhk/ and inhouse/ into")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--coco-images", type=int, default=d.coco_train_images, help="COCO train2017 images")
    p.add_argument("--coco-val-images", type=int, default=d.coco_val_images)
    p.add_argument("--cuhk-images", type=int, default=d.cuhk_images)
    p.add_argument("--cuhk-pool-images", type=int, default=None, help="test pool size (default: 3/8 of the images)")
    p.add_argument("--inhouse-images", type=int, default=d.inhouse_images)
    p.add_argument("--cheap-images", action="store_true", help="solid-colour hard-linked images (benchmarks)")
    args = p.parse_args(argv)
    for flag in ("coco_images", "coco_val_images", "cuhk_images", "inhouse_images"):
        if getattr(args, flag) < 0:
            raise PersondetError(f"--{flag.replace('_', '-')}: must be >= 0, got {getattr(args, flag)}")
    pool = args.cuhk_pool_images if args.cuhk_pool_images is not None else max(1, args.cuhk_images * 3 // 8)
    profile = replace(d, name="cli", coco_train_images=args.coco_images, coco_val_images=args.coco_val_images,
                      cuhk_images=args.cuhk_images, cuhk_pool_images=pool, inhouse_images=args.inhouse_images,
                      cheap_images=args.cheap_images)
    data = build_demo_tree(args.out, seed=args.seed, profile=profile)
    print(f"COCO 2017 layout:  {data.coco_root}")
    print(f"CUHK-SYSU layout:  {data.cuhk_root}")
    print(f"in-house test set: {data.inhouse_annotations} (images in {data.inhouse_images})")


def cli(argv: Sequence[str] | None = None) -> int:
    from persondet.cli import run_cli

    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(cli())
