"""CUHK-SYSU demo data: Image/SSM JPEGs and the annotation folder's .mat files (Images, Person, pool, Train,
TestG50) encoded as scipy reads the real ones back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import ImageDraw

from persondet.errors import PersondetError
from persondet.synth.draw import (ImageSink, background, blob_polygon, draw_blob, draw_clutter, draw_person,
                                  other_box, person_box, place_box, random_colour, random_look, random_sizes,
                                  stream_rng)
from persondet.synth.mat import mat_struct, savemat, small_uint

def _idlocate(box) -> np.ndarray:
    """[x, y, w, h] as MATLAB's integer-valued doubles come back from scipy: uint8 if it fits, else uint16."""
    arr = np.asarray([box], dtype=np.int64)
    return arr.astype(np.uint8 if arr.max() <= 255 else np.uint16)


def _scene(appearances) -> np.ndarray:
    scene = mat_struct((1, len(appearances)), ("imname", "idlocate", "ishard"))
    for k, (imname, box, hard) in enumerate(appearances):
        scene[0, k] = (imname, _idlocate(box), small_uint(hard))
    return scene


def _identity(name: str, appearances) -> tuple:
    return name, small_uint(len(appearances)), _scene(appearances)


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
    rng = stream_rng(seed, 300)
    names = [f"s{k}.jpg" for k in range(1, images + 1)]
    sizes = random_sizes(rng, images, size_range)
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
                box = place_box(rng, lambda: person_box(rng, W, H, person_height, allow_outside=b in out_set), placed)
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
        looks.append((random_look(rng), split))

    sink = ImageSink(root, cheap_images)
    for i, name in enumerate(names):
        W, H = (int(v) for v in sizes[i])
        rows = per_image[i]

        def render(rows=rows, W=W, H=H, i=i):
            r = stream_rng(seed, 302, i)
            img = background(r, W, H)
            draw = ImageDraw.Draw(img)
            draw_clutter(r, draw, W, H, int(r.integers(4, 10)))
            for _ in range(int(r.integers(1, 4))):  # unannotated non-person objects
                draw_blob(draw, blob_polygon(r, other_box(r, W, H, (0.05, 0.2)), 10), random_colour(r))
            for box, _, ident in rows:
                if box[2] > 0 and box[3] > 0:
                    draw_person(draw, box, looks[ident][0] if ident >= 0 else random_look(r))
            return img

        sink.write(root / "Image" / "SSM" / name, W, H, render)
    sink.finish()

    ann = root / "annotation"
    img = mat_struct((1, images), ("imname", "nAppear", "box"))
    for i, name in enumerate(names):
        box = mat_struct((1, len(per_image[i])), ("idlocate", "ishard"))
        for k, (xywh, hard, _) in enumerate(per_image[i]):
            box[0, k] = (_idlocate(xywh), small_uint(hard))
        img[0, i] = (name, small_uint(len(per_image[i])), box)
    savemat(ann / "Images.mat", "Img", img)

    def apps(p):
        return [(names[i], per_image[i][k][0], per_image[i][k][1]) for i, k in appearances[p]]

    person = mat_struct((1, len(looks)), ("idname", "nAppear", "scene"))
    for p in range(len(looks)):
        person[0, p] = _identity(f"p{p + 1}", apps(p))
    savemat(ann / "Person.mat", "Person", person)

    pool_cell = np.empty((pool_images, 1), dtype=object)
    for r, i in enumerate(pool.tolist()):
        pool_cell[r, 0] = names[i]
    savemat(ann / "pool.mat", "pool", pool_cell)

    train_ids = [p for p in range(len(looks)) if not looks[p][1]]
    train = np.empty((len(train_ids), 1), dtype=object)
    for r, p in enumerate(train_ids):
        one = mat_struct((1, 1), ("idname", "nAppear", "scene"))
        one[0, 0] = _identity(f"p{p + 1}", apps(p))
        train[r, 0] = one
    savemat(ann / "test" / "train_test" / "Train.mat", "Train", train)

    test_ids = [p for p in range(len(looks)) if looks[p][1]]
    g = min(gallery_size, pool_images - 1)
    test = mat_struct((1, len(test_ids)), ("Query", "Gallery"))
    grng = stream_rng(seed, 303)
    for r, p in enumerate(test_ids):
        (qname, qbox, qhard), *rest = apps(p)
        query = mat_struct((1, 1), ("imname", "idlocate", "ishard", "idname"))
        query[0, 0] = (qname, _idlocate(qbox), small_uint(qhard), f"p{p + 1}")
        shown = {n for n, _, _ in rest} | {qname}
        negatives = [names[i] for i in pool.tolist() if names[i] not in shown]
        grng.shuffle(negatives)
        entries = [(n, _idlocate(bx), small_uint(h)) for n, bx, h in rest]
        empty = np.zeros((1, 0))
        entries += [(n, empty, empty) for n in negatives[: max(0, g - len(entries))]]
        gallery = mat_struct((1, len(entries)), ("imname", "idlocate", "ishard"))
        for k, e in enumerate(entries):
            gallery[0, k] = e
        test[0, r] = (query, gallery)
    savemat(ann / "test" / "train_test" / "TestG50.mat", "TestG50", test)
    return root
