"""Where a training starts: the backbone's weights (auto, imagenet, none, a local file) and ``init``, a
whole earlier detector read as weights only (CPU; no network: ImageNet downloads are simulated)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from persondet.config import TrainConfig
from persondet.errors import PersondetError
from training_fixtures import make_prepared_set

ROOT = Path(__file__).resolve().parents[1]
TINY = {"epochs": "1", "batch_size": "2", "workers": "0", "min_size": "96", "max_size": "128",
        "max_iters_per_epoch": "2"}


def _trainable(model) -> list[str]:
    return [name for name, p in model.named_parameters() if p.requires_grad]


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty torch hub cache whose 'download' copies a ResNet-50 classifier's state dict generated here
    (torchvision's file cannot be fetched without a network); the calls are recorded."""
    import torch.hub
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    torch.manual_seed(0)
    state = torchvision.models.resnet50(weights=None).state_dict()
    local = tmp_path / "resnet50-classifier.pth"
    torch.save(state, local)
    calls = []

    def download(url, dst, hash_prefix=None, progress=True):
        calls.append(url)
        shutil.copyfile(local, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    return {"file": local, "state": state, "calls": calls, "hub": tmp_path / "torch-home" / "hub"}


def test_a_local_backbone_file_builds_the_network_imagenet_builds(offline_hub):
    from torchvision.ops.misc import FrozenBatchNorm2d

    from persondet.model import build_detector

    imagenet = build_detector("fasterrcnn_resnet50_fpn", weights_backbone="imagenet")
    assert offline_hub["calls"] == ["https://download.pytorch.org/models/resnet50-0676ba61.pth"]
    assert (offline_hub["hub"] / "checkpoints" / "resnet50-0676ba61.pth").is_file()  # cached for next time
    auto = build_detector("fasterrcnn_resnet50_fpn", weights_backbone="auto")
    assert len(offline_hub["calls"]) == 1  # auto is imagenet for a torchvision model, read from the cache
    local = build_detector("fasterrcnn_resnet50_fpn", weights_backbone=str(offline_hub["file"]))
    scratch = build_detector("fasterrcnn_resnet50_fpn", weights_backbone="none")

    assert _trainable(local) == _trainable(imagenet) == _trainable(auto)
    assert not any(n.startswith(("backbone.body.conv1", "backbone.body.layer1")) for n in _trainable(local))
    count = sum(p.numel() for p in local.parameters() if p.requires_grad)
    assert count == sum(p.numel() for p in imagenet.parameters() if p.requires_grad) == 41_076_761
    assert sum(p.numel() for p in scratch.parameters() if p.requires_grad) == 41_352_281  # every stage trains
    assert isinstance(local.backbone.body.bn1, FrozenBatchNorm2d) and isinstance(imagenet.backbone.body.bn1,
                                                                                 FrozenBatchNorm2d)
    for model in (imagenet, local):
        assert torch.equal(model.backbone.body.layer4[0].conv1.weight, offline_hub["state"]["layer4.0.conv1.weight"])
    assert torch.hub.get_dir() == str(offline_hub["hub"])  # the temporary cache used while building is gone


def test_backbone_file_problems_are_one_line(tmp_path, offline_hub):
    import torchvision

    from persondet.model import build_detector

    mobilenet = torchvision.models.mobilenet_v3_large(weights=None)
    torch.save({"state_dict": mobilenet.state_dict()}, tmp_path / "mobilenet.pth")  # a wrapped file is fine
    model = build_detector("fasterrcnn_mobilenet_v3_large_fpn", weights_backbone=str(tmp_path / "mobilenet.pth"))
    assert torch.equal(model.backbone.body["0"][0].weight, mobilenet.features[0][0].weight)
    torch.save({"something": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(PersondetError, match="does not fit the backbone of model=fasterrcnn_mobilenet_v3_large_fpn"):
        build_detector("fasterrcnn_mobilenet_v3_large_fpn", weights_backbone=str(tmp_path / "other.pth"))
    torch.save(torch.nn.Linear(2, 2), tmp_path / "pickled-module.pth")  # an object, not weights: never unpickled
    with pytest.raises(PersondetError, match="is not a readable state-dict file"):
        build_detector("fasterrcnn_resnet50_fpn", weights_backbone=str(tmp_path / "pickled-module.pth"))
    with pytest.raises(PersondetError, match="neither auto, none, imagenet nor an existing file"):
        build_detector("fasterrcnn_resnet50_fpn", weights_backbone=str(tmp_path / "missing.pth"))
    with pytest.raises(PersondetError, match="model=small has no pretrained backbone"):
        build_detector("small", weights_backbone="imagenet")
    assert build_detector("small", weights_backbone="auto") is not None  # auto is none for the small model


def test_offline_default_weights_fail_fast_before_any_data_is_read(tmp_path):
    """No network (a proxy that refuses every connection), an empty torch hub cache: train with a
    ResNet-50 and the default weights_backbone fails with one line naming the setting and its alternatives,
    before reading ``data`` (which would fail too), and leaves no run behind."""
    bad_data = tmp_path / "train.json"
    bad_data.write_text("{not json")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_") and k.lower() != "no_proxy"}
    env.update({"TORCH_HOME": str(tmp_path / "torch-home"), "https_proxy": "http://127.0.0.1:9",
                "HTTPS_PROXY": "http://127.0.0.1:9", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
                "PYTHONPATH": str(ROOT)})
    proc = subprocess.run([sys.executable, str(ROOT / "entrypoints" / "train.py"), "--data", str(bad_data),
                           "--model", "fasterrcnn_resnet50_fpn", "--device", "cpu"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("persondet: error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    line = errors[0]
    assert "weights_backbone=auto (imagenet for model=fasterrcnn_resnet50_fpn)" in line
    assert "weights_backbone=none" in line and "local state-dict file" in line and "resnet50-0676ba61.pth" in line
    assert "data=" not in line and "JSON" not in line  # the data was not read yet
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])] == []


@pytest.mark.slow
def test_init_starts_a_training_from_a_logged_detector_read_as_weights(tmp_path, monkeypatch):
    import mlflow

    from persondet.tracking.models import load_detector_weights
    from persondet.training import train
    from persondet.training.build import build_recipe, starting_point

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    data = make_prepared_set(tmp_path / "d")
    train(TrainConfig.from_strings({"data": str(data), **TINY}))  # registered as persondet v1
    client = mlflow.MlflowClient()
    (first,) = client.search_runs([client.get_experiment_by_name("persondet").experiment_id])
    assert (first.data.params["weights_backbone"], first.data.params["weights_backbone_resolved"]) == ("auto", "none")
    info, logged = load_detector_weights("models:/persondet/1")
    assert (info["model"], info["min_size"], info["max_size"], info["weights_backbone"]) == ("small", 96, 128, "none")

    config = TrainConfig.from_strings({"data": str(data), "init": "models:/persondet/1", "register": "false", **TINY})
    start = starting_point(config, torch.device("cpu"))
    detector = build_recipe(config, start, torch.device("cpu"), 4).detector
    assert all(torch.equal(detector.state_dict()[k], v) for k, v in logged.items())
    torch.save(logged, tmp_path / "weights.pt")  # a detector's state dict as a file: the same start
    from_file = starting_point(TrainConfig.from_strings({"data": str(data), "init": str(tmp_path / "weights.pt"),
                                                         "model": "small", **TINY}), torch.device("cpu"))
    assert all(torch.equal(from_file.init[k], v) for k, v in logged.items())

    train(config)
    (second,) = [r for r in client.search_runs([first.info.experiment_id]) if r.info.run_id != first.info.run_id]
    assert second.info.status == "FINISHED" and second.data.params["init"] == "models:/persondet/1"
    assert second.data.params["model_resolved"] == "small"

    with pytest.raises(PersondetError, match=r"init='models:/persondet/1' is a model=small, this training's is "
                                             r"model=fasterrcnn_mobilenet_v3_large_fpn"):
        starting_point(TrainConfig.from_strings({"data": str(data), "init": "models:/persondet/1",
                                                 "model": "fasterrcnn_mobilenet_v3_large_fpn"}), torch.device("cpu"))
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")
    for init, message in ((str(tmp_path / "module.pt"), "not a readable state-dict file"),
                          ("models:/persondet/7", "init='models:/persondet/7' cannot be loaded"),
                          (str(tmp_path / "none.pt"), "neither a model URI .* nor an existing file")):
        with pytest.raises(PersondetError, match=message):
            starting_point(TrainConfig.from_strings({"data": str(data), "init": init}), torch.device("cpu"))
    with pytest.raises(PersondetError, match="init and resume do not go together"):
        TrainConfig.from_strings({"data": str(data), "init": "models:/persondet/1", "resume": "abc"})
