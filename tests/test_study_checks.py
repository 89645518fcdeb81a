"""main on a real study fails fast: every input (roots, formats, the test set and its person category, the
model, the backbone weights, each training's settings) is checked before the first step, in seconds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import evalkit
from persondet.config import MainConfig
from persondet.errors import PersondetError
from persondet.pipeline import check_study, main

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture
def study(tmp_path, monkeypatch):
    """A SQLite store, a real-layout COCO root (coco-tiny) and an in-house set whose person category is
    named ``pedestrian``, as a real one was."""
    import mlflow.tracking._tracking_service.utils as tracking_utils

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("PATH", os.environ.get("PATH", ""))
    monkeypatch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
    monkeypatch.chdir(tmp_path)
    annotations = evalkit.write_test_set(tmp_path / "inhouse")
    coco = DATA / "coco-tiny"
    if not coco.is_dir():
        pytest.skip("../shared/data is not here")
    return {"root": tmp_path, "test_annotations": str(annotations), "coco_root": str(coco),
            "test_images": str(tmp_path / "inhouse" / "images")}


def _config(study, **changes) -> MainConfig:
    settings = {"coco_root": study["coco_root"], "test_annotations": study["test_annotations"],
                "test_images": study["test_images"],
                "mixes": "coco", "batch_sizes": "2", "experiment": "study", "device": "cpu", "model": "small"}
    settings.update(changes)
    return MainConfig.from_strings({k: v for k, v in settings.items() if v is not None})


def _no_runs(study) -> bool:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{study['root']}/mlflow.db")
    return not [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


def test_the_person_category_is_checked_before_anything_runs(study):
    with pytest.raises(PersondetError, match="no category .*person.*pedestrian") as info:
        main(_config(study))
    assert "\n" not in str(info.value)
    assert _no_runs(study)  # not even the main run: nothing was prepared or trained
    checked = check_study(_config(study, person_category="pedestrian"))
    assert checked.test_parameters["person_category"] == "pedestrian"
    assert (checked.model, checked.weights_backbone) == ("small", "none")


@pytest.mark.parametrize("changes, message", [
    ({"coco_root": "{root}/nowhere"}, "coco_root='.*nowhere': no such directory"),
    ({"coco_root": "{root}"}, "coco_root=.*cannot read .*instances_train2017.json"),
    ({"mixes": "coco+cuhk", "cuhk_root": "{citypersons}"}, "Images.mat"),
    ({"mixes": "coco+citypersons", "citypersons_root": "{citypersons}"}, "citypersons_root=.*no image folder"),
    ({"mixes": "coco+crowdhuman", "crowdhuman_root": "{root}"}, "annotation_train.odgt: cannot read"),
    ({"test_annotations": "{root}/missing.json"}, "missing.json"),
    ({"nproc": "4"}, "batch_size=2 must be divisible"),
    ({"weights_backbone": "{root}/resnet.pth", "model": "fasterrcnn_resnet50_fpn"},
     "weights_backbone='.*resnet.pth' is neither auto, none, imagenet nor an existing file"),
    ({"init": "{root}/detector.pt"}, "init='.*detector.pt' is neither a model URI"),
    ({"device": "cuda"}, "device=cuda but no CUDA device"),
])
def test_each_bad_input_is_one_line_before_the_first_step(study, changes, message):
    import torch

    if changes.get("device") == "cuda" and torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    places = {"root": str(study["root"]), "citypersons": str(DATA / "citypersons-real")}
    config = _config(study, person_category="pedestrian",
                     **{k: v.format(**places) for k, v in changes.items()})
    with pytest.raises(PersondetError, match=message) as info:
        main(config)
    assert "\n" not in str(info.value)
    assert _no_runs(study)


def test_main_and_tune_expose_what_a_study_needs():
    """The settings a real study needs are main's (and tune's backbone setting), with train's names (one
    name per idea), and `mlflow run` passes them (MLproject)."""
    import yaml

    from persondet.config import TrainConfig, TuneConfig

    needed = {"person_category", "weights_backbone", "init", "device", "amp", "nproc", "min_size", "max_size",
              "workers"}
    assert needed <= set(MainConfig.__dataclass_fields__)
    assert needed - {"person_category"} <= set(TrainConfig.__dataclass_fields__)
    assert "weights_backbone" in TuneConfig.__dataclass_fields__
    project = yaml.safe_load((Path(__file__).resolve().parents[1] / "MLproject").read_text())["entry_points"]
    assert needed <= set(project["main"]["parameters"])
    assert "weights_backbone" in project["tune"]["parameters"]
    assert {"detections", "device", "coco_backend"} <= set(project["evaluate"]["parameters"])
