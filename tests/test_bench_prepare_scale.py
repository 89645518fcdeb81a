"""bench/prepare_scale.py: the generated data has the declared sizes and a measurement reports real numbers."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
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


def test_smoke_extra_data_is_crowdhuman_and_citypersons_as_the_readers_see_them(tmp_path):
    from persondet.formats.citypersons import read_citypersons
    from persondet.formats.crowdhuman import read_crowdhuman

    bench = _load_bench()
    citypersons_root, crowdhuman_root = bench.build_extra_data(tmp_path, bench.SMOKE_EXTRA)
    lines, persons = bench.count_odgt_boxes(crowdhuman_root / "annotation_train.odgt")
    assert lines == bench.SMOKE_EXTRA["crowdhuman_images"]
    _, counts = read_crowdhuman(crowdhuman_root, "train", "fbox")
    assert counts["images_total"] == lines and counts["person_boxes"] == persons > 15 * lines
    _, counts = read_citypersons(citypersons_root, "train", "all")
    assert counts["images_total"] == bench.SMOKE_EXTRA["citypersons_images"] and counts["person_boxes"] > 0
    # the full scale is CrowdHuman's: 15,000 images, about 340,000 person boxes (22.8 expected per image)
    low, high = bench.FULL_EXTRA["crowdhuman_persons"]
    assert bench.FULL_EXTRA["crowdhuman_images"] == 15_000
    assert 330_000 < 15_000 * (low + high) / 2 * 0.95 < 350_000
    stamp = (crowdhuman_root / "annotation_train.odgt").stat().st_mtime_ns
    assert bench.build_extra_data(tmp_path, bench.SMOKE_EXTRA) == (citypersons_root, crowdhuman_root)
    assert (crowdhuman_root / "annotation_train.odgt").stat().st_mtime_ns == stamp


def test_measure_runs_the_coco_load_in_a_fresh_process(tmp_path):
    bench = _load_bench()
    coco_root, _ = bench.build_data(tmp_path, bench.SMOKE)
    result = bench.measure("coco_load", {"annotation_file": str(coco_root / "annotations" / "instances_train2017.json")},
                           tmp_path, None)
    assert 0 < result["seconds"] < result["process_seconds"]
    assert 10 < result["peak_mb"] < 5000


@pytest.mark.slow
def test_smoke_run_writes_ratios_headers_and_the_comparison(tmp_path, monkeypatch):
    bench = _load_bench()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/outer.db")
    earlier = tmp_path / "earlier.md"
    earlier.write_text("| measurement | call wall time (s) | process wall time (s) | peak RSS (MB) |\n|---|---|---|---|\n"
                       "| pycocotools `COCO(...)` (anchor) | 20.6 | 20.7 | 2925 |\n"
                       "| persondet prepare, mix coco+cuhk | 15.2 | 16.1 | 760 |\n"
                       "| ratio prepare / anchor | 0.74x |  | 0.26x |\n\n**CPU load average** before the run: 1.16\n")
    output = tmp_path / "page.md"
    bench.main(["--smoke", "--work", str(tmp_path / "work"), "--output", str(output), "--compare", str(earlier)])
    text = output.read_text()
    ratio = re.search(r"\| ratio prepare / anchor \| (\d+\.\d+)x \| (\d+\.\d+)x \|  \| (\d+\.\d+)x \|", text)
    assert ratio and all(float(v) > 0 for v in ratio.groups()), text
    headers = re.search(r"\| COCO images with persons \+ CUHK-SYSU images \| (\d+) \| [\d.]+ \| [\d.]+ \| "
                        r"[\d.]+x \| yes \|", text)
    assert headers and int(headers.group(1)) == bench.SMOKE["coco_person_images"] + bench.SMOKE["cuhk_images"]
    assert "| before | 20.6 | 15.2 | - | 760 | 0.74x | - | 0.26x |" in text and "| now |" in text
    assert "**Goal** (issue 15" in text
    four = re.search(r"\| ratio coco\+cuhk\+citypersons\+crowdhuman / anchor \| (\d+\.\d+)x \| (\d+\.\d+)x \|  \| "
                     r"(\d+\.\d+)x \|", text)
    assert four and all(float(v) > 0 for v in four.groups()), text
    assert re.search(r"\*\*Goal\*\* \(issue 13: .*\): (met|NOT met) \(time ratio " + four.group(1), text)
    assert f"CrowdHuman {bench.SMOKE_EXTRA['crowdhuman_images']} train images" in text
    cpu = [float(re.search(r"^\| " + re.escape(label) + r" \| \d+\.\d+ \| (\d+\.\d+) \|$", text, re.M).group(1))
           for _, label in bench.FLOOR]
    floor = re.search(r"\| \*\*sum: the floor's CPU time\*\* \| (\d+\.\d+) \| (\d+\.\d+) \|", text)
    assert floor and abs(float(floor.group(2)) - sum(cpu)) < 0.03 and cpu[0] > 0.5, text  # importing MLflow: > 0.5 s
    assert "**The floor.**" in text


def test_floor_summary_divides_the_library_work_over_the_cores(monkeypatch):
    bench = _load_bench()
    monkeypatch.setattr(bench._common, "cores", lambda: 2)
    steps = {"tracking": [2.1, 2.0], "plotting": [0.3, 0.3], "matlab": [1.0, 1.0], "coco": [1.2, 1.1],
             "headers": [0.5, 0.4]}
    table, note = bench.floor_summary(steps, {"cpu_seconds": 8.0}, anchor_seconds=14.0)
    assert "| **sum: the floor's CPU time** | 5.10 | 4.80 |" in table
    assert "| least wall time on 2 cores (CPU / cores), ratio to the anchor |  | 2.40 s = 0.17x |" in table
    assert "no prepare can take less than 2.4 s (0.17x the anchor)" in note
    assert "0.25x x 14.0 s = 3.5 s allowed" in note and "3.2 s beyond the floor" in note


def test_compare_refuses_a_page_of_another_benchmark(tmp_path):
    bench = _load_bench()
    page = tmp_path / "other.md"
    page.write_text("| a | b |\n|---|---|\n| 1 | 2 |\n")
    from persondet.errors import PersondetError

    with pytest.raises(PersondetError, match=r"--compare=.*other.md.*not a result page of this benchmark"):
        bench.compare_table(page, {}, {}, 1.0, 1.0)
