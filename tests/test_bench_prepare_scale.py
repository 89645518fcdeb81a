"""bench/prepare_scale.py: the generated data has the declared sizes and a measurement reports real numbers."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import scipy.io

ROOT = Path(__file__).resolve().parents[1]


def _load_bench():
    spec = importlib.util.spec_from_file_location("prepare_scale", ROOT / "bench" / "prepare_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_data_has_the_declared_counts_and_is_cached(tmp_path):
    bench = _load_bench()
    sizes = bench.SMOKE
    coco_root, cuhk_root = bench.build_data(tmp_path, sizes)
    data = json.loads((coco_root / "annotations" / "instances_train2017.json").read_text())
    assert len(data["images"]) == sizes["coco_images"]
    assert len({a["image_id"] for a in data["annotations"] if a["category_id"] == 1}) == sizes["coco_person_images"]
    assert len({a["category_id"] for a in data["annotations"]}) > 40
    assert bench.count_annotations(coco_root / "annotations" / "instances_train2017.json") == len(data["annotations"])
    img = scipy.io.loadmat(cuhk_root / "annotation" / "Images.mat")["Img"]
    assert img.shape == (1, sizes["cuhk_images"])
    assert sum(int(e["nAppear"][0, 0]) for e in img[0]) == sizes["cuhk_boxes"]
    assert len(list((cuhk_root / "Image" / "SSM").iterdir())) == sizes["cuhk_images"]
    stamp = (coco_root / "annotations" / "instances_train2017.json").stat().st_mtime_ns
    assert bench.build_data(tmp_path, sizes) == (coco_root, cuhk_root)
    assert (coco_root / "annotations" / "instances_train2017.json").stat().st_mtime_ns == stamp


def test_measure_runs_the_coco_load_in_a_fresh_process(tmp_path):
    bench = _load_bench()
    coco_root, _ = bench.build_data(tmp_path, bench.SMOKE)
    result = bench.measure("coco_load", {"annotation_file": str(coco_root / "annotations" / "instances_train2017.json")},
                           tmp_path, None)
    assert 0 < result["seconds"] < result["process_seconds"]
    assert 10 < result["peak_mb"] < 5000
