"""Benchmark: the numbers issue 14 asks for, measured through the steps themselves.

1. AP50 of one trained small model (the demo training, capped) on the demo in-house set with borders
   added to its images six ways (mixed sizes and aspect ratios) at
   evaluation batch 1 and 8: through ``inference.predict`` (batches of one padded shape) and, for
   contrast, torchvision's plain padded batches (what ``evaluate`` did before).
2. An oracle on the real CityPersons training annotations (../shared/data): exactly the person boxes,
   scored with ignore regions as ``evaluate`` scores them, and with the ignore regions taken as persons.
3. ``evaluate`` on a results file over the whole real CityPersons file (2,975 images, noisy detections):
   its logged ``scoring_time_s`` with ``coco_backend=faster-coco-eval`` (the default) against
   ``pycocotools`` on the same run's inputs; the 12 stats must agree (else the script fails).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

NAME = "evaluation_correctness"
CITYPERSONS = _common.ROOT / ".." / "shared" / "data" / "citypersons-real" / "annotations" / "anno_train.mat"


def _citypersons(limit: int | None) -> dict:
    from persondet.formats.citypersons import read_annotations, to_records

    images = read_annotations(CITYPERSONS, "train")[:limit]
    records, annotations, _ = to_records(images, {im.file_name: (2048, 1024) for im in images})
    for ann in annotations:
        ann["category_id"] = 1
    return {"images": records, "annotations": annotations, "categories": [{"id": 1, "name": "person"}]}


def _noisy(dataset: dict, per_image: int, seed: int = 0) -> list[dict]:
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for ann in dataset["annotations"]:
        if rng.random() < 0.8:
            x, y, w, h = ann["bbox"]
            j = rng.normal(0, 0.1, 4) * [w, h, w, h]
            out.append({"image_id": ann["image_id"], "category_id": 1, "score": float(rng.random()),
                        "bbox": [x + j[0], y + j[1], max(1.0, w + j[2]), max(1.0, h + j[3])]})
    for im in dataset["images"]:
        for _ in range(per_image):
            w, h = float(rng.uniform(8, 300)), float(rng.uniform(16, 600))
            out.append({"image_id": im["id"], "category_id": 1, "score": float(rng.random()) * 0.8,
                        "bbox": [float(rng.uniform(0, 2048 - w)), float(rng.uniform(0, 1024 - h)), w, h]})
    return out


def _mixed_sizes(annotations: Path, images: Path, out: Path) -> Path:
    """The demo in-house set (one image size) with gray borders added right and below, six ways: a test
    set of mixed sizes and aspect ratios (so the model resizes them to several shapes); boxes unchanged."""
    from PIL import Image

    dataset = json.loads(Path(annotations).read_text())
    for i, image in enumerate(dataset["images"]):
        right, below = (0.0, 0.25, 0.5)[i % 3], (0.0, 0.3)[(i // 3) % 2]
        with Image.open(images / image["file_name"]) as img:
            size = (round(img.width * (1 + right)), round(img.height * (1 + below)))
            canvas = Image.new("RGB", size, (128, 128, 128))
            canvas.paste(img.convert("RGB"), (0, 0))
        target = (out / image["file_name"]).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        canvas.save(target)
        image.update(file_name=str(Path(image["file_name"]).with_suffix(".png")), width=size[0], height=size[1])
    path = out / "annotations.json"
    path.write_text(json.dumps(dataset))
    return path


def batch_independence(tmp: Path, iters: int) -> list[list[object]]:
    import torch

    from persondet.config import PrepareConfig, TrainConfig
    from persondet.evaluation import load_test_set
    from persondet.inference import ImageFiles, padded_shape, predict
    from persondet.metrics import coco_metrics
    from persondet.pipeline import DEMO_TRAIN
    from persondet.prepare import prepare
    from persondet.synth import ensure_demo_data
    from persondet.training import train

    demo = ensure_demo_data(seed=0)
    result = prepare(PrepareConfig(mix="coco+cuhk", output_dir=str(tmp / "prepared")))  # the demo sources
    prepared = Path(result.output_dir) / "train.json"
    train(TrainConfig.from_strings({"data": str(prepared), "register": "false",
                                    **{**DEMO_TRAIN, "epochs": "1", "max_iters_per_epoch": str(iters)}}))
    import mlflow

    from persondet.tracking.models import load_detector

    client = mlflow.MlflowClient()
    run = client.search_runs([client.get_experiment_by_name("persondet").experiment_id])[0]
    detector = load_detector(f"runs:/{run.info.run_id}/model").detector.eval()  # weights only
    annotations = _mixed_sizes(demo.inhouse_annotations, demo.inhouse_images, tmp / "mixed")
    test_set = load_test_set(str(annotations), str(tmp / "mixed"), "pedestrian", digest=False)
    images = ImageFiles(sorted(test_set.image_paths.items()))
    shapes = {padded_shape(detector, im["height"], im["width"]) for im in test_set.dataset["images"]}
    rows = []
    for batch in (1, 8):
        dets = predict(detector, images, torch.device("cpu"), batch, test_set.category_id)
        ap_new = coco_metrics(test_set.dataset, dets, test_set.category_id)["AP50"]
        plain = []
        with torch.inference_mode():
            for start in range(0, len(images), batch):
                chunk = [images[i] for i in range(start, min(start + batch, len(images)))]
                outs = detector([t.float() / 255.0 for _, t in chunk])
                for (image_id, _), out in zip(chunk, outs):
                    for (x1, y1, x2, y2), s in zip(out["boxes"].tolist(), out["scores"].tolist()):
                        plain.append({"image_id": image_id, "category_id": test_set.category_id,
                                      "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s})
        ap_old = coco_metrics(test_set.dataset, plain, test_set.category_id)["AP50"]
        rows.append([f"AP50 at batch {batch} ({len(images)} images, {len(shapes)} padded shapes)",
                     f"{ap_new:.4f}", f"plain padded batches (before): {ap_old:.4f}"])
    return rows


def oracle(limit: int | None) -> list[list[object]]:
    from persondet.datasets import is_person_box
    from persondet.metrics import coco_metrics

    dataset = _citypersons(limit)
    dets = [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 1.0}
            for a in dataset["annotations"] if is_person_box(a)]
    ruled = coco_metrics(dataset, dets, 1)
    naive = coco_metrics({**dataset, "annotations": [{**a, "ignore": 0} for a in dataset["annotations"]]}, dets, 1)
    n_ignore = sum(1 for a in dataset["annotations"] if a.get("ignore"))
    return [[f"oracle AP50 / AR100 on real CityPersons ({len(dataset['images'])} images, {n_ignore} ignore "
             "regions), ignore regions neither hit nor miss", f"{ruled['AP50']:.4f} / {ruled['AR100']:.4f}",
             f"ignore regions scored as persons: {naive['AP50']:.4f} / {naive['AR100']:.4f}"]]


def scoring_speed(tmp: Path, per_image: int, limit: int | None) -> list[list[object]]:
    from persondet.config import EvaluateConfig
    from persondet.evaluation import evaluate

    dataset = _citypersons(limit)
    (tmp / "cp.json").write_text(json.dumps(dataset))
    (tmp / "dets.json").write_text(json.dumps(_noisy(dataset, per_image)))
    results = {}
    for backend in ("pycocotools", "faster-coco-eval"):
        results[backend] = evaluate(EvaluateConfig(detections=str(tmp / "dets.json"), test_name="citypersons",
                                                   test_annotations=str(tmp / "cp.json"), examples=0,
                                                   coco_backend=backend))
    slow_m, fast_m = (results[b]["metrics"] for b in ("pycocotools", "faster-coco-eval"))
    if any(abs(slow_m[k] - fast_m[k]) > 1e-9 for k in slow_m):
        from persondet.errors import PersondetError

        raise PersondetError(f"the backends disagree: {slow_m} vs {fast_m}")
    slow, fast = (results[b]["scoring_time_s"] for b in ("pycocotools", "faster-coco-eval"))
    n = results["pycocotools"]["detections"]
    return [[f"evaluate's scoring_time_s, faster-coco-eval (default) vs pycocotools ({len(dataset['images'])} "
             f"images, {n} detections, the same 12 stats)", f"{fast:.2f} s vs {slow:.2f} s",
             f"**{slow / fast:.1f}x** faster"]]


def main(argv=None) -> None:
    parser = _common.base_parser(NAME, __doc__.split("\n\n")[0])
    parser.add_argument("--detections-per-image", type=int, default=50)
    parser.add_argument("--train-iters", type=int, default=12, help="iterations of the demo training")
    args = parser.parse_args(argv)
    if args.detections_per_image < 0:
        from persondet.errors import PersondetError

        raise PersondetError(f"--detections-per-image={args.detections_per_image} must be >= 0")
    load_before = _common.load_average()
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        os.chdir(tmp)
        try:
            limit = 100 if args.smoke else None
            rows = oracle(limit) + scoring_speed(Path(tmp), 5 if args.smoke else args.detections_per_image, limit)
            if not args.smoke:
                rows = batch_independence(Path(tmp), args.train_iters) + rows
        finally:
            os.chdir(here)  # leave the folder before it is removed
    table = _common.markdown_table(["what", "measured", "compared with"], rows)
    notes = "Smoke run: 100 CityPersons images, no training; proves the script, measures nothing." if args.smoke else ""
    _common.write_result(args.output, "Evaluation correctness: batch size, ignore regions, scoring speed",
                         __doc__.split("\n\n", 1)[1].strip(), table, notes=notes, load_before=load_before)
    print(table)


if __name__ == "__main__":
    _common.run(main)
