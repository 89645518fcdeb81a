"""persondet.metrics.coco_metrics: both backends give the same COCO numbers on generated data."""

from __future__ import annotations

import numpy as np
import pytest

from persondet.errors import PersondetError
from persondet.metrics import BACKENDS, STAT_NAMES, coco_metrics, precision_recall_at_iou50


def _generated_set(seed: int = 0, n_images: int = 60):
    """Ground truth with small/medium/large persons, crowd regions, an empty image and another category;
    detections that are jittered copies of the truth plus false positives, with random scores."""
    rng = np.random.default_rng(seed)
    images, annotations, detections = [], [], []
    for image_id in range(1, n_images + 1):
        width, height = int(rng.integers(320, 900)), int(rng.integers(240, 700))
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "width": width, "height": height})
        if image_id == n_images:
            continue  # one image without any person
        for _ in range(int(rng.integers(1, 9))):
            w = float(rng.choice([rng.uniform(4, 30), rng.uniform(35, 90), rng.uniform(100, 300)]))
            h = min(w * rng.uniform(1.5, 3.0), height - 1.0)
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            crowd = int(rng.random() < 0.05)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                "bbox": [x, y, w, h], "iscrowd": crowd})
            if rng.random() < 0.8:
                jitter = rng.normal(0, 0.08, 4) * [w, h, w, h]
                detections.append({"image_id": image_id, "category_id": 1, "score": float(rng.random()),
                                   "bbox": [x + jitter[0], y + jitter[1], max(1.0, w + jitter[2]),
                                            max(1.0, h + jitter[3])]})
        if rng.random() < 0.3:  # a non-person object; its detections must be ignored for category 1
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 2,
                                "bbox": [10.0, 10.0, 50.0, 50.0], "iscrowd": 0})
            detections.append({"image_id": image_id, "category_id": 2, "score": 0.9,
                               "bbox": [10.0, 10.0, 50.0, 50.0]})
        for _ in range(int(rng.integers(0, 6))):  # false positives
            w, h = float(rng.uniform(5, 150)), float(rng.uniform(10, 300))
            detections.append({"image_id": image_id, "category_id": 1, "score": float(rng.random()),
                               "bbox": [float(rng.uniform(0, width - 5)), float(rng.uniform(0, height - 5)), w, h]})
    gt = {"images": images, "annotations": annotations,
          "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "other"}]}
    return gt, detections


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_faster_coco_eval_backend_matches_pycocotools(seed):
    gt, dets = _generated_set(seed)
    reference = coco_metrics(gt, dets, category_id=1)
    fast = coco_metrics(gt, dets, category_id=1, backend="faster-coco-eval")
    assert 0.05 < reference["AP50"] < 0.99  # a non-trivial score, so equality means something
    assert reference["AP_small"] >= 0 and reference["AP_large"] >= 0
    for name in STAT_NAMES:
        assert fast[name] == pytest.approx(reference[name], abs=1e-6), name


def test_backends_agree_on_an_image_subset_and_leave_inputs_untouched():
    gt, dets = _generated_set(3)
    before = [dict(d) for d in dets]
    subset = [i for i in range(1, 31)]
    results = {b: coco_metrics(gt, dets, category_id=1, image_ids=subset, backend=b) for b in BACKENDS}
    assert results["faster-coco-eval"]["AP50"] == pytest.approx(results["pycocotools"]["AP50"], abs=1e-6)
    assert results["pycocotools"]["AP50"] != coco_metrics(gt, dets, category_id=1)["AP50"]
    assert dets == before


def test_backends_agree_with_no_detections():
    gt, _ = _generated_set(4, n_images=5)
    for backend in BACKENDS:
        stats = coco_metrics(gt, [], category_id=1, backend=backend)
        assert stats["AP50"] == 0.0 and stats["AR100"] == 0.0


def test_precision_recall_curve_from_either_backend():
    gt, dets = _generated_set(5)
    curves = {}
    for backend in BACKENDS:
        _, evaluator = coco_metrics(gt, dets, category_id=1, return_eval=True, backend=backend)
        curves[backend] = precision_recall_at_iou50(evaluator)
    np.testing.assert_allclose(curves["pycocotools"][0], curves["faster-coco-eval"][0])
    np.testing.assert_allclose(curves["pycocotools"][1], curves["faster-coco-eval"][1], atol=1e-6)


def test_a_coco_object_of_the_other_backend_is_accepted():
    from pycocotools.coco import COCO

    gt, dets = _generated_set(6)
    coco = COCO()
    coco.dataset = {**gt, "info": {}, "licenses": []}
    for ann in coco.dataset["annotations"]:
        ann["area"] = ann["bbox"][2] * ann["bbox"][3]
    coco.createIndex()
    assert (coco_metrics(coco, dets, 1, backend="faster-coco-eval")["AP50"]
            == pytest.approx(coco_metrics(coco, dets, 1)["AP50"], abs=1e-6))


def test_an_unknown_backend_is_a_one_line_error():
    gt, dets = _generated_set(7, n_images=3)
    with pytest.raises(PersondetError, match="backend='fast'.*pycocotools"):
        coco_metrics(gt, dets, category_id=1, backend="fast")
