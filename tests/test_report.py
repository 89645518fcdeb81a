"""report: tables and figures rebuilt from an experiment's runs into one static HTML page."""

from __future__ import annotations

import html
import json
import re
import urllib.parse
from unittest.mock import ANY

import pytest

import evalkit
from persondet.config import EvaluateConfig, ReportConfig
from persondet.errors import PersondetError
from persondet.evaluation import evaluate
from persondet.report import report


def _prepare_run(mix: str, stats: dict, tmp_path):
    import mlflow

    with mlflow.start_run(tags={"persondet.entry_point": "prepare"}):
        mlflow.log_params({"mix": mix, "cuhk_split": "all"})
        path = tmp_path / "stats.json"
        path.write_text(json.dumps(stats))
        mlflow.log_artifact(str(path), "prepared")  # where prepare logs it


def _speed_run(gpu: str, count: int, batch_size: int, t: float, mix: str = "coco+cuhk", **setup):
    import mlflow

    with mlflow.start_run(tags={"persondet.entry_point": "train"}):
        mlflow.log_params({"gpu_type": gpu, "gpu_count": count, "batch_size": batch_size, "dataset_mix": mix,
                           **setup})
        mlflow.log_metric("time_per_iter_s", t)


@pytest.mark.slow
def test_report_rebuilds_the_study(tmp_path, monkeypatch):
    import mlflow
    import torch

    torch.set_num_threads(1)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.chdir(tmp_path)
    mlflow.set_experiment("persondet")
    with pytest.raises(PersondetError, match="no finished prepare or train runs"):
        report(ReportConfig())

    _prepare_run("coco+cuhk", {"coco": {"images": 10, "objects": 30, "avg_rel_size": 0.08},
                               "cuhk": {"images": 5, "objects": 20, "avg_rel_size": 0.01},
                               "merged": {"images": 15, "objects": 50, "avg_rel_size": 0.052}}, tmp_path)
    _prepare_run("cuhk", {"cuhk": {"images": 5, "objects": 20, "avg_rel_size": 0.01},
                          "merged": {"images": 5, "objects": 20, "avg_rel_size": 0.01}}, tmp_path)
    for gpu, count, t in (("Tesla V100-SXM2-16GB", 4, 1.4), ("NVIDIA A100-SXM4-40GB", 4, 1.0),
                          ("NVIDIA A100-SXM4-40GB", 8, 0.5)):
        _speed_run(gpu, count, 8, t)
        _speed_run(gpu, count, 16, 2 * t)
    r50 = {"model": "auto", "model_resolved": "fasterrcnn_resnet50_fpn", "min_size_resolved": "800",
           "max_size_resolved": "1333", "amp": "bf16"}
    _speed_run("NVIDIA A100-SXM4-40GB", 4, 8, 3.0, **r50)
    _speed_run("NVIDIA A100-SXM4-40GB", 4, 8, 5.0, **r50)  # averaged with the one above only
    _speed_run("NVIDIA A100-SXM4-40GB", 4, 8, 9.0, **{**r50, "min_size_resolved": "1024"})
    _speed_run("NVIDIA A100-SXM4-40GB", 8, 8, 2.0, **r50)
    annotations = evalkit.write_test_set(tmp_path / "inhouse", n_images=3)
    runs = {}
    for mix, seed in (("coco", 1), ("coco+cuhk", 2)):
        runs[mix], _ = evalkit.log_training_run(mix=mix, seed=seed, register=False)
        evaluate(EvaluateConfig(model_uri=f"runs:/{runs[mix]}/model", test_annotations=str(annotations),
                                test_images=str(tmp_path / "inhouse" / "images"), person_category="pedestrian",
                                examples=0))

    def no_inference(*args, **kwargs):
        raise AssertionError("report must draw the detections evaluate logged, not infer again")

    import persondet.inference
    import persondet.tracking.models

    monkeypatch.setattr(persondet.inference, "predict", no_inference)
    monkeypatch.setattr(persondet.tracking.models, "load_detector", no_inference)
    with mlflow.start_run(tags={"persondet.entry_point": "train", "inhouse/digest": "another-version"}):
        mlflow.log_params({"dataset_mix": "coco", "batch_size": 16, "model": "small"})
        mlflow.log_metric("inhouse/AP50", 0.99)  # another version of the test set: not in the AP50 table
    result = report(ReportConfig(output_dir=str(tmp_path / "out"), examples=2))
    assert result["test_name"] == "inhouse"
    assert result["stats"][1:] == [["coco", "10", "30", "0.0800"], ["cuhk (all)", "5", "20", "0.0100"],
                                   ["coco+cuhk", "15", "50", "0.0520"], ["inhouse (test set)", "3", "4", ANY]]
    ap = {row[0]: row[1:] for row in result["ap50"][1:]}
    assert result["ap50"][0][1:] == ["8"] and set(ap) == {"coco", "coco+cuhk"}
    assert result["ap50_caption"].startswith("model small, test set inhouse digest ")
    assert "1 run(s) of another model or test-set version left out" in result["ap50_caption"]
    client = mlflow.MlflowClient()
    for mix, run_id in runs.items():
        assert ap[mix] == [f"{client.get_run(run_id).data.metrics['inhouse/AP50']:.4f}"]
    ratios8 = {row[0]: dict(zip(result["ratios"][0][0][1:], row[1:])) for row in result["ratios"][0][1:]}
    assert ratios8["NVIDIA A100-SXM4-40GB x4"]["Tesla V100-SXM2-16GB x4"] == "1.40"
    assert ratios8["NVIDIA A100-SXM4-40GB x8"]["NVIDIA A100-SXM4-40GB x4"] == "2.00"
    # like with like: ResNet-50 at 800 px bf16 is its own row and its own ratio table, never averaged with
    # the other setups; 1024 px is another setup again
    speed = {row[0]: row[1] for row in result["speed"][1:]}
    r50_label = "NVIDIA A100-SXM4-40GB x4 | fasterrcnn_resnet50_fpn 800/1333px bf16"
    assert speed[r50_label] == "4.0000" and speed["NVIDIA A100-SXM4-40GB x4"] == "1.0000"
    assert speed["NVIDIA A100-SXM4-40GB x4 | fasterrcnn_resnet50_fpn 1024/1333px bf16"] == "9.0000"
    assert speed["cpu | small"] == "0.5000"  # evalkit's training runs log model=small
    r50_ratios = next(m for m in result["ratios"] if m[0][0] == "batch 8, fasterrcnn_resnet50_fpn 800/1333px "
                      "bf16: row is N x faster than column")
    assert [row[0] for row in r50_ratios[1:]] == ["NVIDIA A100-SXM4-40GB x4 | fasterrcnn_resnet50_fpn 800/1333px bf16",
                                                  "NVIDIA A100-SXM4-40GB x8 | fasterrcnn_resnet50_fpn 800/1333px bf16"]
    assert r50_ratios[2][1] == "2.00"
    assert result["examples"] == 2
    page = (tmp_path / "out" / "report.html").read_text()
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 3  # speed chart + 2 examples
    assert "Tesla V100-SXM2-16GB x4" in page and "cpu" in page
    # the outcome: the champion (none: nothing was promoted) and the MLflow UI's comparison of the AP50 runs
    assert "no champion yet" in page and result["champion"].startswith("no champion yet")
    link = re.search(r"<a id='compare-runs' href='([^']+)'>Compare the 2 training runs</a>", page)
    assert link and html.unescape(link.group(1)) == result["compare_url"]
    query = urllib.parse.parse_qs(result["compare_url"].split("#/compare-runs?", 1)[1])
    assert sorted(json.loads(query["runs"][0])) == sorted(runs.values())
    artifacts = {a.path for a in client.list_artifacts(result["run_id"], "report")}
    assert {"report/report.html", "report/time_per_batch.png", "report/tables.md"} <= artifacts
    assert client.get_run(result["run_id"]).data.tags["persondet.entry_point"] == "report"


