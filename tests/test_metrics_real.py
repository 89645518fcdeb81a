"""COCO metrics on real annotation files (../shared/data): the default fast evaluator gives pycocotools' 12
numbers, and ignore regions of the real CityPersons annotations are neither hits nor misses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from persondet.metrics import DEFAULT_BACKEND, STAT_NAMES, coco_metrics

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
COCO_VAL = DATA / "coco-tiny" / "annotations" / "instances_val2017.json"
CITYPERSONS = DATA / "citypersons-real" / "annotations" / "anno_train.mat"
needs_data = pytest.mark.skipif(not (COCO_VAL.is_file() and CITYPERSONS.is_file()),
                                reason="../shared/data (real test files) is not here")


def _citypersons(n_images: int) -> dict:
    """The first ``n_images`` images of the real CityPersons training file as persondet's reader makes them
    (labels 1-4 persons, 5 crowd regions, 0 ignore regions), sizes 2048 x 1024 as in Cityscapes."""
    from persondet.formats.citypersons import read_annotations, to_records

    images = read_annotations(CITYPERSONS, "train")[:n_images]
    records, annotations, _ = to_records(images, {im.file_name: (2048, 1024) for im in images})
    for ann in annotations:
        ann["category_id"] = 1
    return {"images": records, "annotations": annotations, "categories": [{"id": 1, "name": "person"}]}


def _coco_persons() -> dict:
    dataset = json.loads(COCO_VAL.read_text())
    return {"images": dataset["images"], "categories": dataset["categories"],
            "annotations": [a for a in dataset["annotations"] if a["category_id"] == 1]}


def _noisy_detections(dataset: dict, seed: int) -> list[dict]:
    """Jittered copies of most ground-truth boxes (crowd and ignore regions too) and false alarms, with
    random scores: a realistic mix of hits, misses, duplicates and false positives."""
    rng = np.random.default_rng(seed)
    size = {im["id"]: (im["width"], im["height"]) for im in dataset["images"]}
    detections = []
    for ann in dataset["annotations"]:
        x, y, w, h = ann["bbox"]
        for _ in range(int(rng.choice([0, 1, 1, 1, 2]))):
            jitter = rng.normal(0, 0.1, 4) * [w, h, w, h]
            detections.append({"image_id": ann["image_id"], "category_id": 1, "score": float(rng.random()),
                               "bbox": [x + jitter[0], y + jitter[1], max(1.0, w + jitter[2]),
                                        max(1.0, h + jitter[3])]})
    for image_id, (width, height) in size.items():
        for _ in range(int(rng.integers(0, 4))):
            w, h = float(rng.uniform(4, width / 4)), float(rng.uniform(8, height / 3))
            detections.append({"image_id": image_id, "category_id": 1, "score": float(rng.random()),
                               "bbox": [float(rng.uniform(0, width - w)), float(rng.uniform(0, height - h)), w, h]})
    return detections


@needs_data
@pytest.mark.parametrize("which", ["coco-tiny val2017 (crowd regions)", "CityPersons train (ignore regions)"])
def test_the_default_fast_evaluator_gives_pycocotools_twelve_numbers_on_real_files(which):
    assert DEFAULT_BACKEND == "faster-coco-eval"
    dataset = _coco_persons() if which.startswith("coco") else _citypersons(300)
    for seed in (0, 1):
        detections = _noisy_detections(dataset, seed)
        fast = coco_metrics(dataset, detections, 1)
        reference = coco_metrics(dataset, detections, 1, backend="pycocotools")
        assert list(fast) == list(reference) == list(STAT_NAMES)
        for name in STAT_NAMES:
            assert fast[name] == pytest.approx(reference[name], abs=1e-9), name
        assert 0.1 < fast["AP50"] < 0.95  # a mix of hits and misses, not a trivial score


@needs_data
def test_an_oracle_of_the_non_ignored_boxes_scores_one_on_real_citypersons():
    """The real file's ignore regions (label 0) and crowd regions (label 5) are neither hits nor misses:
    detecting exactly the person boxes scores AP50 = AR100 = 1; scoring the ignore regions as persons would
    call the same oracle a poor detector."""
    from persondet.datasets import is_person_box

    dataset = _citypersons(500)
    assert sum(1 for a in dataset["annotations"] if a.get("ignore")) > 500  # the real file's label 0
    oracle = [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 1.0}
              for a in dataset["annotations"] if is_person_box(a)]
    scored = coco_metrics(dataset, oracle, 1)
    assert scored["AP50"] == pytest.approx(1.0) and scored["AR100"] == pytest.approx(1.0)
    as_persons = {**dataset, "annotations": [{**a, "ignore": 0} for a in dataset["annotations"]]}
    naive = coco_metrics(as_persons, oracle, 1, backend="pycocotools")
    assert naive["AP50"] < 0.8 and naive["AR100"] < 0.8
