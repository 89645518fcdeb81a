"""The ``evaluate`` step: a logged model on any COCO-format test set, COCO metrics with AP50 first.

The model runs through ``inference.predict`` (on CUDA when there is one; the result does not depend on the
batch size); a detector trained elsewhere is scored from its COCO results file (``detections``, read by
``results.read_detections``; the images are then not needed).  Ignore regions are neither hits nor misses
(``metrics``).  Logs an evaluation run (metrics, COCO results file, the test set's statistics,
precision-recall curve at IoU 0.5, example images) and adds ``<test_name>/AP50`` ..., the test set digest
and the evaluation run's id to the model's training run (``evaluate`` is the one writer of those), so the
MLflow UI compares training runs directly and ``report`` finds the logged detections.  A leakage guard flags test images that were also training images.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from persondet.config import EvaluateConfig
from persondet.datasets import image_path, is_person_box, person_category_id, recorded_roots
from persondet.errors import PersondetError
from persondet.formats.cocosets import check_coco_set
from persondet.formats.imagesize import ImageHeaderError, image_size
from persondet.metrics import HEADLINE, coco_metrics, precision_recall_at_iou50, region_counts
from persondet.tracking import RunHandle, open_run, run_name
from persondet.tracking.models import load_detector
from persondet.tracking.registry import training_run_of
from persondet.results import read_detections
from persondet.tracking.search import download_artifact, get_run

GENERIC_STEMS = {"annotations", "annotation", "test", "gt", "labels", "instances", "val", "data"}
DRAW_SCORE = 0.3  # detections drawn on example images: at least this score
DEMO_PERSON_CATEGORY = "pedestrian"  # persondet.synth.INHOUSE_CATEGORIES


@dataclass
class TestSet:
    """A COCO-format test set, read and checked, with the person category resolved."""
    annotations_path: Path
    dataset: dict
    category_id: int
    image_paths: dict[int, Path]  # image id -> file
    name: str
    listing_digest: str  # the annotation file's bytes and each image's name and size: cheap, for caches
    digest: str = ""  # the annotation file's bytes and each image's bytes: what identifies the test set
    file_hashes: dict[int, str] = field(default_factory=dict)
    images_present: bool = True  # False only when asked not to need them (a results file is scored)


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_test_name(annotations_path: Path) -> str:
    stem = annotations_path.stem
    name = annotations_path.parent.name if stem.lower() in GENERIC_STEMS else stem
    return sanitize_name(name or stem)


def sanitize_name(name: str) -> str:
    """A name usable as an MLflow metric prefix."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "test"