def test_dataset_table_names_the_new_sources_with_their_settings(tmp_path, monkeypatch):
    """A row per source, named with its reader settings where they are not the defaults, newest run first."""
    import mlflow

    from persondet.report import dataset_label, datasets_table
    from persondet.tracking.search import search_runs

    assert dataset_label("citypersons", {"citypersons_split": "train", "citypersons_subset": "all"}) == "citypersons"
    assert dataset_label("crowdhuman", {"crowdhuman_split": "val", "crowdhuman_box": "vbox"}) == "crowdhuman (val, vbox)"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.chdir(tmp_path)
    mlflow.set_experiment("persondet")
    stats = {"citypersons": {"images": 7, "objects": 40, "avg_rel_size": 0.004},
             "crowdhuman": {"images": 9, "objects": 200, "avg_rel_size": 0.02},
             "merged": {"images": 16, "objects": 240, "avg_rel_size": 0.0173}}
    for subset, box in (("all", "fbox"), ("reasonable", "vbox")):
        with mlflow.start_run(tags={"persondet.entry_point": "prepare"}):
            mlflow.log_params({"mix": "crowdhuman+citypersons", "citypersons_split": "train",
                               "citypersons_subset": subset, "crowdhuman_split": "train", "crowdhuman_box": box})
            (tmp_path / "stats.json").write_text(json.dumps(stats))
            mlflow.log_artifact(str(tmp_path / "stats.json"), "prepared")
    table = datasets_table(search_runs("persondet", "prepare"), str(tmp_path / "dl"))
    assert table[1:] == [["citypersons (reasonable)", "7", "40", "0.0040"], ["citypersons", "7", "40", "0.0040"],
                         ["crowdhuman (vbox)", "9", "200", "0.0200"], ["crowdhuman", "9", "200", "0.0200"],
                         ["citypersons+crowdhuman", "16", "240", "0.0173"]]  # by source, newest run first
