"""CrowdHuman demo data: ``annotation_{train,val}.odgt`` (one JSON object per line) and ``Images/<ID>.jpg``.

Each line is ``{"ID": "<number>,<hex>", "gtboxes": [...]}``; a gtbox has ``fbox`` (full body: often past the
image border), ``tag``, ``hbox`` (head), ``extra`` (``box_id``, ``occ``, sometimes ``ignore``), ``vbox``
(the visible part inside the image) and ``head_attr``, in the key order of the real files.  Crowded scenes:
overlapping people, nearer ones drawn over farther ones, some hidden from below (``vbox`` shorter than the
full box, ``extra.occ`` = 1), a few ignored persons (``extra.ignore`` = 1) and
``mask`` regions (groups of people, person-like things: ``extra.ignore`` = 1, empty ``head_attr``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import ImageDraw

from persondet.synth.draw import (ImageSink, background, draw_clutter, draw_crowd, draw_person, progress,
                                  random_colour, random_look, random_sizes, stream_rng)


def write_crowdhuman(root: str | Path, *, seed: int = 0, train_images: int = 24, val_images: int = 8,
                     size_range=((480, 320), (640, 480)), persons=(4, 14), mask_fraction: float = 0.4,
                     ignored_fraction: float = 0.05, cheap_images: bool = False) -> Path:
    """Write the CrowdHuman layout under ``root``; returns ``root``.

    Each image holds ``persons`` people (a uniform range), some of them ignored (``ignored_fraction``),
    and with probability ``mask_fraction`` one or two mask regions.
    """
    root = Path(root)
    sink = ImageSink(root, cheap_images)
    (root / "Images").mkdir(parents=True, exist_ok=True)
    for split, stream, n in (("train", 1, train_images), ("val", 2, val_images)):
        sizes = random_sizes(stream_rng(seed, 600, stream), n, size_range)
        path = root / f"annotation_{split}.odgt"
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w") as f:
            for i in progress(range(n), f"CrowdHuman {split}"):
                W, H = (int(v) for v in sizes[i])
                rng = stream_rng(seed, 600 + stream, i)
                image_id = f"{100000 * stream + i:06d},{rng.bytes(8).hex()[:15]}"
                gtboxes = _gtboxes(rng, W, H, persons, mask_fraction, ignored_fraction)
                f.write(json.dumps({"ID": image_id, "gtboxes": gtboxes}) + "\n")
                sink.write(root / "Images" / f"{image_id}.jpg", W, H,
                           lambda rng=rng, W=W, H=H, gtboxes=gtboxes: _render(rng, W, H, gtboxes))
        os.replace(tmp, path)
    sink.finish()
    return root


def _gtboxes(rng: np.random.Generator, W: int, H: int, persons, mask_fraction: float,
             ignored_fraction: float) -> list[dict]:
    boxes = []
    for _ in range(int(rng.integers(1, 3)) if rng.random() < mask_fraction else 0):
        w, h = int(rng.uniform(0.1, 0.3) * W), int(rng.uniform(0.1, 0.3) * H)
        region = [int(rng.integers(0, W - w)), int(rng.integers(0, H - h)), w, h]
        boxes.append({"fbox": region, "tag": "mask", "hbox": region, "extra": {"ignore": 1}, "vbox": region,
                      "head_attr": {}})
    people = []
    for _ in range(int(rng.integers(persons[0], persons[1] + 1))):
        ignored = rng.random() < ignored_fraction
        h = rng.uniform(0.06, 0.15) * H if ignored else rng.uniform(0.2, 0.8) * H
        w = h * rng.uniform(0.35, 0.5)
        x, y = rng.uniform(-0.3 * w, W - 0.7 * w), rng.uniform(-0.1 * h, H - 0.6 * h)
        people.append(([int(round(v)) for v in (x, y, w, h)], ignored))
    people.sort(key=lambda p: p[0][1] + p[0][3])  # far (higher bottom edge) first: drawn first, behind
    for box_id, (fbox, ignored) in enumerate(people):
        x, y, w, h = fbox
        vx, vy = max(x, 0), max(y, 0)
        vbox = [vx, vy, min(x + w, W) - vx, min(y + h, H) - vy]
        if not ignored and rng.random() < 0.3:  # the lower part hidden behind something
            vbox[3] = max(2, int(vbox[3] * rng.uniform(0.4, 0.85)))
        hbox = [int(round(x + 0.32 * w)), y, max(1, int(round(0.36 * w))), max(1, int(round(0.17 * h)))]
        extra = {"box_id": box_id, "occ": int(vbox != fbox)}
        if ignored:
            extra = {"ignore": 1}
        elif box_id % 3 == 0:
            extra["ignore"] = 0  # keys in extra are optional: present on some boxes only
        boxes.append({"fbox": fbox, "tag": "person", "hbox": hbox, "extra": extra, "vbox": vbox,
                      "head_attr": {"ignore": 0, "occ": 0, "unsure": 0}})
    return boxes


def _render(rng, W: int, H: int, gtboxes: list[dict]):
    img = background(rng, W, H)
    draw = ImageDraw.Draw(img)
    draw_clutter(rng, draw, W, H, int(rng.integers(2, 6)))
    for box in gtboxes:
        if box["tag"] == "mask":
            draw_crowd(rng, draw, box["fbox"])
        else:
            draw_person(draw, box["fbox"], random_look(rng))
            (_, y, _, h), (vx, vy, vw, vh) = box["fbox"], box["vbox"]
            if vy + vh < min(y + h, H):  # what hides the rest, drawn before the people in front
                draw.rectangle([vx - 4, vy + vh, vx + vw + 4, min(y + h, H)], fill=random_colour(rng, 40, 200),
                               outline=(10, 10, 10))
    return img
