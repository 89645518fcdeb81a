"""Training: config, model, data, the 1x recipe and single-process tracked trainings (CPU, tiny data)."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from persondet.config import ConfigError, TrainConfig
from persondet.errors import PersondetError
from training_fixtures import make_prepared_set

TINY = {"epochs": "2", "batch_size": "2", "workers": "0", "min_size": "96", "max_size": "128"}


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.5")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)  # the default artifact store ./mlruns lands in tmp_path
    torch.set_num_threads(1)
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")


def config(data: Path, **values: str) -> TrainConfig:
    return TrainConfig.from_strings({"data": str(data), **TINY, **values})


# --- config ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("values, message", [
    ({"data": ""}, "data is required"),
    ({"batch_size": "0"}, "batch_size=0"),
    ({"batch_size": "3", "nproc": "2"}, "divisible"),
    ({"epochs": "0"}, "epochs=0"),
    ({"lr": "-1"}, "lr="),
    ({"lr": "fast"}, "lr='fast'"),
    ({"amp": "fp8"}, "amp='fp8'"),
    ({"model": "yolo"}, "model='yolo'"),
    ({"node_rank": "1"}, "node_rank=1"),
    ({"val_annotations": "a.json"}, "val_annotations and val_images"),
    ({"source_weights": "coco=x"}, "source_weights"),
    ({"source_weights": "coco=0"}, "at least one weight"),
    ({"min_size": "8"}, "min_size=8"),
    ({"decode": "torchvision-cuda", "workers": "2"}, "workers=0"),
])
def test_bad_config_values_are_one_line_errors(values, message):
    with pytest.raises(ConfigError, match=message) as info:
        TrainConfig.from_strings({"data": "x.json", **values})
    assert "\n" not in str(info.value)


def test_lr_is_logged_as_typed_and_auto_follows_batch_size():
    typed = TrainConfig.from_strings({"data": "x", "lr": "2e-2", "batch_size": "16"})
    assert typed.to_params()["lr"] == "2e-2" and typed.learning_rate == 0.02
    auto = TrainConfig.from_strings({"data": "x", "batch_size": "8"})
    assert auto.to_params()["lr"] == "auto" and auto.learning_rate == pytest.approx(0.01)


def test_entry_point_reports_bad_input_on_one_line(tmp_path):
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "entrypoints" / "train.py"
    for args, message in ((["--data", "/nonexistent/train.json"], "data='/nonexistent/train.json' is neither"),
                          (["--data", "x.json", "--batch-size", "zero"], "batch_size='zero' is not a valid int")):
        proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                              cwd=tmp_path, env={**__import__("os").environ,
                                                 "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db"})
        assert proc.returncode == 2
        err = proc.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("persondet: error: ") and message in err[0]


# --- model -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["small", "fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2",
                                  "fasterrcnn_mobilenet_v3_large_fpn"])
def test_every_model_builds_with_two_classes(name):
    from persondet.model import build_detector

    model = build_detector(name, min_size=128, max_size=160)
    assert model.roi_heads.box_predictor.cls_score.out_features == 2
    assert model.transform.min_size == (128,)


def test_person_detector_pads_rows_with_score_minus_one():
    from persondet.model import PersonDetector, build_detector

    torch.manual_seed(0)
    module = PersonDetector(build_detector("small"), max_detections=7)
    out = module(torch.randint(0, 255, (2, 48, 64, 3), dtype=torch.uint8))
    assert out.shape == (2, 7, 6) and out.dtype == torch.float32
    scores = out[..., 4]
    assert ((scores == -1) | ((scores >= 0) & (scores <= 1))).all()


# --- data --------------------------------------------------------------------------------------------

def test_dataset_resolves_roots_skips_crowds_and_converts_grayscale(tmp_path):
    from persondet.data import PersonDataset, load_prepared

    dataset, path = load_prepared(str(make_prepared_set(tmp_path)))
    ds = PersonDataset(dataset, path.parent, train=False)
    image, target = ds[0]  # image 1: grayscale JPEG
    assert image.dtype == torch.uint8 and image.shape[0] == 3
    assert ds[1][1]["boxes"].shape == (0, 4)  # image 2 has no person
    assert len(ds[2][1]["boxes"]) == 1  # image 3: one person and one crowd region
    assert str(ds.path(0)).startswith(str(tmp_path / "cuhk_root"))
    via_torchvision = PersonDataset(dataset, path.parent, train=False, decode="torchvision")[0][0]
    assert via_torchvision.shape == image.shape


def test_ignore_regions_are_never_training_boxes(tmp_path):
    import json

    from persondet.data import PersonDataset, load_prepared

    path = make_prepared_set(tmp_path)
    doc = json.loads(path.read_text())
    person = next(a for a in doc["annotations"] if a["image_id"] == 4)
    region = {**person, "bbox": [1, 1, 40, 40], "area": 1600}
    doc["annotations"] += [{**region, "id": 100, "ignore": 1},  # CityPersons label 0, a CrowdHuman mask
                           {**region, "id": 101, "extra": {"ignore": 1}},  # CrowdHuman-style nesting
                           {**region, "id": 102, "ignore": 0, "extra": {"ignore": 0, "box_id": 3}}]  # a person
    path.write_text(json.dumps(doc))
    dataset, _ = load_prepared(str(path))
    ds = PersonDataset(dataset, path.parent, train=False)
    x, y, w, h = person["bbox"]
    assert ds.boxes[3] == [[x, y, x + w, y + h], [1.0, 1.0, 41.0, 41.0]]  # the person and annotation 102 only
    assert ds[3][1]["boxes"].tolist() == ds.boxes[3]


def test_horizontal_flip_moves_boxes_with_the_image(tmp_path):
    from persondet.data import PersonDataset, load_prepared

    dataset, path = load_prepared(str(make_prepared_set(tmp_path)))
    plain = PersonDataset(dataset, path.parent, train=False)
    flipping = PersonDataset(dataset, path.parent, train=True, seed=0)
    flipped = 0
    for epoch in range(4):
        flipping.set_epoch(epoch)
        img, target = flipping[3]
        ref_img, ref = plain[3]
        if not torch.equal(img, ref_img):
            flipped += 1
            width = ref_img.shape[-1]
            assert torch.equal(img, ref_img.flip(-1))
            assert torch.allclose(target["boxes"][:, [0, 2]], width - ref["boxes"][:, [2, 0]])
    assert 0 < flipped < 4


def test_batches_group_aspect_ratios_and_split_across_ranks(tmp_path):
    from persondet.data import PersonDataset, load_prepared, make_loader

    dataset, path = load_prepared(str(make_prepared_set(tmp_path, images=12)))
    ds = PersonDataset(dataset, path.parent)
    groups = ds.aspect_groups()
    seen = []
    for rank in (0, 1):
        loader = make_loader(ds, 2, world_size=2, rank=rank, seed=1)
        batches = list(loader.batch_sampler)
        assert len(batches) == len(loader) == 3
        seen += [i for b in batches for i in b]
        assert sum(len({groups[i] for i in b}) == 1 for b in batches) >= 2
    assert sorted(seen) == list(range(12))  # the two ranks share the images without overlap


def test_source_weights_steer_sampling(tmp_path):
    from persondet.data import PersonDataset, load_prepared, make_loader

    dataset, path = load_prepared(str(make_prepared_set(tmp_path, images=12)))
    ds = PersonDataset(dataset, path.parent)
    loader = make_loader(ds, 2, source_weights={"coco": 1.0}, seed=3)
    drawn = [ds.sources[i] for epoch in range(5) for i in loader.batch_sampler.sampler]
    assert set(drawn) == {"coco"}
    with pytest.raises(PersondetError, match="source_weights names inhouse"):
        make_loader(ds, 2, source_weights={"inhouse": 1.0})


def test_plain_coco_json_is_read_relative_to_its_folder(tmp_path):
    import json

    from persondet.data import PersonDataset, load_prepared

    make_prepared_set(tmp_path, images=3, sources=("coco",))
    doc = json.loads((tmp_path / "train.json").read_text())
    del doc["persondet"]
    for im in doc["images"]:
        im["file_name"] = "coco_root/" + im["file_name"].split("/", 1)[1]
    doc["categories"] = [{"id": 7, "name": "pedestrian"}]
    for ann in doc["annotations"]:
        ann["category_id"] = 7
    (tmp_path / "plain.json").write_text(json.dumps(doc))
    data, path = load_prepared(str(tmp_path / "plain.json"))
    ds = PersonDataset(data, path.parent)
    assert ds.category_id == 7 and ds[0][0].shape[0] == 3
    with pytest.raises(PersondetError, match="not a COCO file"):
        (tmp_path / "bad.json").write_text("{}")
        load_prepared(str(tmp_path / "bad.json"))


# --- the 1x recipe -----------------------------------------------------------------------------------

def test_one_x_schedule_steps_at_8_and_11_of_12_with_warmup():
    from persondet.engine import lr_milestones, make_optimizer, make_scheduler

    assert lr_milestones(12) == [8, 11] and lr_milestones(24) == [16, 22] and lr_milestones(1) == []
    model = torch.nn.Linear(2, 2)
    opt = make_optimizer(model, lr=0.02)
    assert opt.defaults["momentum"] == 0.9 and opt.defaults["weight_decay"] == 1e-4
    sched = make_scheduler(opt, epochs=12, iters_per_epoch=10, warmup_iters=1000)
    lrs = []
    for _ in range(120):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.02 * 0.001)  # warm-up capped at the first epoch (9 iterations)
    assert lrs[9] == pytest.approx(0.02) and lrs[79] == pytest.approx(0.02)
    assert lrs[80] == pytest.approx(0.002) and lrs[110] == pytest.approx(0.0002)


# --- tracked trainings -------------------------------------------------------------------------------

@pytest.mark.slow
def test_training_logs_the_contract_and_registers_a_servable_model(tmp_path, tracking):
    import mlflow

    from persondet.training import launch

    data = make_prepared_set(tmp_path / "d")
    val = make_prepared_set(tmp_path / "v", images=4, seed=5)
    metrics = launch(config(data, source_weights="coco=1,cuhk=2", checkpoint_dir=str(tmp_path / "ck"),
                            val_annotations=str(val), val_images=str(tmp_path / "v")))
    assert metrics["images_per_s"] > 0 and metrics["time_per_iter_s"] > 0 and "val/AP50" in metrics
    (run,) = tracking.search_runs([tracking.get_experiment_by_name("persondet").experiment_id])
    p = run.data.params
    assert (p["gpu_type"], p["gpu_count"], p["batch_size"], p["batch_size_per_device"]) == ("cpu", "0", "2", "2")
    assert (p["dataset_mix"], p["model"], p["model_resolved"], p["epochs"], p["lr"], p["world_size"]) == (
        "coco+cuhk", "auto", "small", "2", "auto", "1")
    assert p["train_images"] == "8" and p["source_weights"] == "coco=1,cuhk=2"
    assert run.info.status == "FINISHED" and run.info.run_name == "train coco+cuhk b2 cpu"
    steps = [m.step for m in tracking.get_metric_history(run.info.run_id, "loss")]
    assert steps == list(range(8))  # 4 iterations x 2 epochs, continuous
    for key in ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg", "lr"):
        assert len(tracking.get_metric_history(run.info.run_id, key)) == 8
    assert [m.step for m in tracking.get_metric_history(run.info.run_id, "val/AP50")] == [0, 1]
    for key in ("train_time_s", "time_per_iter_s", "images_per_s"):
        assert run.data.metrics[key] > 0
    assert any(k.startswith("system/") for k in run.data.metrics)
    assert [a.path for a in tracking.list_artifacts(run.info.run_id, "checkpoints")] == ["checkpoints/last.pt"]
    assert (tmp_path / "ck" / "last.pt").is_file()

    (version,) = tracking.search_model_versions("name = 'persondet'")
    assert version.tags == {"dataset_mix": "coco+cuhk", "batch_size": "2", "gpu_type": "cpu",
                            "gpu_count": "0", "training_run_id": run.info.run_id}
    model = mlflow.pyfunc.load_model(f"models:/persondet/{version.version}")
    out = model.predict(np.zeros((2, 72, 96, 3), dtype=np.uint8))
    assert out.shape == (2, 100, 6)


@pytest.mark.slow
def test_non_finite_loss_stops_with_the_iteration_and_keeps_the_last_checkpoint(tmp_path, tracking, monkeypatch):
    import torchvision.models.detection.roi_heads as roi_heads

    from persondet.training import launch

    real_loss, calls = roi_heads.fastrcnn_loss, []

    def poisoned(*args):
        calls.append(1)
        cls_loss, box_loss = real_loss(*args)
        return (cls_loss * float("nan"), box_loss) if len(calls) >= 6 else (cls_loss, box_loss)

    monkeypatch.setattr(roi_heads, "fastrcnn_loss", poisoned)
    with pytest.raises(PersondetError, match=r"loss is nan at iteration 5 \(epoch 1, batch 1\)") as info:
        launch(config(make_prepared_set(tmp_path / "d"), checkpoint_dir=str(tmp_path / "ck")))
    assert "\n" not in str(info.value)
    (run,) = tracking.search_runs([tracking.get_experiment_by_name("persondet").experiment_id])
    assert run.info.status == "FAILED"
    assert torch.load(tmp_path / "ck" / "last.pt", weights_only=True)["epoch"] == 0
    assert [m.step for m in tracking.get_metric_history(run.info.run_id, "loss")] == [0, 1, 2, 3, 4]


def test_a_stopping_epoch_callback_ends_the_run_killed(tmp_path, tracking):
    from persondet.training import train

    class Pruned(Exception):
        pass

    def prune(epoch, metrics):
        assert "epoch_loss" in metrics
        raise Pruned

    with pytest.raises(Pruned):
        train(config(make_prepared_set(tmp_path / "d"), epochs="3", max_iters_per_epoch="1",
                     register="false"), on_epoch_end=prune)
    (run,) = tracking.search_runs([tracking.get_experiment_by_name("persondet").experiment_id])
    assert run.info.status == "KILLED"
    import mlflow

    assert mlflow.active_run() is None


def test_unreachable_tracking_server_is_a_clear_error(tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    from persondet.training import launch

    with pytest.raises(PersondetError, match=rf"cannot reach the MLflow tracking server at "
                                             rf"http://127.0.0.1:{port} after 1 retries") as info:
        launch(config(make_prepared_set(tmp_path / "d"), max_iters_per_epoch="1"))
    assert "\n" not in str(info.value)
