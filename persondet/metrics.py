"""COCO detection metrics for one category (person): COCOeval's protocol, AP50 first.

``coco_metrics`` is the one function every consumer calls (per-epoch validation in training, the
``evaluate`` step, benchmarks).  The numbers are COCOeval's own ``stats`` vector: nothing is re-derived.
The default backend is faster_coco_eval's C++ ``COCOeval_faster`` (the same 12 numbers as pycocotools on
real COCO files, crowd and ignore regions included: tests/test_metrics.py; 10x faster at 5,000 images:
docs/BENCHMARKS.md); ``backend="pycocotools"`` runs the reference implementation.

**Ignore regions.**  Pedestrian sets mark regions that must not be scored with ``ignore: 1`` (CityPersons'
convention; CrowdHuman conversions nest it as ``extra: {"ignore": 1}``).  COCOeval honours only
``iscrowd`` (``COCOeval._prepare`` overwrites ``gt["ignore"]`` from it), so an annotation with either flag
set is given to the evaluator as ``iscrowd=1``: a detection on it is neither a hit nor a false alarm, and
it is never a miss.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, Iterable, Mapping, Sequence

from persondet.datasets import is_ignore_region

# Order and names of COCOeval.stats for iouType="bbox" (pycocotools cocoeval.py, summarize()).
STAT_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
              "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")
HEADLINE = ("AP50", "AP", "AP75", "AP_small", "AP_medium", "AP_large", "AR100")
BACKENDS = ("pycocotools", "faster-coco-eval")
DEFAULT_BACKEND = "faster-coco-eval"


def region_counts(dataset: Mapping[str, Any], category_id: int) -> dict[str, int]:
    """Annotations of ``category_id`` scored as objects, and those that are crowd or ignore regions (one
    flagged both is a crowd region, as ``stats.dataset_stats`` counts it)."""
    counts = {"objects": 0, "crowd_regions": 0, "ignore_regions": 0}
    for ann in dataset.get("annotations", []):
        if ann.get("category_id") != category_id:
            continue
        if ann.get("iscrowd", 0):
            counts["crowd_regions"] += 1
        elif is_ignore_region(ann):
            counts["ignore_regions"] += 1
        else:
            counts["objects"] += 1
    return counts


def _backend_classes(backend: str):
    """(COCO, COCOeval) classes of ``backend``."""
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    if backend == "faster-coco-eval":
        from faster_coco_eval import COCO, COCOeval_faster

        return COCO, COCOeval_faster
    from persondet.errors import PersondetError

    raise PersondetError(f"backend={backend!r} must be one of {', '.join(BACKENDS)}")


def _coco_from_dict(dataset: Mapping[str, Any], coco_cls):
    coco = coco_cls()
    data = dict(dataset)
    # COCO's loadRes() copies these; make sure they exist even for minimal test sets.
    data.setdefault("info", {})
    data.setdefault("licenses", [])
    anns = []
    for ann in data.get("annotations", []):
        ann = dict(ann)
        x, y, w, h = ann["bbox"]
        ann.setdefault("area", float(w) * float(h))  # COCO uses segment area; box area when none given
        ann.setdefault("iscrowd", 0)
        if is_ignore_region(ann):
            ann["iscrowd"] = 1  # matched like a crowd region (module docstring)
        anns.append(ann)
    data["annotations"] = anns
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def coco_metrics(ground_truth: Mapping[str, Any] | Any, detections: Sequence[Mapping[str, Any]],
                 category_id: int, image_ids: Iterable[int] | None = None,
                 return_eval: bool = False, backend: str = DEFAULT_BACKEND):
    """COCOeval (bbox) for ``category_id`` over ``image_ids`` (default: every ground-truth image).

    ``ground_truth`` is a COCO dict or a COCO object (pycocotools or faster_coco_eval); ``detections``
    are COCO result dicts (image_id, category_id, bbox [x, y, w, h], score).  Returns {name: value} for
    every COCOeval stat; with ``return_eval`` also the COCOeval object (for precision-recall curves).
    ``backend`` is "faster-coco-eval" (C++ matching, the default) or "pycocotools" (the reference).
    Ignore regions count as crowd regions (module docstring); a COCO object is scored as it is.
    """
    coco_cls, COCOeval = _backend_classes(backend)

    if isinstance(ground_truth, coco_cls):
        gt = ground_truth
    elif hasattr(ground_truth, "getImgIds"):  # the other backend's COCO object: rebuild from its dict
        gt = _coco_from_dict(ground_truth.dataset, coco_cls)
    else:
        gt = _coco_from_dict(ground_truth, coco_cls)
    ids = sorted(gt.getImgIds() if image_ids is None else image_ids)
    dets = [dict(d) for d in detections if d["category_id"] == category_id]
    with contextlib.redirect_stdout(io.StringIO()):
        if dets:
            dt = gt.loadRes(dets)
        else:  # loadRes rejects an empty list; an empty result set scores 0 everywhere
            dt = _coco_from_dict({"images": gt.dataset["images"], "annotations": [],
                                  "categories": gt.dataset.get("categories", [])}, coco_cls)
        evaluator = COCOeval(gt, dt, iouType="bbox")
        evaluator.params.catIds = [category_id]
        evaluator.params.imgIds = ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # COCOeval reports -1 where a statistic has no ground truth (e.g. no small objects): keep it as -1.
    stats = {name: float(value) for name, value in zip(STAT_NAMES, evaluator.stats)}
    return (stats, evaluator) if return_eval else stats


def precision_recall_at_iou50(evaluator):
    """(recall thresholds, interpolated precision) at IoU 0.5, all areas, maxDets=100, as numpy arrays."""
    import numpy as np

    iou_index = int(np.argmin(np.abs(evaluator.params.iouThrs - 0.5)))
    area_index = evaluator.params.areaRngLbl.index("all")
    det_index = evaluator.params.maxDets.index(max(evaluator.params.maxDets))
    precision = evaluator.eval["precision"][iou_index, :, 0, area_index, det_index]
    return np.asarray(evaluator.params.recThrs), np.asarray(precision)
