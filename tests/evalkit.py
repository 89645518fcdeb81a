"""Small fixtures for the evaluation / promotion / serving / report tests: a tiny COCO test set on disk
and an untrained small detector logged and registered the way training does (real MLflow, SQLite)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def write_test_set(root: Path, n_images: int = 6, category=(3, "pedestrian"), seed: int = 0) -> Path:
    """A COCO test set: sub-folders, PNG and JPEG, person under another id/name, missing area/iscrowd."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for i in range(1, n_images + 1):
        w, h = int(rng.integers(96, 160)), int(rng.integers(80, 128))
        pixels = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        ext = "png" if i % 2 else "jpg"
        file_name = f"cam{i % 2}/frame_{i:03d}.{ext}"
        (root / "images" / f"cam{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / "images" / file_name)
        images.append({"id": i, "file_name": file_name, "width": w, "height": h})
        if i == n_images:
            continue  # an image without persons
        for _ in range(2):
            bw, bh = float(rng.uniform(10, 30)), float(rng.uniform(20, 50))
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": category[0],
                                "bbox": [float(rng.uniform(0, w - bw)), float(rng.uniform(0, h - bh)), bw, bh]})
    dataset = {"images": images, "annotations": annotations,
               "categories": [{"id": 1, "name": "car"}, {"id": category[0], "name": category[1]}]}
    path = root / "annotations.json"
    path.write_text(json.dumps(dataset))
    return path


def untrained_detector(seed: int = 0):
    """A small PersonDetector whose untrained head still emits boxes (score threshold 0)."""
    import torch

    from persondet.model import PersonDetector, build_detector

    torch.manual_seed(seed)
    detector = build_detector("small", min_size=128, max_size=192)
    detector.roi_heads.score_thresh = 0.0
    detector.roi_heads.detections_per_img = 20
    return PersonDetector(detector, max_detections=20)


def log_training_run(data: str = "", mix: str = "coco+cuhk", batch_size: int = 8, seed: int = 0,
                     register: bool = True) -> tuple[str, str]:
    """A run shaped like a training run: params, the logged model, a registered version with the
    training tags.  Returns (run_id, version) (version "" when not registered)."""
    import mlflow

    from persondet.tracking import RunHandle
    from persondet.tracking.models import log_detector

    mlflow.set_experiment("persondet")
    model = untrained_detector(seed)
    with mlflow.start_run(tags={"persondet.entry_point": "train"}) as run:
        mlflow.log_params({"data": data, "dataset_mix": mix, "batch_size": batch_size, "model": "small",
                           "gpu_type": "cpu", "gpu_count": 0})
        mlflow.log_metric("time_per_iter_s", 0.5 * batch_size / 8)
        log_detector(RunHandle(run.info.run_id), model, "small")  # the format training logs
    version = ""
    if register:
        mv = mlflow.register_model(f"runs:/{run.info.run_id}/model", "persondet",
                                   tags={"dataset_mix": mix, "batch_size": str(batch_size), "gpu_type": "cpu",
                                         "gpu_count": "0", "training_run_id": run.info.run_id})
        version = mv.version
    return run.info.run_id, version
