"""Benchmark: COCO metrics at evaluation scale, pycocotools (anchor) against the fastest backend.

A generated test set the size the issue names (5,000 images, about 36,000 ground-truth persons, 100
detections per image, crowd regions and small/medium/large persons) is scored by
``persondet.metrics.coco_metrics`` with ``backend="pycocotools"`` (the anchor) and
``backend="faster-coco-eval"``, each timed end to end (index, loadRes, evaluate, accumulate, summarize).
AP50 must agree to 1e-6 (else the script fails); the result is the ratio of wall-clock times.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

NAME = "evaluation"


def generated_test_set(n_images: int, n_persons: int, dets_per_image: int, seed: int = 0):
    """(ground-truth COCO dict, detections): persons of all sizes, ~1% crowd regions, jittered true
    positives (85% of persons found) with higher scores, the rest false positives."""
    import numpy as np

    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_persons, np.full(n_images, 1.0 / n_images))
    images, annotations, detections = [], [], []
    for image_id, count in enumerate(counts, start=1):
        width, height = int(rng.integers(480, 801)), int(rng.integers(360, 641))
        images.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": width, "height": height})
        area = np.exp(rng.uniform(np.log(60), np.log(0.3 * width * height), count))  # small..large
        aspect = rng.uniform(1.5, 3.0, count)  # height / width of a standing person
        w = np.minimum(np.sqrt(area / aspect), width - 2)
        h = np.minimum(w * aspect, height - 2)
        x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
        crowd = rng.random(count) < 0.01
        for i in range(count):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                "bbox": [float(x[i]), float(y[i]), float(w[i]), float(h[i])],
                                "area": float(w[i] * h[i]), "iscrowd": int(crowd[i])})
        found = (~crowd) & (rng.random(count) < 0.85)
        n_found = int(found.sum())
        jitter = rng.normal(0, 0.07, (n_found, 4)) * np.stack([w, h, w, h], 1)[found]
        boxes = np.stack([x, y, w, h], 1)[found] + jitter
        boxes[:, 2:] = np.maximum(boxes[:, 2:], 1.0)
        scores = rng.beta(5, 2, n_found)
        n_false = max(0, dets_per_image - n_found)
        fw, fh = rng.uniform(4, width / 3, n_false), rng.uniform(8, height / 2, n_false)
        false_boxes = np.stack([rng.uniform(0, width - fw), rng.uniform(0, height - fh), fw, fh], 1)
        boxes = np.concatenate([boxes, false_boxes])[:dets_per_image]
        scores = np.concatenate([scores, rng.beta(2, 5, n_false)])[:dets_per_image]
        for box, score in zip(boxes.tolist(), scores.tolist()):
            detections.append({"image_id": image_id, "category_id": 1, "bbox": box, "score": score})
    gt = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "person"}]}
    return gt, detections


def main(argv=None) -> None:
    parser = _common.base_parser(NAME, __doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--persons", type=int, default=36000, help="ground-truth persons in total")
    parser.add_argument("--dets-per-image", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.smoke:
        args.images, args.persons, args.dets_per_image = 100, 720, 100

    from persondet.errors import PersondetError
    from persondet.metrics import coco_metrics

    for name in ("images", "persons", "dets_per_image"):
        if getattr(args, name) < 1:
            raise PersondetError(f"--{name.replace('_', '-')}={getattr(args, name)} must be >= 1")
    load_before = _common.load_average()
    print(f"generating {args.images} images, {args.persons} persons, {args.dets_per_image} detections/image ...",
          flush=True)
    gt, dets = generated_test_set(args.images, args.persons, args.dets_per_image, args.seed)

    seconds, stats = {}, {}
    for backend in ("pycocotools", "faster-coco-eval"):
        with _common.Timer() as timer:
            stats[backend] = coco_metrics(gt, dets, category_id=1, backend=backend)
        seconds[backend] = timer.seconds
        print(f"{backend}: {timer.seconds:.2f} s, AP50={stats[backend]['AP50']:.6f}", flush=True)

    worst = max(abs(stats["pycocotools"][k] - stats["faster-coco-eval"][k]) for k in stats["pycocotools"])
    if abs(stats["pycocotools"]["AP50"] - stats["faster-coco-eval"]["AP50"]) > 1e-6:
        raise PersondetError(f"AP50 differs between backends: {stats['pycocotools']['AP50']!r} (pycocotools) "
                             f"vs {stats['faster-coco-eval']['AP50']!r} (faster-coco-eval)")
    ratio = seconds["pycocotools"] / seconds["faster-coco-eval"]
    table = _common.markdown_table(
        ["test set", "pycocotools COCOeval (anchor)", "persondet `backend=\"faster-coco-eval\"`", "speed-up",
         "AP50 (both)", "largest difference over all 12 stats"],
        [[f"{args.images:,} images, {len(gt['annotations']):,} GT persons, {len(dets):,} detections",
          f"{seconds['pycocotools']:.2f} s", f"{seconds['faster-coco-eval']:.2f} s", f"**{ratio:.1f}x**",
          f"{stats['pycocotools']['AP50']:.6f}", f"{worst:.1e}"]])
    print(table)
    method = ("`persondet.metrics.coco_metrics(gt, detections, category_id=1, backend=...)` timed end to end "
              "(COCO index, loadRes, evaluate, accumulate, summarize) once per backend on the same generated "
              "set (persons of all sizes, ~1% crowd regions, 85% of persons detected with jitter, the rest "
              "of the 100 detections per image false positives); AP50 asserted equal to 1e-6.")
    _common.write_result(args.output, "Evaluation: COCO metrics at test-set scale", method, table,
                         load_before=load_before)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    _common.run(main)
