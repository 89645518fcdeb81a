"""Bad test and training sets (issue 10, points 3 and 6): each is one line `persondet: error: ...`, exit
status 2, no evaluation run and nothing logged to the training run; training sets given as json likewise.

The cases are built from real-format files: a cut of the real COCO val2017 subset (../shared/data/coco-tiny)
and the in-house style set (sub-folders, PNG and JPEG, the person category under another id and name).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

import evalkit
from persondet.cli import run_cli
from prepare_fixtures import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
COCO_TINY = SHARED_DATA / "coco-tiny"


def _entry(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"entry_{name}", ROOT / "entrypoints" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store with one registered untrained model, for the whole module."""
    root = tmp_path_factory.mktemp("bad-sets")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        mp.chdir(root)
        import mlflow

        mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
        run_id, version = evalkit.log_training_run()
        yield {"root": root, "run_id": run_id, "uri": f"models:/persondet/{version}"}
        mlflow.set_tracking_uri(None)


def coco_tiny_set(folder: Path, images: int = 6) -> tuple[Path, Path, str]:
    """The first val2017 images holding persons, with every annotation of them (80 categories), the
    images linked into ``folder / images``.  Returns (json, image folder, person category)."""
    data = json.loads((COCO_TINY / "annotations" / "instances_val2017.json").read_text())
    person = next(c["id"] for c in data["categories"] if c["name"] == "person")
    with_person = sorted({a["image_id"] for a in data["annotations"] if a["category_id"] == person})[:images]
    data["images"] = [im for im in data["images"] if im["id"] in with_person]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in with_person]
    image_dir = folder / "images"
    image_dir.mkdir(parents=True)
    for im in data["images"]:
        os.symlink(COCO_TINY / "val2017" / im["file_name"], image_dir / im["file_name"])
    path = folder / "instances_val2017.json"
    path.write_text(json.dumps(data))
    return path, image_dir, "person"


def inhouse_set(folder: Path) -> tuple[Path, Path, str]:
    return evalkit.write_test_set(folder), folder / "images", "pedestrian"


SETS = {"coco-tiny": coco_tiny_set, "inhouse": inhouse_set}


def _person(data: dict, category: str) -> int:
    return next(c["id"] for c in data["categories"] if c["name"] == category)


def _break(case: str, data: dict, image_dir: Path, category: str) -> str:
    """Damage ``data`` (and maybe a file) as ``case`` says; the expected message (a regex)."""
    images, anns = data["images"], data["annotations"]
    person_ann = next(a for a in anns if a["category_id"] == _person(data, category))
    if case == "parent_file_name":
        images[1]["file_name"] = "../" * 12 + "etc/hostname"
        return rf"image {images[1]['id']}: file_name '(\.\./)+etc/hostname' leaves the dataset root"
    if case == "absolute_file_name":
        images[0]["file_name"] = "/etc/hostname"
        return rf"image {images[0]['id']}: file_name '/etc/hostname' is an absolute path"
    if case == "no_annotations":
        data["annotations"] = []
        return r"has no annotation of the person category \(id \d+\): there is nothing to measure AP against"
    if case == "no_person_annotations":
        data["annotations"] = [a for a in anns if a["category_id"] != _person(data, category)]
        return r"has no annotation of the person category"
    if case == "negative_bbox":
        person_ann["bbox"][2] = -5.0
        return rf"annotation {person_ann['id']} \(image {person_ann['image_id']}\): bbox .* has a negative width"
    if case == "non_numeric_bbox":
        person_ann["bbox"] = ["12", 5, 10, 10]
        return rf"annotation {person_ann['id']} \(image \d+\): bbox \['12', 5, 10, 10\] is not \[x, y, w, h\]"
    if case == "nan_bbox":  # json writes NaN, and Python's json reads it back
        person_ann["bbox"][1] = float("nan")
        return rf"annotation {person_ann['id']} \(image \d+\): bbox \[.*nan.*\] is not \[x, y, w, h\] in finite"
    if case == "annotation_without_image_id":
        del person_ann["image_id"]
        return rf"annotation {person_ann['id']} has no image_id"
    if case == "annotation_of_unlisted_image":
        person_ann["image_id"] = 987654321
        return rf"annotation {person_ann['id']} refers to image_id 987654321, not listed in images"
    if case == "duplicate_image_id":
        images[2]["id"] = images[1]["id"]
        return rf"image id {images[1]['id']} appears twice; ids must be unique"
    if case == "duplicate_annotation_id":
        anns[1]["id"] = anns[0]["id"]
        return rf"annotation id {anns[0]['id']} appears twice; ids must be unique"
    if case == "empty_image":
        target = image_dir / images[0]["file_name"]
        target.unlink()
        target.write_bytes(b"")
        return rf"1 of {len(images)} test images are empty or unreadable, e.g. image {images[0]['id']} .*\(empty file\)"
    if case == "unreadable_image":  # a JPEG's start, then garbage: found from its header, before inference
        target = image_dir / images[1]["file_name"]
        target.unlink()
        target.write_bytes(b"\xff\xd8 not really a JPEG" * 20)
        return rf"1 of {len(images)} test images are empty or unreadable, e.g. image {images[1]['id']} "
    if case == "undecodable_image":  # neither JPEG nor PNG by its header, nor anything PIL identifies
        image = min(images, key=lambda im: im["id"])
        target = image_dir / image["file_name"]
        target.unlink()
        target.write_bytes(b"GIF89a broken" * 10)
        return (rf"1 of {len(images)} test images are empty or unreadable, e.g. image {image['id']} .*"
                r"\(neither JPEG nor PNG, and no other image format PIL reads\)")
    raise AssertionError(case)