def load_test_set(annotations: str, images: str = "", person_category: str = "person",
                  name: str = "", digest: bool = True, need_images: bool = True) -> TestSet:
    """Read a COCO json, check it (``formats.cocosets``: ids, image references, boxes; at least one person
    annotation; no file name leaving its folder; no missing, empty or unreadable image unless
    ``need_images`` is False), resolve the person category and every image file; one-line errors otherwise.

    Image files are ``images / file_name`` (default ``images``: the json's folder).  A prepared set
    (a json with the ``persondet`` key) resolves files through its recorded roots.  ``digest=False``
    skips hashing every image (``digest`` and ``file_hashes`` stay empty), for callers that only draw or
    need only the cheap ``listing_digest``.  ``need_images=False`` (scoring a results file) accepts
    missing images: then ``images_present`` is False and the digest covers the annotation file only.
    """
    path = Path(annotations).expanduser().resolve()
    if not path.is_file():
        raise PersondetError(f"test_annotations={annotations!r}: no such file")
    try:
        raw = path.read_bytes()
        dataset = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise PersondetError(f"test_annotations={str(path)!r} is not valid JSON "
                             f"({' '.join(str(exc).split())[:120]})") from None
    if not isinstance(dataset, dict) or not isinstance(dataset.get("images"), list):
        raise PersondetError(f"test_annotations={str(path)!r} is not a COCO file (no 'images' list)")
    if not dataset["images"]:
        raise PersondetError(f"test_annotations={str(path)!r} is an empty test set (no images)")
    category_id = person_category_id(dataset.get("categories") or [], person_category, str(path),
                                     setting="person_category")
    dataset.setdefault("annotations", [])
    check_coco_set(dataset, str(path))
    if not any(ann.get("category_id") == category_id for ann in dataset["annotations"]):
        raise PersondetError(f"test_annotations={str(path)!r} has no annotation of the person category "
                             f"(id {category_id}): there is nothing to measure AP against")

    roots = recorded_roots(dataset) if not images else None  # test_images given: files are under it
    base = Path(images).expanduser().resolve() if images else path.parent
    image_paths: dict[int, Path] = {}
    missing, unreadable = [], []
    listing = hashlib.sha256(raw)
    for image in dataset["images"]:
        file = image_path(image, roots, base, where=str(path))
        try:
            size = file.stat().st_size if file.is_file() else None
        except OSError:
            size = None
        if size is None:
            missing.append(str(file))
        elif size == 0 or _broken_header(file):
            unreadable.append(f"image {image['id']} {str(file)!r} ({_broken_header(file) if size else 'empty file'})")
        else:
            listing.update(f"{image['id']}:{file.name}:{size}".encode())
        image_paths[image["id"]] = file
    if missing and need_images:
        raise PersondetError(f"{len(missing)} of {len(image_paths)} test images are missing, "
                             f"e.g. {missing[0]!r} (test_images={str(base)!r})")
    if unreadable and need_images:
        raise PersondetError(f"{path}: {len(unreadable)} of {len(image_paths)} test images are empty or "
                             f"unreadable, e.g. {unreadable[0]}")
    test_set = TestSet(path, dataset, category_id, image_paths, name or default_test_name(path),
                       listing.hexdigest()[:16], images_present=not missing)
    if missing:  # a results file scored without the images: the annotation file identifies the set
        test_set.digest = hashlib.sha256(raw).hexdigest()[:16] if digest else ""
    elif digest:
        content = hashlib.sha256(raw)
        for image_id in sorted(image_paths):
            file_hash = _sha1(image_paths[image_id])
            test_set.file_hashes[image_id] = file_hash
            content.update(f"{image_id}:{file_hash}".encode())
        test_set.digest = content.hexdigest()[:16]
    return test_set


def _broken_header(file: Path) -> str:
    """Why an image file's header cannot be read ('' when it can): JPEG and PNG headers read here, any other
    format identified by PIL (its header only; nothing is decoded)."""
    try:
        image_size(file)
    except ImageHeaderError as exc:
        if not exc.reason.startswith("not a JPEG or PNG"):
            return exc.reason
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(file):
                return ""
        except (OSError, UnidentifiedImageError, ValueError):
            return "neither JPEG nor PNG, and no other image format PIL reads"
    return ""


def draw_example(image_path: Path, gt_boxes: list, detections: list[dict], out_path: Path,
                 title: str = "") -> None:
    """Ground truth in green, detections (score >= DRAW_SCORE) in red with their score.

    When no detection reaches DRAW_SCORE (a weak model, e.g. the short demo training), the best three are
    drawn in orange instead, so the picture still shows what the model proposes.
    """
    from PIL import Image, ImageDraw

    with Image.open(image_path) as img:
        canvas = img.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    for x, y, w, h in gt_boxes:
        draw.rectangle([x, y, x + w, y + h], outline=(0, 200, 0), width=2)
    shown = [d for d in detections if d["score"] >= DRAW_SCORE]
    color = (230, 0, 0)
    if not shown:
        shown, color = sorted(detections, key=lambda d: d["score"])[-3:], (255, 150, 0)
    for det in shown:
        x, y, w, h = det["bbox"]
        draw.rectangle([x, y, x + w, y + h], outline=color, width=2)
        draw.text((x + 2, y + 2), f"{det['score']:.2f}", fill=color)
    if title:
        draw.text((4, 4), title, fill=(255, 255, 0))
    canvas.save(out_path)


def detections_by_image(detections: list[dict]) -> dict[int, list[dict]]:
    by_image: dict[int, list[dict]] = {}
    for det in detections:
        by_image.setdefault(det["image_id"], []).append(det)
    return by_image


def gt_boxes_by_image(test_set: TestSet) -> dict[int, list]:
    boxes: dict[int, list] = {}
    for ann in test_set.dataset["annotations"]:
        if ann.get("category_id") == test_set.category_id:
            boxes.setdefault(ann["image_id"], []).append(ann["bbox"])
    return boxes


