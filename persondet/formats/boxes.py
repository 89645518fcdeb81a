"""The box rules every reader applies (docs/DATA.md "Boxes"): refuse corrupt values, drop empty boxes, clip.

A value that is not finite or lies beyond ``MAX_COORDINATE`` pixels is corrupt data and stops ``prepare``;
a box with w <= 0 or h <= 0 is dropped (``dropped_boxes``), as the public loaders do; a box running past
the image is clipped to it (``clipped_boxes``) and dropped when nothing is left (``outside_boxes``).
Clipped boxes have w * h <= width * height, so relative sizes stay in (0, 1].  The rules work on whole
arrays at once: a COCO train2017 file has 260,000 person boxes.
"""

from __future__ import annotations

import math

import numpy as np

# 15 times the largest side a JPEG can have (65,535 px): a coordinate beyond it is not a box of an image.
MAX_COORDINATE = 1e6
COUNT_KEYS = ("dropped_boxes", "clipped_boxes", "outside_boxes")


def box_is_sane(x: float, y: float, w: float, h: float) -> bool:
    """All four values finite and within ``MAX_COORDINATE`` pixels of 0."""
    return all(math.isfinite(v) and -MAX_COORDINATE <= v <= MAX_COORDINATE for v in (x, y, w, h))


def first_insane(boxes: np.ndarray) -> int | None:
    """The first row of an (n, 4) array with a value that is not finite or beyond ``MAX_COORDINATE``."""
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(boxes) <= MAX_COORDINATE).all(axis=1)  # NaN compares False
    return int(np.argmax(bad)) if bad.any() else None


def clip_boxes(boxes: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Sane (n, 4) [x, y, w, h] boxes and (n, 2) image (width, height) -> (boxes clipped to their image,
    mask of the boxes kept, counts of ``COUNT_KEYS``).  Unclipped boxes keep their values bit for bit."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    sizes = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    x, y, w, h = boxes.T
    empty = (w <= 0) | (h <= 0)
    x1, y1 = np.maximum(x, 0.0), np.maximum(y, 0.0)
    x2, y2 = np.minimum(x + w, sizes[:, 0]), np.minimum(y + h, sizes[:, 1])
    outside = ~empty & ((x2 <= x1) | (y2 <= y1))
    kept = ~empty & ~outside
    changed = kept & ((x1 != x) | (y1 != y) | (x2 != x + w) | (y2 != y + h))
    clipped = np.where(changed[:, None], np.stack([x1, y1, x2 - x1, y2 - y1], axis=1), boxes)
    counts = {"dropped_boxes": int(empty.sum()), "clipped_boxes": int(changed.sum()),
              "outside_boxes": int(outside.sum())}
    return clipped, kept, counts
