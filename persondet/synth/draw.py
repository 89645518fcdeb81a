"""Shared pieces of the demo-data generators: seeded random streams, box placement, the stylised person
figure, backgrounds and clutter, and the image sink (real scenes or hard-linked solid-colour files)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# Person silhouette in box-relative (u, v) coordinates; it touches all four sides of the box.
SILHOUETTE = np.array([
    (0.32, 0.085), (0.38, 0.02), (0.5, 0.0), (0.62, 0.02), (0.68, 0.085), (0.62, 0.16), (0.8, 0.16),
    (1.0, 0.18), (1.0, 0.55), (0.82, 0.55), (0.8, 0.58), (0.76, 0.58), (0.76, 1.0), (0.52, 1.0),
    (0.5, 0.62), (0.48, 1.0), (0.24, 1.0), (0.24, 0.58), (0.2, 0.58), (0.18, 0.55), (0.0, 0.55),
    (0.0, 0.18), (0.2, 0.16), (0.38, 0.16),
])
_SKIN = ((241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172))


def stream_rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, *stream])


def random_sizes(rng: np.random.Generator, n: int, size_range, step: int = 16) -> np.ndarray:
    """``n`` (width, height) pairs on a grid of ``step`` pixels inside ``size_range`` ((wmin,hmin),(wmax,hmax))."""
    (w0, h0), (w1, h1) = size_range
    w = rng.integers(w0 // step, w1 // step + 1, n) * step
    # keep the aspect close to the range's, like real photos (mostly landscape)
    aspect = rng.uniform(h0 / w0 * 0.95, h1 / w1 * 1.05, n) if w1 else np.ones(n)
    h = np.clip(np.round(w * aspect / step) * step, h0, h1).astype(int)
    return np.stack([w, h], axis=1)


def person_box(rng, W, H, height_range, aspect=(0.35, 0.45), allow_outside=False):
    h = max(12.0, rng.uniform(*height_range) * H)
    w = max(5.0, h * rng.uniform(*aspect))
    w, h = min(w, W - 1.0), min(h, H - 1.0)
    if allow_outside:  # the figure runs past the right or bottom border
        return [W - w * rng.uniform(0.4, 0.8), rng.uniform(0, H - h), w, h] if rng.random() < 0.5 else \
            [rng.uniform(0, W - w), H - h * rng.uniform(0.6, 0.9), w, h]
    return [rng.uniform(0, W - w), rng.uniform(0, H - h), w, h]


def other_box(rng, W, H, rel=(0.08, 0.35)):
    w = rng.uniform(*rel) * W
    h = min(w / rng.uniform(0.9, 2.5), H - 1.0)
    return [rng.uniform(0, W - w), rng.uniform(0, H - h), w, h]


def _iou(a, b) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter + 1e-9)


def place_box(rng, make, placed, tries=8):
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


def blob_polygon(rng, box, points: int) -> np.ndarray:
    """A star-shaped blob inscribed in ``box`` and touching its four sides."""
    x, y, w, h = box
    t = np.sort(rng.uniform(0, 2 * np.pi, points))
    r = rng.uniform(0.75, 1.0, points)
    u, v = np.cos(t) * r, np.sin(t) * r
    u = (u - u.min()) / max(u.max() - u.min(), 1e-6)
    v = (v - v.min()) / max(v.max() - v.min(), 1e-6)
    return np.column_stack([x + u * w, y + v * h])


def background(rng, W: int, H: int) -> Image.Image:
    base = rng.integers(60, 200, 3)
    coarse = rng.normal(0, 28, (max(2, H // 24), max(2, W // 24), 3))
    coarse_img = Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8)).resize((W, H), Image.BILINEAR)
    arr = np.asarray(coarse_img, dtype=np.int16) - 128 + base + rng.normal(0, 10, (H, W, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def random_colour(rng, lo=0, hi=256) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(lo, hi, 3))


def draw_clutter(rng, draw: ImageDraw.ImageDraw, W, H, n):
    for _ in range(n):
        x, y = rng.uniform(0, W), rng.uniform(0, H)
        s = rng.uniform(0.03, 0.12) * W
        kind = rng.integers(3)
        if kind == 0:
            draw.ellipse([x, y, x + s, y + s * rng.uniform(0.5, 1.0)], fill=random_colour(rng))
        elif kind == 1:
            draw.line([x, y, x + rng.uniform(-2, 2) * s, y + rng.uniform(-1, 1) * s], fill=random_colour(rng),
                      width=int(rng.integers(1, 4)))
        else:
            draw.rectangle([x, y, x + s * 1.5, y + s * 0.4], fill=random_colour(rng))


def draw_blob(draw, polygon: np.ndarray, colour):
    draw.polygon([tuple(p) for p in polygon], fill=colour, outline=(20, 20, 20))


def draw_person(draw: ImageDraw.ImageDraw, box, look) -> None:
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


def random_look(rng):
    skin = _SKIN[int(rng.integers(len(_SKIN)))]
    return skin, random_colour(rng), random_colour(rng, 0, 140)


def draw_crowd(rng, draw, bbox):
    x, y, w, h = bbox
    for _ in range(int(rng.integers(5, 10))):
        ph = h * rng.uniform(0.6, 1.0)
        pw = ph * 0.4
        if pw >= w:
            continue
        draw_person(draw, [x + rng.uniform(0, w - pw), y + (h - ph) * rng.random(), pw, ph], random_look(rng))


class ImageSink:
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


def render_scene(rng, W, H, shapes, clutter=(2, 6)):
    img = background(rng, W, H)
    draw = ImageDraw.Draw(img)
    draw_clutter(rng, draw, W, H, int(rng.integers(clutter[0], clutter[1] + 1)))
    for kind, geom, look in shapes:
        if kind == "crowd":
            draw_crowd(rng, draw, geom)
        elif kind == "blob":
            draw_blob(draw, geom, look)
    for kind, geom, look in shapes:  # people on top, so their boxes stay tight and visible
        if kind == "person":
            draw_person(draw, geom, look)
    return img


def progress(items, desc: str):
    """A tqdm bar for long loops (full-scale benchmark trees); silent for demo-sized ones."""
    if len(items) < 5000:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="img", mininterval=5)