def _plot_pr(recall, precision, ap50: float, out_path: Path, label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    valid = precision >= 0
    ax.plot(recall[valid], precision[valid], label=f"{label} (AP50={ap50:.3f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title("precision-recall at IoU 0.5")
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)


# --- leakage guard --------------------------------------------------------------------------------

def training_image_files(run, workdir: str) -> list[Path]:
    """The image files of a training run's prepared set, read through tracking (empty if unknown)."""
    data = run.data.params.get("data", "")
    train_json = None
    if data and get_run(data) is not None:  # a prepare run id
        train_json = download_artifact(data, "prepared/train.json", workdir)
    elif data and os.path.isfile(data):
        train_json = data
    if not train_json:
        return []
    with open(train_json) as f:
        dataset = json.load(f)
    roots, base = recorded_roots(dataset), Path(train_json).resolve().parent
    return [image_path(image, roots, base, where=str(train_json)) for image in dataset.get("images", [])]


def find_leaks(test_set: TestSet, training_files: list[Path]) -> list[int]:
    """Test image ids whose file is a training file: same resolved path, or same bytes."""
    train_paths = {os.path.realpath(p) for p in training_files}
    by_size: dict[int, list[Path]] = {}
    for p in training_files:
        try:
            by_size.setdefault(os.path.getsize(p), []).append(p)
        except OSError:
            continue
    train_hashes: dict[Path, str] = {}  # each training file hashed at most once

    def train_hash(p: Path) -> str:
        if p not in train_hashes:
            train_hashes[p] = _sha1(p)
        return train_hashes[p]

    leaked = []
    for image_id, path in test_set.image_paths.items():
        if os.path.realpath(path) in train_paths:
            leaked.append(image_id)
            continue
        candidates = by_size.get(os.path.getsize(path), [])
        if any(train_hash(p) == test_set.file_hashes[image_id] for p in candidates):
            leaked.append(image_id)
    return sorted(leaked)


# --- the step -------------------------------------------------------------------------------------

def _demo_test_set(config: EvaluateConfig) -> tuple[str, str]:
    from persondet.synth import ensure_demo_data

    demo = ensure_demo_data(seed=config.demo_seed)
    return str(demo.inhouse_annotations), str(demo.inhouse_images)


def test_set_stats(test_set: TestSet) -> dict[str, Any]:
    """The test set as report's dataset table shows it: images, objects (persons scored), avg_rel_size (mean
    box area / image area over them), crowd and ignore regions (``metrics.region_counts``)."""
    size = {im["id"]: (im.get("width") or 0) * (im.get("height") or 0) for im in test_set.dataset["images"]}
    rel = [ann["bbox"][2] * ann["bbox"][3] / size[ann["image_id"]] for ann in test_set.dataset["annotations"]
           if ann.get("category_id") == test_set.category_id and is_person_box(ann) and size.get(ann["image_id"])]
    return {"images": len(test_set.image_paths), **region_counts(test_set.dataset, test_set.category_id),
            "avg_rel_size": sum(rel) / len(rel) if rel else 0.0}


def infer(config: EvaluateConfig, test_set: TestSet) -> tuple[list[dict], dict[str, str]]:
    """The model's detections on the test set (``inference.predict`` on ``device``) and what to log of it."""
    from persondet.data import worker_count
    from persondet.distributed import device_for, device_name
    from persondet.inference import ImageFiles, predict

    device = device_for(config.device)
    detector = load_detector(config.model_uri).detector.to(device)  # weights only: tracking.models
    images = ImageFiles(sorted(test_set.image_paths.items()))
    detections = predict(detector, images, device, config.batch_size, test_set.category_id,
                         workers=worker_count(config.workers), desc="evaluate")
    return detections, {"device_resolved": device_name(device)}


def evaluate(config: EvaluateConfig) -> dict[str, Any]:
    """Evaluate ``config.model_uri`` (or score the results file ``config.detections``) on the test set;
    returns metrics, run ids, digest and leakage."""
    annotations, images, person = config.test_annotations, config.test_images, config.person_category
    if not annotations:
        annotations, images = _demo_test_set(config)
        if person == "person":  # the demo in-house set names its person category "pedestrian"
            person = DEMO_PERSON_CATEGORY
    test_set = load_test_set(annotations, images, person, sanitize_name(config.test_name)
                             if config.test_name else "", need_images=not config.detections)
    started = time.perf_counter()
    if config.detections:
        detections, other = read_detections(config.detections, test_set.image_paths, test_set.category_id)
        resolved = {"detections_other_categories": str(other)}
    else:
        detections, resolved = infer(config, test_set)
    inference_s = time.perf_counter() - started
    training_run_id = training_run_of(config.model_uri) if config.model_uri else None
    training_run = get_run(training_run_id) if training_run_id else None

    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        leaked = []
        if training_run is not None:
            leaked = find_leaks(test_set, training_image_files(training_run, str(tmpdir / "train")))
        if leaked:
            print(f"persondet: WARNING: DATA LEAKAGE: {len(leaked)} of {len(test_set.image_paths)} test "
                  f"images of {test_set.name!r} are also training images of run {training_run_id}; "
                  "these metrics overstate the model", file=sys.stderr)

        started = time.perf_counter()
        stats, evaluator = coco_metrics(test_set.dataset, detections, test_set.category_id, return_eval=True,
                                        backend=config.coco_backend)
        scoring_s = time.perf_counter() - started
        headline = {name: stats[name] for name in HEADLINE}
        described = test_set_stats(test_set)

        out = tmpdir / "evaluation"
        (out / "examples").mkdir(parents=True)
        (out / "detections.json").write_text(json.dumps(detections))
        (out / "test_stats.json").write_text(json.dumps(described, indent=2))
        recall, precision = precision_recall_at_iou50(evaluator)
        _plot_pr(recall, precision, stats["AP50"], out / "pr_curve_iou50.png", test_set.name)
        gt = gt_boxes_by_image(test_set)
        by_image = detections_by_image(detections)
        shown = sorted(test_set.image_paths)[:config.examples] if test_set.images_present else []
        for image_id in shown:
            draw_example(test_set.image_paths[image_id], gt.get(image_id, []), by_image.get(image_id, []),
                         out / "examples" / f"{image_id}.png")
        (out / "metrics.json").write_text(json.dumps(stats, indent=2))

        tags = {"persondet.model_uri": config.model_uri, "persondet.training_run_id": training_run_id or "",
                "persondet.test_name": test_set.name, "persondet.test_digest": test_set.digest,
                "persondet.leakage": str(bool(leaked)).lower(), "persondet.leakage_count": str(len(leaked))}
        model_name = training_run.info.run_name if training_run is not None else config.model_uri
        with open_run("evaluate", run_name=run_name("evaluate", model=model_name, test_name=test_set.name),
                      tags=tags) as run:
            params = config.to_params()
            # resolved values under their own names: `mlflow run` already logged the given ones
            params.update(test_annotations_path=str(test_set.annotations_path), test_set_name=test_set.name,
                          test_images_path=images or str(test_set.annotations_path.parent),
                          test_digest=test_set.digest, training_run_id=training_run_id or "",
                          person_category_id=str(test_set.category_id),
                          test_images_count=str(len(test_set.image_paths)), **resolved)
            run.log_params(params)
            run.log_metrics({**headline, "leaked_images": len(leaked), "ignore_regions": described["ignore_regions"],
                             "crowd_regions": described["crowd_regions"], "inference_time_s": inference_s,
                             "scoring_time_s": scoring_s})
            run.log_artifacts(str(out), "evaluation")
            run_id = run.run_id

    if training_run is not None and config.log_to_training_run:
        trained = RunHandle(training_run_id)  # a finished run: logged to, not opened
        trained.log_metrics({f"{test_set.name}/{k}": v for k, v in headline.items()})
        trained.set_tags({f"{test_set.name}/digest": test_set.digest, f"{test_set.name}/evaluation_run_id": run_id,
                          **({f"{test_set.name}/leakage": "true"} if leaked else {})})
    print(" ".join(f"{k}={v:.4f}" for k, v in headline.items()) + f"  ({test_set.name}, "
          f"{len(test_set.image_paths)} images, {described['ignore_regions']} ignore regions, "
          f"digest {test_set.digest})")
    return {"metrics": headline, "run_id": run_id, "training_run_id": training_run_id,
            "test_name": test_set.name, "test_digest": test_set.digest, "leaked": leaked,
            "detections": len(detections), "ignore_regions": described["ignore_regions"],
            "inference_time_s": inference_s, "scoring_time_s": scoring_s}
