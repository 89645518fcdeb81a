"""evaluate: a registered model on a COCO-format test set (real MLflow on SQLite, real pycocotools)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import evalkit
from persondet.config import EvaluateConfig
from persondet.errors import PersondetError
from persondet.evaluation import evaluate, load_test_set
from persondet.inference import ImageFiles, predict
from persondet.metrics import HEADLINE, coco_metrics

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """One SQLite store, one test set and one registered untrained model for the whole module."""
    root = tmp_path_factory.mktemp("evaluation")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        mp.chdir(root)
        torch.set_num_threads(1)
        annotations = evalkit.write_test_set(root / "inhouse")
        train_json = root / "train.json"
        train_json.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
        run_id, version = evalkit.log_training_run(data=str(train_json))
        from mlflow import MlflowClient

        MlflowClient().set_registered_model_alias("persondet", "champion", version)
        yield {"root": root, "annotations": annotations, "images": root / "inhouse" / "images",
               "run_id": run_id, "version": version}


def _config(env, **kw):
    kw.setdefault("test_annotations", str(env["annotations"]))
    kw.setdefault("test_images", str(env["images"]))
    kw.setdefault("person_category", "pedestrian")
    return EvaluateConfig(**kw)


class _Oracle(nn.Module):
    """A detector that answers each image with its ground-truth boxes (xyxy), to check conversions."""

    def __init__(self, boxes_by_size):
        super().__init__()
        from torchvision.models.detection.transform import GeneralizedRCNNTransform

        self.boxes_by_size = boxes_by_size
        self.transform = GeneralizedRCNNTransform(128, 192, [0.0] * 3, [1.0] * 3)  # how batches are planned

    def forward(self, images):
        out = []
        for image in images:
            boxes = torch.tensor(self.boxes_by_size.get(tuple(image.shape[1:]), []), dtype=torch.float32)
            boxes = boxes.reshape(-1, 4)
            out.append({"boxes": boxes, "scores": torch.full((len(boxes),), 0.9),
                        "labels": torch.ones(len(boxes), dtype=torch.int64)})
        return out


def test_detection_results_are_coco_xywh_in_the_test_sets_category(env):
    test_set = load_test_set(str(env["annotations"]), str(env["images"]), "pedestrian")
    assert test_set.category_id == 3
    sizes = {im["id"]: (im["height"], im["width"]) for im in test_set.dataset["images"]}
    boxes = {}
    for ann in test_set.dataset["annotations"]:
        x, y, w, h = ann["bbox"]
        boxes.setdefault(sizes[ann["image_id"]], []).append([x, y, x + w, y + h])
    detections = predict(_Oracle(boxes), ImageFiles(sorted(test_set.image_paths.items())), torch.device("cpu"),
                         batch_size=4, category_id=test_set.category_id)
    assert {d["category_id"] for d in detections} == {3}
    stats = coco_metrics(test_set.dataset, detections, 3)  # area/iscrowd are missing in this set
    assert stats["AP50"] == pytest.approx(1.0)
    assert stats["AP"] > 0.95


def test_evaluate_logs_run_and_training_run(env):
    import mlflow

    result = evaluate(_config(env, model_uri="models:/persondet@champion", examples=2))
    assert list(result["metrics"]) == list(HEADLINE) and list(result["metrics"])[0] == "AP50"
    assert result["training_run_id"] == env["run_id"]
    assert result["test_name"] == "inhouse"  # generic stem "annotations": the folder name
    client = mlflow.MlflowClient()
    run = client.get_run(result["run_id"])
    assert run.data.tags["persondet.entry_point"] == "evaluate"
    trained_name = client.get_run(env["run_id"]).info.run_name
    assert run.info.run_name == f"evaluate {trained_name} on inhouse"
    assert run.data.tags["persondet.leakage"] == "false"
    assert run.data.params["model_uri"] == "models:/persondet@champion"
    assert run.data.params["test_digest"] == result["test_digest"]
    assert run.data.metrics["AP50"] == pytest.approx(result["metrics"]["AP50"])
    paths = {a.path for a in client.list_artifacts(result["run_id"], "evaluation")}
    assert {"evaluation/detections.json", "evaluation/pr_curve_iou50.png", "evaluation/examples"} <= paths
    assert len(client.list_artifacts(result["run_id"], "evaluation/examples")) == 2
    local = mlflow.artifacts.download_artifacts(run_id=result["run_id"], artifact_path="evaluation/detections.json")
    detections = json.loads(Path(local).read_text())
    assert len(detections) == result["detections"] > 0
    # the logged numbers are COCOeval's on the logged detections
    recomputed = coco_metrics(json.loads(env["annotations"].read_text()), detections, 3)
    assert recomputed["AP50"] == pytest.approx(result["metrics"]["AP50"])
    training = client.get_run(env["run_id"])
    assert training.data.metrics["inhouse/AP50"] == pytest.approx(result["metrics"]["AP50"])
    assert training.data.tags["inhouse/digest"] == result["test_digest"]


def test_run_uri_category_id_and_digest(env):
    by_run = evaluate(_config(env, model_uri=f"runs:/{env['run_id']}/model", person_category="3",
                              test_name="office cams", examples=0, log_to_training_run=False))
    assert by_run["test_name"] == "office_cams"
    by_version = load_test_set(str(env["annotations"]), str(env["images"]), "pedestrian")
    assert by_run["test_digest"] == by_version.digest
    # another image content is another test set
    copy = env["root"] / "changed"
    shutil.copytree(env["root"] / "inhouse", copy)
    first = sorted((copy / "images" / "cam1").iterdir())[0]
    from PIL import Image

    Image.new("RGB", (40, 40)).save(first)
    assert load_test_set(str(copy / "annotations.json"), str(copy / "images"), "3").digest != by_run["test_digest"]


def test_leakage_by_path_and_by_content(env, tmp_path):
    import mlflow

    test_set = load_test_set(str(env["annotations"]), str(env["images"]), "pedestrian")
    files = sorted(test_set.image_paths.items())
    folder = env["root"] / "leaky-training-set"  # beside the test set: its files are reached without '..'
    folder.mkdir()
    shutil.copy(files[1][1], folder / "copy.png")  # same bytes, another path
    train = {"images": [{"id": 1, "file_name": os.path.relpath(files[0][1], env["root"])},
                        {"id": 2, "file_name": "leaky-training-set/copy.png"}], "annotations": [], "categories": []}
    (env["root"] / "leaky-train.json").write_text(json.dumps(train))
    run_id, _ = evalkit.log_training_run(data=str(env["root"] / "leaky-train.json"), register=False)
    result = evaluate(_config(env, model_uri=f"runs:/{run_id}/model", examples=0))
    assert result["leaked"] == [files[0][0], files[1][0]]
    tags = mlflow.MlflowClient().get_run(result["run_id"]).data.tags
    assert tags["persondet.leakage"] == "true" and tags["persondet.leakage_count"] == "2"


@pytest.mark.slow
def test_cuhk_all_split_model_on_the_cuhk_test_pool_is_flagged(env, tmp_path):
    prepare_mod = pytest.importorskip("persondet.prepare")  # lands with the prepare step
    from persondet.config import PrepareConfig

    trained = prepare_mod.prepare(PrepareConfig(mix="cuhk", cuhk_split="all", output_dir=str(tmp_path / "all")))
    pool = prepare_mod.prepare(PrepareConfig(mix="cuhk", cuhk_split="test", output_dir=str(tmp_path / "pool")))
    train_json = _prepared_json(trained, tmp_path / "all")
    pool_json = _prepared_json(pool, tmp_path / "pool")
    run_id, _ = evalkit.log_training_run(data=str(train_json), mix="cuhk", register=False)
    result = evaluate(EvaluateConfig(model_uri=f"runs:/{run_id}/model", test_annotations=str(pool_json),
                                     examples=0, log_to_training_run=False))
    n_pool = len(json.loads(Path(pool_json).read_text())["images"])
    assert n_pool > 0 and len(result["leaked"]) == n_pool


def _prepared_json(result, output_dir: Path) -> Path:
    for candidate in (getattr(result, "train_json", None), output_dir / "prepared" / "train.json",
                      output_dir / "train.json"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    found = sorted(Path(output_dir).rglob("train.json"))
    assert found, f"prepare wrote no train.json under {output_dir}"
    return found[0]


# --- bad input: one line, the value named -----------------------------------------------------------

@pytest.mark.parametrize("uri", ["models:/persondet/99", "models:/nosuchmodel@champion",
                                 "runs:/0123456789abcdef/model", "persondet-v1"])
def test_unknown_model_uri(env, uri):
    with pytest.raises(PersondetError, match="model_uri=") as info:
        evaluate(_config(env, model_uri=uri))
    assert uri in str(info.value) and "\n" not in str(info.value)


def test_test_set_without_person_category(env, tmp_path):
    ann = evalkit.write_test_set(tmp_path, n_images=2, category=(7, "bicycle"))
    with pytest.raises(PersondetError, match=r"no category named 'person' \(categories: 1:car, 7:bicycle\)"):
        load_test_set(str(ann), str(tmp_path / "images"))
    with pytest.raises(PersondetError, match="no category with id 3"):
        load_test_set(str(ann), str(tmp_path / "images"), "3")


def test_missing_test_images(env, tmp_path):
    ann = evalkit.write_test_set(tmp_path, n_images=3)
    (tmp_path / "images" / "cam0" / "frame_002.jpg").unlink()
    with pytest.raises(PersondetError, match=r"1 of 3 test images are missing, e.g. .*frame_002.jpg"):
        load_test_set(str(ann), str(tmp_path / "images"), "pedestrian")
    with pytest.raises(PersondetError, match="no such file"):
        load_test_set(str(tmp_path / "nope.json"))


def test_empty_test_set(env, tmp_path):
    path = tmp_path / "empty.json"
    path.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "person"}]}))
    with pytest.raises(PersondetError, match="empty test set"):
        load_test_set(str(path))
    path.write_text("{not json")
    with pytest.raises(PersondetError, match="not valid JSON"):
        load_test_set(str(path))


def test_entry_point_unknown_uri_exits_2_with_one_line(env):
    proc = subprocess.run([sys.executable, str(ROOT / "entrypoints" / "evaluate.py"),
                           "--model-uri", "models:/persondet/42", "--test-annotations", str(env["annotations"]),
                           "--test-images", str(env["images"]), "--person-category", "pedestrian"],
                          capture_output=True, text=True, timeout=120, env={**os.environ})
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("persondet: error:")]
    assert len(lines) == 1 and "models:/persondet/42" in lines[0]


# --- a results file instead of a model; ignore regions; the device ----------------------------------

def _logged_detections(run_id: str) -> list[dict]:
    import mlflow

    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="evaluation/detections.json")
    return json.loads(Path(local).read_text())


def test_a_results_file_is_scored_like_the_model_that_wrote_it_without_the_images(env, tmp_path):
    import mlflow

    by_model = evaluate(_config(env, model_uri=f"runs:/{env['run_id']}/model", examples=0, log_to_training_run=False))
    results = _logged_detections(by_model["run_id"])
    other = {"image_id": 1, "category_id": 1, "bbox": [0.0, 0.0, 9.0, 9.0], "score": 0.99}  # "car": left out
    (tmp_path / "results.json").write_text(json.dumps(results + [other]))
    shutil.copy(env["annotations"], tmp_path / "annotations.json")  # the annotation file alone, no images
    by_file = evaluate(EvaluateConfig(detections=str(tmp_path / "results.json"), person_category="pedestrian",
                                      test_annotations=str(tmp_path / "annotations.json"), test_name="inhouse"))
    assert by_file["metrics"] == by_model["metrics"] and by_file["metrics"]["AP50"] > 0
    assert by_file["training_run_id"] is None and by_file["detections"] == len(results)
    run = mlflow.MlflowClient().get_run(by_file["run_id"])
    assert run.data.params["detections"] == str(tmp_path / "results.json")
    assert run.data.params["detections_other_categories"] == "1"
    assert set(run.data.metrics) == set(mlflow.MlflowClient().get_run(by_model["run_id"]).data.metrics)
    # with the images at hand the digest is the test set's own: what promote compares
    with_images = evaluate(_config(env, detections=str(tmp_path / "results.json"), examples=1))
    assert with_images["test_digest"] == by_model["test_digest"] != by_file["test_digest"]


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not valid JSON"),
    ('{"annotations": []}', "not a COCO results file: a JSON list"),
    ('[{"image_id": 1, "category_id": 3, "bbox": [1, 2, 3, 4]}]', "entry 0 has no score"),
    ('[{"image_id": 1, "category_id": 3, "bbox": [1, 2, 3, 4], "score": 0.5},'
     ' {"image_id": 99, "category_id": 3, "bbox": [1, 2, 3, 4], "score": 0.5}]', "entry 1 image_id 99 is not an image"),
    ('[{"image_id": 1, "category_id": 3, "bbox": [1, 2, NaN, 4], "score": 0.5}]', r"entry 0 bbox \[1, 2, nan, 4\]"),
    ('[{"image_id": 1, "category_id": 3, "bbox": [1, 2, -3, 4], "score": 0.5}]', "negative width"),
    ('[{"image_id": 1, "category_id": 3, "bbox": [1, 2, 3], "score": 0.5}]', "is not \\[x, y, w, h\\]"),
    ('[{"image_id": "1", "category_id": 3, "bbox": [1, 2, 3, 4], "score": 0.5}]', "image_id '1' is not an integer"),
    ('[{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}]',
     "no entry has category_id 3, the test set's person category \\(the file's category ids: 1\\)"),
])
def test_a_bad_results_file_is_one_line_naming_the_file_and_the_entry(env, tmp_path, content, message):
    path = tmp_path / "dets.json"
    path.write_text(content)
    with pytest.raises(PersondetError, match=message) as info:
        evaluate(_config(env, detections=str(path)))
    assert f"detections={str(path)!r}" in str(info.value) and "\n" not in str(info.value)


def test_model_uri_or_detections_one_of_them():
    from persondet.config import ConfigError

    with pytest.raises(ConfigError, match="give model_uri .* or detections"):
        EvaluateConfig(model_uri="models:/persondet/1", detections="d.json")
    with pytest.raises(ConfigError, match="give model_uri .* or detections"):
        EvaluateConfig()


def test_ignore_regions_are_neither_hits_nor_misses_and_are_counted(env, tmp_path):
    """The non-ignored boxes detected exactly: AP50 = AR100 = 1 with the rule; the same detections score
    less when the regions are ordinary persons (the detector 'misses' them)."""
    import mlflow

    dataset = json.loads(env["annotations"].read_text())
    persons = [a for a in dataset["annotations"] if a["category_id"] == 3]
    persons[0]["ignore"] = 1  # CityPersons' flag
    persons[1]["extra"] = {"ignore": 1, "box_id": 7}  # CrowdHuman's, as some converters write it
    persons[2]["ignore"] = 0
    (tmp_path / "ignored.json").write_text(json.dumps(dataset))
    oracle = [{"image_id": a["image_id"], "category_id": 3, "bbox": a["bbox"], "score": 0.9}
              for a in persons if not (a.get("ignore") or a.get("extra"))]
    # a detection on an ignore region is no false alarm either
    oracle += [{"image_id": persons[0]["image_id"], "category_id": 3, "bbox": persons[0]["bbox"], "score": 0.95}]
    (tmp_path / "oracle.json").write_text(json.dumps(oracle))
    result = evaluate(EvaluateConfig(detections=str(tmp_path / "oracle.json"),
                                     test_annotations=str(tmp_path / "ignored.json"),
                                     test_images=str(env["images"]), person_category="pedestrian", examples=1))
    assert result["metrics"]["AP50"] == 1.0 and result["metrics"]["AR100"] == 1.0
    assert result["ignore_regions"] == 2
    run = mlflow.MlflowClient().get_run(result["run_id"])
    assert run.data.metrics["ignore_regions"] == 2
    stats = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=result["run_id"], artifact_path="evaluation/test_stats.json")).read_text())
    assert (stats["images"], stats["objects"], stats["ignore_regions"]) == (6, len(persons) - 2, 2)
    as_persons = coco_metrics(json.loads(env["annotations"].read_text()), oracle, 3)
    assert as_persons["AP50"] < 1.0 and as_persons["AR100"] < 1.0


def test_the_device_is_chosen_and_logged(env):
    import mlflow

    result = evaluate(_config(env, model_uri=f"runs:/{env['run_id']}/model", examples=0, device="cpu",
                              log_to_training_run=False, workers=1))
    params = mlflow.MlflowClient().get_run(result["run_id"]).data.params
    assert (params["device"], params["device_resolved"]) == ("cpu", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(PersondetError, match="device=cuda but no CUDA device is visible"):
            evaluate(_config(env, model_uri=f"runs:/{env['run_id']}/model", device="cuda"))


def test_evaluate_logs_the_same_metrics_at_batch_1_and_8(env):
    """The step itself (its mixed-size test set resizes to several shapes): batch size changes nothing."""
    runs = [evaluate(_config(env, model_uri=f"runs:/{env['run_id']}/model", examples=0, batch_size=b,
                             log_to_training_run=False, workers=0)) for b in (1, 8)]
    assert runs[0]["metrics"] == runs[1]["metrics"] and runs[0]["detections"] == runs[1]["detections"] > 0
