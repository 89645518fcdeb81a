"""Describe a prepared set: counts and relative person size per source, a size plot, annotation checks.

``objects`` counts persons: crowd regions (``iscrowd=1``, one box around a group of people) are not a
person each, so they are left out of ``objects`` and ``avg_rel_size`` and counted as ``crowd_regions``.
``avg_rel_size`` is the mean over objects of box pixel area (w * h) / image pixel area (width * height).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterable

from persondet.datasets import image_path, recorded_roots


def relative_sizes(dataset: dict) -> dict[str, list[float]]:
    """Per source: box area / image area of every non-crowd person."""
    images = {im["id"]: im for im in dataset["images"]}
    sizes: dict[str, list[float]] = {im.get("source", "coco"): [] for im in dataset["images"]}
    for ann in dataset["annotations"]:
        if ann.get("iscrowd", 0):
            continue
        image = images[ann["image_id"]]
        _, _, w, h = ann["bbox"]
        sizes[image.get("source", "coco")].append(w * h / (image["width"] * image["height"]))
    return sizes


def dataset_stats(dataset: dict, sizes: dict[str, list[float]] | None = None) -> dict[str, dict]:
    """{source: {images, objects, avg_rel_size, crowd_regions}, ..., "merged": {...}}.

    ``sizes``: ``relative_sizes(dataset)`` when the caller already has it.
    """
    sizes = relative_sizes(dataset) if sizes is None else sizes
    source_of = {im["id"]: im.get("source", "coco") for im in dataset["images"]}
    images = Counter(source_of.values())
    crowd = Counter(source_of[ann["image_id"]] for ann in dataset["annotations"] if ann.get("iscrowd", 0))
    stats = {s: _row(images[s], sizes[s], crowd[s]) for s in sizes}
    stats["merged"] = _row(sum(images.values()), [v for s in sizes for v in sizes[s]], sum(crowd.values()))
    return stats


def _row(n_images: int, rel: list[float], crowd: int) -> dict:
    return {"images": n_images, "objects": len(rel),
            "avg_rel_size": (sum(rel) / len(rel)) if rel else 0.0, "crowd_regions": crowd}


def stats_markdown(stats: dict[str, dict]) -> str:
    lines = ["| set | images | objects (persons) | avg_rel_size | crowd regions |", "|---|---|---|---|---|"]
    for name, row in stats.items():
        lines.append(f"| {name} | {row['images']} | {row['objects']} | {row['avg_rel_size']:.5f} | "
                     f"{row['crowd_regions']} |")
    return "\n".join(lines) + "\n\nobjects: persons, crowd regions excluded; avg_rel_size: mean of box area / " \
                               "image area over objects.\n"


def write_stats(stats: dict[str, dict], json_path: Path, md_path: Path) -> None:
    json_path.write_text(json.dumps(stats, indent=2, sort_keys=True))
    md_path.write_text(stats_markdown(stats))


def plot_relative_sizes(sizes: dict[str, list[float]], path: Path) -> Path:
    """Histogram of log10(box area / image area) per source, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4))
    values = [v for s in sizes.values() for v in s if v > 0]
    bins = np.linspace(np.log10(min(values)), np.log10(max(values)) + 1e-9, 41) if values else 10
    for source, rel in sizes.items():
        rel = np.asarray([v for v in rel if v > 0])
        if rel.size:
            ax.hist(np.log10(rel), bins=bins, histtype="step", linewidth=1.6, density=True,
                    label=f"{source} (n={rel.size}, mean={rel.mean():.4f})")
    ax.set_xlabel("log10(box area / image area)")
    ax.set_ylabel("density")
    ax.set_title("Relative person size per source")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def draw_checks(dataset: dict, out_dir: Path, per_source: int = 4) -> list[Path]:
    """Boxes drawn on ``per_source`` images per source, spread over the set: checks/<source>_<k>.jpg.

    Green: person, orange: hard (CUHK-SYSU ``ishard``), red: crowd region.
    """
    from PIL import Image, ImageDraw

    out_dir.mkdir(parents=True, exist_ok=True)
    by_image: dict[int, list[dict]] = {}
    for ann in dataset["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    written, roots = [], recorded_roots(dataset)
    for source, chosen in _pick(dataset["images"], per_source).items():
        for k, image in enumerate(chosen):
            with Image.open(image_path(image, roots)) as im:
                canvas = im.convert("RGB")
            draw = ImageDraw.Draw(canvas)
            width = max(2, round(max(canvas.size) / 300))
            for ann in by_image.get(image["id"], []):
                x, y, w, h = ann["bbox"]
                color = (255, 0, 0) if ann.get("iscrowd") else (255, 160, 0) if ann.get("ishard") else (0, 255, 0)
                draw.rectangle([x, y, x + w, y + h], outline=color, width=width)
            path = out_dir / f"{source}_{k}.jpg"
            canvas.save(path, quality=85)
            written.append(path)
    return written


def _pick(images: Iterable[dict], per_source: int) -> dict[str, list[dict]]:
    by_source: dict[str, list[dict]] = {}
    for image in images:
        by_source.setdefault(image.get("source", "coco"), []).append(image)
    picked = {}
    for source, items in by_source.items():
        n = min(per_source, len(items))
        picked[source] = [items[(i * len(items)) // n] for i in range(n)] if n else []
    return picked