CASES = ["parent_file_name", "absolute_file_name", "no_annotations", "no_person_annotations", "negative_bbox",
         "non_numeric_bbox", "nan_bbox", "annotation_without_image_id", "annotation_of_unlisted_image",
         "duplicate_image_id", "duplicate_annotation_id", "empty_image", "unreadable_image", "undecodable_image"]


@pytest.mark.parametrize("kind", SETS)
@pytest.mark.parametrize("case", CASES)
def test_bad_test_set_is_one_line_exit_2_and_nothing_logged(store, tmp_path, capsys, kind, case):
    from mlflow import MlflowClient

    annotations, image_dir, category = SETS[kind](tmp_path / kind)
    data = json.loads(annotations.read_text())
    expected = _break(case, data, image_dir, category)
    annotations.write_text(json.dumps(data))
    argv = ["--model-uri", store["uri"], "--test-annotations", str(annotations), "--test-images", str(image_dir),
            "--person-category", category, "--examples", "1"]
    assert run_cli(_entry("evaluate"), argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err  # refused before the model is even downloaded
    last = err.splitlines()[-1]
    assert last.startswith("persondet: error: ") and err.count("persondet:") == 1 and "Traceback" not in err, err
    assert re.search(expected, last), err
    client = MlflowClient()
    experiment = client.get_experiment_by_name("persondet").experiment_id
    assert client.search_runs([experiment], "tags.`persondet.entry_point` = 'evaluate'") == []
    training = client.get_run(store["run_id"])
    assert not any("/" in key for key in training.data.metrics), training.data.metrics  # no <test>/AP50


def test_evaluate_never_reads_outside_the_test_set(store, tmp_path, capsys):
    """A prepared-set test file (roots recorded) whose name climbs out of its root is refused as well."""
    annotations, image_dir, _ = coco_tiny_set(tmp_path / "prepared", images=2)
    data = json.loads(annotations.read_text())
    data["persondet"] = {"roots": {"coco": str(image_dir)}}
    for im in data["images"]:
        im["file_name"] = f"coco/{im['file_name']}"
    data["images"][0]["file_name"] = "coco/../../../../../../etc/hostname"
    annotations.write_text(json.dumps(data))
    assert run_cli(_entry("evaluate"), ["--model-uri", store["uri"], "--test-annotations", str(annotations)]) == 2
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(rf"persondet: error: {re.escape(str(annotations))}: image {data['images'][0]['id']}: "
                        r"file_name '(\.\./)+etc/hostname' leaves the dataset root \('\.\.'\)", err), err


# --- training sets given as json (train --data, val_annotations) -------------------------------------

TRAIN_CASES = {
    "data_parent_file_name": ("data", lambda d: d["images"][0].update(file_name="../../../../etc/hostname"),
                              r"image \d+: file_name '(\.\./)+etc/hostname' leaves the dataset root"),
    "data_absolute_file_name": ("data", lambda d: d["images"][1].update(file_name="/etc/hostname"),
                                r"image \d+: file_name '/etc/hostname' is an absolute path"),
    "data_non_numeric_bbox": ("data", lambda d: d["annotations"][0].update(bbox=[1, 2, "w", 4]),
                              r"annotation \d+ \(image \d+\): bbox \[1, 2, 'w', 4\] is not \[x, y, w, h\]"),
    "data_duplicate_image_id": ("data", lambda d: d["images"][1].update(id=d["images"][0]["id"]),
                                r"image id \d+ appears twice"),
    "val_parent_file_name": ("val", lambda d: d["images"][2].update(file_name="../../../../etc/hostname"),
                             r"image \d+: file_name '(\.\./)+etc/hostname' leaves the dataset root"),
    "val_absolute_file_name": ("val", lambda d: d["images"][0].update(file_name="/etc/hostname"),
                               r"image \d+: file_name '/etc/hostname' is an absolute path"),
}


@pytest.mark.parametrize("case", TRAIN_CASES)
def test_bad_training_json_is_one_line_exit_2_and_no_run(tmp_path, monkeypatch, capsys, case):
    """A plain COCO file (the real val2017 cut) as train --data or as val_annotations."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    which, change, expected = TRAIN_CASES[case]
    good, image_dir, _ = coco_tiny_set(tmp_path / "set", images=4)
    data = json.loads(good.read_text())
    for im in data["images"]:
        im["file_name"] = f"images/{im['file_name']}"  # a plain COCO json: names relative to its folder
    good.write_text(json.dumps(data))
    change(data)
    bad = good.with_name("bad.json")
    bad.write_text(json.dumps(data))
    argv = ["--data", str(bad if which == "data" else good), "--epochs", "1", "--batch-size", "2",
            "--workers", "0", "--min-size", "96", "--max-size", "128", "--register", "false"]
    if which == "val":
        argv += ["--val-annotations", str(bad), "--val-images", str(tmp_path / "set")]
    assert run_cli(_entry("train"), argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"persondet: error: {bad}: "), err
    assert re.search(expected, err), err
    assert not (tmp_path / "mlruns").exists() and _runs(tmp_path) == []


def _runs(tmp_path: Path) -> list:
    from mlflow import MlflowClient

    if not (tmp_path / "mlflow.db").exists():
        return []
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


def test_coco_tiny_cut_is_a_good_test_set(store, tmp_path):
    """The unbroken files pass, so each case above fails for its own reason."""
    from persondet.evaluation import load_test_set

    for kind, make in SETS.items():
        annotations, image_dir, category = make(tmp_path / kind)
        test_set = load_test_set(str(annotations), str(image_dir), category)
        assert len(test_set.image_paths) >= 6 and test_set.digest
    shutil.rmtree(tmp_path / "coco-tiny")
