"""CityPersons demo data: ``annotations/anno_{train,val}.mat`` as MATLAB writes them, PNG images under
``leftImg8bit/<split>/<city>/``.

The .mat is a 1 x N cell of 1 x 1 structs (``cityname``, ``im_name``, ``bbs``); ``bbs`` rows are
``[class_label, x1, y1, w, h, instance_id, x1_vis, y1_vis, w_vis, h_vis]`` stored as MATLAB does (class
double, smallest integer storage per image: uint16 with instance ids 24000+, int16 when a box starts left of
the image, uint8 for small ignore-only images; empty ``bbs`` for images without boxes).  Every label occurs:
0 ignore regions (people on posters), 1 pedestrians (full box aspect 0.41, some occluded from below, some
past the left or right border), 2 riders, 3 sitting persons, 4 other persons, 5 groups (visible box all
zeros, instance id 24, as in the real file).  Images are 512 x 256 by default, not Cityscapes' 2048 x 1024:
readers must take sizes from the images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import ImageDraw

from persondet.synth.draw import (ImageSink, background, draw_clutter, draw_crowd, draw_person, place_box,
                                  random_colour, random_look, stream_rng)
from persondet.synth.mat import save_matlab

CITIES = {"train": ("aachen", "bochum", "bremen", "cologne"), "val": ("frankfurt", "lindau", "munster")}
_HEADER = "MATLAB 5.0 MAT-file, Platform: persondet.synth, Created on: Tue Oct 03 09:16:29 2017"
_FIELDS = [("cityname", object), ("im_name", object), ("bbs", object)]
_ASPECT = 0.41  # CityPersons full-body boxes of pedestrians and riders have width = 0.41 height


def write_citypersons(root: str | Path, *, seed: int = 0, train_images: int = 24, val_images: int = 8,
                      size: tuple[int, int] = (512, 256), cheap_images: bool = False) -> Path:
    """Write the CityPersons layout for ``train`` and ``val`` under ``root``; returns ``root``."""
    root = Path(root)
    sink = ImageSink(root, cheap_images)
    W, H = size
    for split, stream, n in (("train", 1, train_images), ("val", 2, val_images)):
        cell = np.empty((1, n), dtype=object)
        for i in range(n):
            city = CITIES[split][i % len(CITIES[split])]
            name = f"{city}_{i:06d}_000019_leftImg8bit.png"
            rng = stream_rng(seed, 500 + stream, i)
            rows, occluders = _boxes(rng, i, W, H)
            entry = np.empty((1, 1), dtype=_FIELDS)
            entry[0, 0] = (city, name, np.array(rows, dtype=np.float64).reshape(-1, 10))
            cell[0, i] = entry
            sink.write(root / "leftImg8bit" / split / city / name, W, H,
                       lambda rng=rng, rows=rows, occluders=occluders: _render(rng, W, H, rows, occluders))
        save_matlab(root / "annotations" / f"anno_{split}.mat", f"anno_{split}_aligned", cell, _HEADER)
    sink.finish()
    return root


def _labels(rng: np.random.Generator, i: int) -> list[int]:
    if i == 0:
        return [0, 1, 1, 2, 3, 4, 5]  # every label in the first image of each split
    if i % 8 == 5:
        return []  # an empty bbs
    if i % 8 == 6:
        return [0] * int(rng.integers(1, 3))  # ignore regions only: no person, small values (uint8)
    labels = [1] * int(rng.integers(1, 5)) + [2] * int(rng.random() < 0.4) + [3] * int(rng.random() < 0.25)
    labels += [4] * int(rng.random() < 0.15) + [5] * int(rng.random() < 0.2) + [0] * int(rng.integers(0, 3))
    return sorted(labels, reverse=True)  # groups and riders placed first, ignore regions last


def _boxes(rng: np.random.Generator, i: int, W: int, H: int) -> tuple[list[list[int]], list[list[int]]]:
    """The ``bbs`` rows of image ``i`` and the occluders drawn over partly hidden pedestrians."""
    rows, occluders, placed = [], [], []
    ids = {1: 24000, 2: 25000}  # Cityscapes instance ids: class id (24 person, 25 rider) x 1000 + k
    edge = i % 8 == 3
    for label in _labels(rng, i):
        if label == 0 and i % 8 == 6:
            x, y, w, h = (int(v) for v in (rng.integers(0, 120), rng.integers(0, 120), rng.integers(12, 100),
                                           rng.integers(20, 100)))
        else:
            x, y, w, h = _place(rng, label, W, H, placed, edge=label == 1 and edge)
            edge = edge and label != 1  # only the image's first pedestrian
        placed.append([x, y, w, h])
        if label == 5:
            rows.append([5, x, y, w, h, 24, 0, 0, 0, 0])
            continue
        if label == 0:
            rows.append([0, x, y, w, h, 0, x, y, w, h])
            continue
        instance = ids[2 if label == 2 else 1]
        ids[2 if label == 2 else 1] += 1
        vx, vy = max(x, 0), max(y, 0)
        vw, vh = min(x + w, W) - vx, min(y + h, H) - vy
        if label == 1 and rng.random() < 0.35:  # hidden from below by a car or a wall
            vh = max(4, min(vh, int(h * rng.uniform(0.3, 0.9))))
            occluders.append([vx - 6, vy + vh, vw + 12, h - vh + 4])
        rows.append([label, x, y, w, h, instance, vx, vy, vw, vh])
    return rows, occluders


def _place(rng, label: int, W: int, H: int, placed, edge: bool) -> list[int]:
    def make():
        if label in (1, 2):
            h = rng.uniform(0.15, 0.75) * H
            w = h * _ASPECT
        elif label == 3:
            h = rng.uniform(0.12, 0.3) * H
            w = h * rng.uniform(0.6, 0.9)
        elif label == 5:
            w, h = rng.uniform(0.15, 0.3) * W, rng.uniform(0.2, 0.4) * H
        else:
            h = rng.uniform(0.12, 0.4) * H
            w = h * rng.uniform(0.4, 1.0)
        x, y = rng.uniform(0, W - w), rng.uniform(0.1 * H, H - h)
        if edge:  # starts left of the image (negative x1: int16 storage) or runs past the right border
            x = -w * rng.uniform(0.2, 0.5) if rng.random() < 0.7 else W - w * rng.uniform(0.5, 0.8)
        return [int(round(x)), int(round(y)), max(1, int(round(w))), max(1, int(round(h)))]

    return place_box(rng, make, placed)


def _render(rng, W: int, H: int, rows, occluders):
    img = background(rng, W, H)
    draw = ImageDraw.Draw(img)
    draw_clutter(rng, draw, W, H, int(rng.integers(2, 6)))
    for label, x, y, w, h, *_ in rows:
        if label == 0:  # a poster with a person on it: person-like, but to be ignored
            draw.rectangle([x, y, x + w - 1, y + h - 1], fill=random_colour(rng, 150, 256), outline=(40, 40, 40))
            draw_person(draw, [x + w * 0.3, y + h * 0.1, w * 0.4, h * 0.8], random_look(rng))
        elif label == 5:
            draw_crowd(rng, draw, [x, y, w, h])
    for label, x, y, w, h, *_ in rows:
        if label in (1, 2, 3, 4):
            draw_person(draw, [x, y, w, h], random_look(rng))
            if label == 2:  # a bicycle under the rider
                r = w * 0.35
                for cx in (x + r, x + w - r):
                    draw.ellipse([cx - r, y + h - 2 * r, cx + r, y + h], outline=(20, 20, 20), width=2)
    for x, y, w, h in occluders:
        draw.rectangle([x, y, x + w, y + h], fill=random_colour(rng, 40, 200), outline=(10, 10, 10))
    return img
