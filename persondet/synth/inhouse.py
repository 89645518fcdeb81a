"""The "in-house" demo test set: COCO format, person category ``pedestrian`` (id 3), PNG and JPEG in sub-folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from persondet.formats.merge import write_dataset
from persondet.synth.draw import (ImageSink, blob_polygon, other_box, person_box, place_box, random_colour,
                                  random_look, random_sizes, render_scene, stream_rng)

INHOUSE_CATEGORIES = ({"id": 1, "name": "vehicle", "supercategory": "object"},
                      {"id": 3, "name": "pedestrian", "supercategory": "human"})
INHOUSE_PERSON_ID = 3


def write_inhouse(root: str | Path, *, seed: int = 0, images: int = 80, person_fraction: float = 0.85,
                  size_range=((400, 300), (560, 420)), person_height=(0.25, 0.6), persons=(1, 3),
                  cheap_images: bool = False) -> Path:
    """Write ``root/annotations.json`` and ``root/images/cam<k>/...`` (PNG and JPEG); returns ``root``."""
    root = Path(root)
    rng = stream_rng(seed, 400)
    sizes = random_sizes(rng, images, size_range)
    has_person = np.zeros(images, bool)
    has_person[rng.choice(images, int(round(images * person_fraction)), replace=False)] = True
    sink = ImageSink(root, cheap_images)
    out_images, out_anns = [], []
    for i in range(images):
        W, H = (int(v) for v in sizes[i])
        r = stream_rng(seed, 401, i)
        file_name = f"cam{i % 3 + 1}/{i + 1:06d}." + ("png" if i % 4 == 1 else "jpg")
        image_id = 1000 + 7 * i
        out_images.append({"id": image_id, "file_name": file_name, "width": W, "height": H})
        shapes, placed = [], []
        n_person = int(r.integers(persons[0], persons[1] + 1)) if has_person[i] else 0
        for _ in range(n_person):
            box = place_box(r, lambda: person_box(r, W, H, person_height), placed)
            placed.append(box)
            shapes.append(("person", box, random_look(r)))
        for _ in range(int(r.integers(0, 2))):
            box = place_box(r, lambda: other_box(r, W, H), placed)
            placed.append(box)
            shapes.append(("blob", blob_polygon(r, box, 10), random_colour(r)))
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
        sink.write(root / "images" / file_name, W, H, lambda: render_scene(r, W, H, shapes))
    sink.finish()
    root.mkdir(parents=True, exist_ok=True)
    write_dataset({"images": out_images, "annotations": out_anns, "categories": list(INHOUSE_CATEGORIES)},
                  root / "annotations.json")
    return root
