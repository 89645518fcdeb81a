"""The prepare step: real COCO subset end to end, hand-made trees, bad input, `mlflow run` on demo data."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io

import prepare_fixtures as fx
from persondet.cli import run_cli
from persondet.config import PrepareConfig
from persondet.datasets import image_path, recorded_roots
from persondet.prepare import prepare

REPO = Path(__file__).resolve().parents[1]
COCO_TINY = fx.SHARED_DATA / "coco-tiny"


@pytest.fixture
def tracking_env(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("PERSONDET_DEMO_HOME", str(tmp_path / "demo"))
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    import mlflow

    mlflow.set_tracking_uri(uri)  # also overrides a URI another test module may have left set
    yield uri
    mlflow.set_tracking_uri(None)


@pytest.fixture
def tracking(tracking_env):
    import mlflow

    return mlflow.MlflowClient(tracking_env)


def test_coco_tiny_end_to_end(tmp_path, tracking):
    if not COCO_TINY.exists():
        pytest.skip(f"{COCO_TINY} not present")
    from pycocotools.coco import COCO

    result = prepare(PrepareConfig(coco_root=str(COCO_TINY), mix="coco", output_dir=str(tmp_path / "out")))
    # ../shared/data/README.md: train2017 has 143 person annotations, 3 of them crowd, on 40 images
    assert result.stats["coco"] == {**result.stats["coco"], "images": 40, "objects": 140, "crowd_regions": 3}
    assert result.stats["merged"]["objects"] == 140
    assert result.counts["coco"]["images_without_persons"] == 40
    train = result.output_dir / "train.json"
    api = COCO(str(train))
    assert len(api.getAnnIds()) == 143 and len(api.getImgIds()) == 40
    dataset = json.loads(train.read_text())
    assert all(image_path(im, recorded_roots(dataset)).is_file() for im in dataset["images"])
    assert dataset["persondet"]["roots"] == {"coco": str(COCO_TINY.resolve())}
    assert json.loads((result.output_dir / "stats.json").read_text()) == result.stats
    assert sorted(p.name for p in (result.output_dir / "checks").iterdir()) == [f"coco_{k}.jpg" for k in range(4)]

    run = tracking.get_run(result.run_id)
    assert run.data.params["mix"] == "coco" and run.data.params["coco_root"] == str(COCO_TINY)
    assert run.data.metrics["coco/images"] == 40 and run.data.metrics["merged/objects"] == 140
    assert run.data.metrics["merged/avg_rel_size"] == pytest.approx(result.stats["merged"]["avg_rel_size"])
    assert run.data.tags["persondet.data_digest"] == result.digest == dataset["persondet"]["digest"]
    assert run.data.tags["dataset_mix"] == "coco" and run.info.run_name == "prepare coco"
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"coco", "prepared:coco"}
    assert inputs["prepared:coco"].dataset.digest == result.digest[:32]
    names = {a.path for a in tracking.list_artifacts(result.run_id, "prepared")}
    assert {"prepared/train.json", "prepared/stats.json", "prepared/stats.md", "prepared/rel_size_hist.png",
            "prepared/checks"} <= names
    downloaded = tracking.download_artifacts(result.run_id, "prepared/train.json", str(tmp_path / "dl"))
    assert json.loads(Path(downloaded).read_text())["persondet"]["digest"] == result.digest


def test_hand_made_trees_train_split(tmp_path, tracking_env):
    coco_root = fx.make_coco_tree(tmp_path / "coco")
    cuhk_root = fx.make_cuhk_tree(tmp_path / "cuhk")
    result = prepare(PrepareConfig(coco_root=str(coco_root), cuhk_root=str(cuhk_root), mix="coco+cuhk",
                                   cuhk_split="train", check_images=1, output_dir=str(tmp_path / "out")))
    dataset = json.loads((result.output_dir / "train.json").read_text())
    files = [im["file_name"] for im in dataset["images"]]
    # COCO: person is category 7 here; image 3 holds only a bicycle. CUHK train = all minus pool (s3).
    assert files == ["coco/train2017/000000000001.jpg", "coco/train2017/000000000002.jpg",
                     "cuhk/Image/SSM/s1.jpg", "cuhk/Image/SSM/s2.jpg"]
    cuhk_anns = [a for a in dataset["annotations"] if a["image_id"] > 2]
    assert [a["bbox"] for a in cuhk_anns] == [[10, 20, 30, 80], [100, 30, 40, 100], [280, 10, 20, 90]]
    assert [a["person_id"] for a in cuhk_anns] == [-1, 7, -1] and [a["ishard"] for a in cuhk_anns] == [0, 1, 0]
    assert result.counts["cuhk"]["dropped_boxes"] == 1 and result.counts["cuhk"]["clipped_boxes"] == 1
    assert result.stats["coco"] == {"images": 2, "objects": 2, "crowd_regions": 1, "ignore_regions": 0,
                                    "avg_rel_size": pytest.approx((200 / 3072 + 1200 / 4800) / 2)}
    assert result.stats["cuhk"]["avg_rel_size"] == pytest.approx((2400 / 76800 + 4000 / 76800 + 1800 / 60000) / 3)
    assert [im["id"] for im in dataset["images"]] == [1, 2, 3, 4]
    assert [a["id"] for a in dataset["annotations"]] == list(range(1, 7))
    assert sorted(p.name for p in (result.output_dir / "checks").iterdir()) == ["coco_0.jpg", "cuhk_0.jpg"]
    assert (tmp_path / "mlflow.db").exists() and result.run_id


# ---------------------------------------------------------------------------------------------- bad input
def _entry_point():
    spec = importlib.util.spec_from_file_location("prepare_entry", REPO / "entrypoints" / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _break(case: str, coco: Path, cuhk: Path) -> tuple[list[str], str]:
    """Damage the trees for one case; returns extra arguments and the expected message (regex)."""
    ann = cuhk / "annotation"
    coco_json = coco / "annotations" / "instances_train2017.json"
    if case == "missing_root":
        return ["--coco-root", str(coco / "nope")], r"coco_root=.*nope.*: folder not found"
    if case == "missing_coco_json":
        coco_json.unlink()
        return [], r"instances_train2017.json: annotation file not found"
    if case == "missing_images_mat":
        (ann / "Images.mat").unlink()
        return [], r"Images.mat: annotation file not found"
    if case == "truncated_mat":
        (ann / "Images.mat").write_bytes((ann / "Images.mat").read_bytes()[:200])
        return [], r"Images.mat: not a readable MATLAB .mat file"
    if case == "not_a_mat":
        (ann / "pool.mat").write_text("<html>not found</html>" * 10)
        return ["--cuhk-split", "test"], r"pool.mat: not a readable MATLAB .mat file"
    if case == "mat_without_key":
        import scipy.io

        scipy.io.savemat(ann / "Person.mat", {"People": np.zeros(2)})
        return [], r"Person.mat: no variable 'Person' \(found: People\)"
    if case == "mat_without_field":
        rows = [{"imname": np.array(["s1.jpg"]), "box": np.zeros((1, 0))}]
        import scipy.io

        scipy.io.savemat(ann / "Images.mat", {"Img": fx.mat_struct((1, 1), ("imname", "boxes"),
                                                                    [{"imname": rows[0]["imname"], "boxes": 0}])})
        return [], r"Images.mat: Img\[0\]: struct has no field 'box'"
    if case == "malformed_json":
        coco_json.write_text(coco_json.read_text()[:-30])
        return [], r"instances_train2017.json: malformed JSON at byte \d+"
    if case == "no_person":
        data = json.loads(coco_json.read_text())
        data["categories"] = [c for c in data["categories"] if c["name"] != "person"]
        coco_json.write_text(json.dumps(data))
        return [], r"no category named 'person' \(categories: bicycle\)"
    if case == "missing_images":
        for name in ("000000000001.jpg", "000000000002.jpg"):
            (coco / "train2017" / name).unlink()
        return [], r"2 of 2 images listed in .*instances_train2017.json are missing under .*train2017: " \
                   r"000000000001.jpg, 000000000002.jpg"
    if case == "unreadable_image":
        (cuhk / "Image" / "SSM" / "s2.jpg").write_bytes(b"\x00" * 100)
        return [], r"1 of 3 images listed in .*Images.mat are empty or unreadable under .*SSM: " \
                   r"s2.jpg \(not a JPEG or PNG file"
    if case in BAD_COCO:
        change, expected = BAD_COCO[case]
        data = fx.coco_json()
        change(data)
        coco_json.write_text(json.dumps(data).replace(str(OUT_OF_RANGE), "1e999"))
        return [], r"instances_train2017.json: " + expected
    if case == "empty_coco_image":  # COCO images are checked too, all of them at once
        for name in ("000000000001.jpg", "000000000002.jpg"):
            (coco / "train2017" / name).write_bytes(b"")
        return [], r"2 of 2 images listed in .*instances_train2017.json are empty or unreadable under " \
                   r".*train2017: 000000000001.jpg \(empty file \(0 bytes\)\), 000000000002.jpg \(empty file"
    if case == "truncated_coco_image":
        path = coco / "train2017" / "000000000002.jpg"
        path.write_bytes(path.read_bytes()[:120])
        return [], r"1 of 2 images .* under .*train2017: 000000000002.jpg \(no JPEG frame header \(truncated"
    if case == "empty_cuhk_image":
        (cuhk / "Image" / "SSM" / "s1.jpg").write_bytes(b"")
        return [], r"1 of 3 images listed in .*Images.mat are empty .*: s1.jpg \(empty file \(0 bytes\)\)$"
    if case in ("nan_idlocate", "inf_idlocate"):  # float64 idlocate, as MATLAB writes doubles
        value = np.nan if case == "nan_idlocate" else np.inf
        scenes = [(n, [(loc, hard, dt) for loc, hard, dt in boxes]) for n, _, boxes in fx.CUHK_SCENES]
        scenes[1][1][0] = ([280.0, 10.0, value, 90.0], 0, np.float64)
        fx.write_images_mat(ann / "Images.mat", scenes)
        return [], r"Images.mat: s2.jpg box 0: idlocate \[280.0, 10.0, (nan|inf), 90.0\] has a value that is " \
                   r"not finite or beyond 1e\+06 pixels"
    if case == "nan_person_idlocate":
        import scipy.io

        person = scipy.io.loadmat(ann / "Person.mat")
        person["Person"][0, 0]["scene"][0, 1]["idlocate"] = np.array([[250.0, np.nan, 10.0, 60.0]])
        scipy.io.savemat(ann / "Person.mat", {"Person": person["Person"]})
        return [], r"Person.mat: p00007 in s3.jpg: idlocate \[250.0, nan, 10.0, 60.0\] has a value that is not finite"
    raise AssertionError(case)


OUT_OF_RANGE = 12345.678


def _set(section: str, index: int, **values):
    return lambda data: data[section][index].update(values)


# COCO files written by Python's json as real tools write them (NaN and Infinity are its tokens for non-finite
# floats). Annotation 12 is the person on image 2 (80x60).
BAD_COCO = {
    "duplicate_image_id": (_set("images", 2, id=2), r"image id 2 appears twice; ids must be unique"),
    "duplicate_annotation_id": (_set("annotations", 2, id=10), r"annotation id 10 appears twice; ids must be unique"),
    "nan_box": (_set("annotations", 2, bbox=[0, 0, float("nan"), 30]),
                r"malformed JSON at byte \d+: NaN is not a JSON number \(non-finite values are refused\), "
                r"in annotation 12$"),
    "infinite_box": (_set("annotations", 2, bbox=[0, 0, 40, float("inf")]),
                     r"malformed JSON at byte \d+: Infinity is not a JSON number .*, in annotation 12$"),
    "out_of_range_box": (_set("annotations", 2, bbox=[0, 0, 40, OUT_OF_RANGE]),  # written as 1e999
                         r"annotation 12 \(image 2\): bbox \[0, 0, 40, 1e999\] is not \[x, y, w, h\] in finite"),
    "absurd_box": (_set("annotations", 2, bbox=[1e308, 0, 40, 30]),
                   r"annotation 12 \(image 2\): bbox \[1e\+308, 0.0, 40.0, 30.0\] has a value that is not "
                   r"finite or beyond 1e\+06 pixels"),
    "parent_file_name": (_set("images", 1, file_name="../../../etc/hostname"),
                         r"image 2: file_name '../../../etc/hostname' leaves the dataset root"),
    "absolute_file_name": (_set("images", 0, file_name="/etc/hostname"),
                           r"image 1: file_name '/etc/hostname' is an absolute path"),
}

BAD_CASES = ["missing_root", "missing_coco_json", "missing_images_mat", "truncated_mat", "not_a_mat",
             "mat_without_key", "mat_without_field", "malformed_json", "no_person", "missing_images",
             "unreadable_image", *BAD_COCO, "empty_coco_image", "truncated_coco_image", "empty_cuhk_image",
             "nan_idlocate", "inf_idlocate", "nan_person_idlocate"]


def _assert_refused_before_any_output(argv, expected, capsys, out_parent, tmp_path):
    """The entry point exits 2 with one line matching ``expected``, writing nothing and starting no run."""
    assert run_cli(_entry_point(), argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("persondet: error: ")
    assert re.search(expected, err), err
    assert list(out_parent.iterdir()) == []  # no output folder, no temporary leftovers
    assert not (tmp_path / "mlflow.db").exists()  # checked before any run was started


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, tracking_env, capsys, case):
    coco = fx.make_coco_tree(tmp_path / "coco")
    cuhk = fx.make_cuhk_tree(tmp_path / "cuhk")
    out_parent = tmp_path / "outputs"
    out_parent.mkdir()
    extra, expected = _break(case, coco, cuhk)
    argv = ["--coco-root", str(coco), "--cuhk-root", str(cuhk), "--output-dir", str(out_parent / "prepared"),
            *extra]
    _assert_refused_before_any_output(argv, expected, capsys, out_parent, tmp_path)


# --------------------------------------------------------------- four sources: CityPersons and CrowdHuman too
def _four_trees(tmp_path: Path) -> dict[str, Path]:
    return {"coco": fx.make_coco_tree(tmp_path / "coco"), "cuhk": fx.make_cuhk_tree(tmp_path / "cuhk"),
            "citypersons": fx.make_citypersons_tree(tmp_path / "citypersons"),
            "crowdhuman": fx.make_crowdhuman_tree(tmp_path / "crowdhuman")}


def test_hand_made_trees_of_four_sources(tmp_path, tracking):
    roots = _four_trees(tmp_path)
    result = prepare(PrepareConfig(**{f"{k}_root": str(v) for k, v in roots.items()}, cuhk_split="train",
                                   mix="crowdhuman+citypersons+cuhk+coco", check_images=1,
                                   output_dir=str(tmp_path / "out")))
    dataset = json.loads((result.output_dir / "train.json").read_text())
    assert dataset["persondet"]["mix"] == "coco+cuhk+citypersons+crowdhuman"  # the canonical order
    assert [im["file_name"] for im in dataset["images"]][-2:] == [
        "citypersons/leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png",
        "crowdhuman/Images/284193,a1f.jpg"]
    assert all(image_path(im, recorded_roots(dataset)).is_file() for im in dataset["images"])
    city = [a for a in dataset["annotations"] if a["image_id"] == 5]
    crowd = [a for a in dataset["annotations"] if a["image_id"] == 6]
    # CityPersons a.png (200x100): pedestrian, rider clipped at x = 0, group (crowd), label 0 (ignore)
    assert [a["bbox"] for a in city] == [[10, 20, 16, 40], [0, 30, 8, 30], [100, 10, 60, 50], [170, 5, 20, 30]]
    assert [(a["iscrowd"], a["ignore"], a["class_label"]) for a in city] == [(0, 0, 1), (0, 0, 2), (1, 0, 5),
                                                                             (0, 1, 0)]
    assert city[0]["vis_ratio"] == 0.75
    # CrowdHuman 1,a (120x90): person clipped at x = 0, person, mask and ignored person (ignore regions)
    assert [a["bbox"] for a in crowd] == [[0, 10, 24, 70], [60, 20, 20, 50], [90, 5, 25, 30], [40, 60, 8, 20]]
    assert [a["ignore"] for a in crowd] == [0, 0, 1, 1] and all(a["iscrowd"] == 0 for a in crowd)
    assert all(a["ignore"] == 0 for a in dataset["annotations"] if a["image_id"] <= 4)
    assert result.stats["citypersons"] == {"images": 1, "objects": 2, "crowd_regions": 1, "ignore_regions": 1,
                                           "avg_rel_size": pytest.approx((640 + 240) / 20000 / 2)}
    assert result.stats["crowdhuman"] == {"images": 1, "objects": 2, "crowd_regions": 0, "ignore_regions": 2,
                                          "avg_rel_size": pytest.approx((1680 + 1000) / 10800 / 2)}
    assert result.stats["merged"]["objects"] == 2 + 3 + 2 + 2 and result.stats["merged"]["ignore_regions"] == 3
    assert result.counts["citypersons"]["images_without_persons"] == 2
    assert result.counts["crowdhuman"]["images_without_persons"] == 1
    assert result.counts["crowdhuman"]["clipped_boxes"] == 1 and result.counts["citypersons"]["clipped_boxes"] == 1
    assert sorted(p.name for p in (result.output_dir / "checks").iterdir()) == [
        "citypersons_0.jpg", "coco_0.jpg", "crowdhuman_0.jpg", "cuhk_0.jpg"]
    run = tracking.get_run(result.run_id)
    assert run.data.tags["dataset_mix"] == "coco+cuhk+citypersons+crowdhuman"
    assert run.data.metrics["crowdhuman/ignore_regions"] == 2 and run.data.metrics["citypersons/objects"] == 2
    assert run.data.metrics["crowdhuman/masks"] == 2 and run.data.metrics["merged/images"] == 6
    assert run.data.params["crowdhuman_box"] == "fbox" and run.data.params["citypersons_subset"] == "all"
    inputs = {d.dataset.name: d.dataset.digest for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"coco", "cuhk", "citypersons", "crowdhuman", "prepared:coco+cuhk+citypersons+crowdhuman"}
    assert inputs["crowdhuman"] == dataset["persondet"]["source_digests"]["crowdhuman"][:32]
    assert run.data.tags["persondet.root.crowdhuman"] == str(roots["crowdhuman"].resolve())


def test_reader_settings_reach_the_new_sources(tmp_path, tracking_env):
    roots = _four_trees(tmp_path)
    result = prepare(PrepareConfig(citypersons_root=str(roots["citypersons"]), crowdhuman_root=str(roots["crowdhuman"]),
                                   mix="citypersons+crowdhuman", citypersons_subset="reasonable", crowdhuman_box="vbox",
                                   check_images=0))
    # reasonable: pedestrians >= 50 px tall only (the 40 px one too small), every other box an ignore region
    assert result.counts["citypersons"]["person_boxes"] == 0 and result.counts["citypersons"]["images_total"] == 3
    assert result.stats["citypersons"] == {"images": 0, "objects": 0, "avg_rel_size": 0.0, "crowd_regions": 0,
                                           "ignore_regions": 0}  # no image holds a person: all left out
    # vbox: the visible part, the first person's [0, 10, 24, 50]
    assert result.stats["crowdhuman"]["avg_rel_size"] == pytest.approx((24 * 50 + 1000) / 10800 / 2)


def _break_four(case: str, roots: dict[str, Path]) -> str:
    """Damage the CityPersons or CrowdHuman tree for one case; returns the expected message (regex)."""
    anno = roots["citypersons"] / "annotations" / "anno_train.mat"
    odgt = roots["crowdhuman"] / "annotation_train.odgt"
    images_mat = roots["cuhk"] / "annotation" / "Images.mat"
    scenes = [list(scene) for scene in fx.CITYPERSONS_SCENES]

    def rewrite_citypersons(index: int, rows, dtype=np.float64):
        scenes[index][3:] = [rows, dtype]
        scipy.io.savemat(anno, {"anno_train_aligned": fx.citypersons_cell(scenes)})

    def rewrite_odgt(line: int, text: str):
        lines = odgt.read_text().splitlines()
        lines[line] = text
        odgt.write_text("\n".join(lines) + "\n")

    if case == "citypersons_truncated_mat":
        anno.write_bytes(anno.read_bytes()[:300])
        return r"anno_train.mat: not a readable MATLAB .mat file"
    if case == "citypersons_mat_given_as_cuhk":
        shutil.copy(anno, images_mat)
        return (r"Images.mat: no variable 'Img' \(found: anno_train_aligned; this looks like CityPersons "
                r"annotations/anno_train.mat\)$")
    if case == "cuhk_mat_given_as_citypersons":
        shutil.copy(images_mat, anno)
        return (r"anno_train.mat: no variable 'anno_train_aligned' \(found: Img; this looks like CUHK-SYSU "
                r"annotation/Images.mat\)$")
    if case == "citypersons_nan_size":
        rewrite_citypersons(1, [[0, 5, 5, np.nan, 20, 0, 5, 5, 20, 20]])
        return r"anno_train.mat: image 1 \(bochum_000001_000019_leftImg8bit.png\): box 0 is not a number: \[0, 5, 5, nan"
    if case == "citypersons_negative_size":
        rewrite_citypersons(0, [[1, 10, 20, 16, -40, 24000, 10, 20, 16, 30]], np.int16)
        return r"anno_train.mat: image 0 \(aachen_000000_000019_leftImg8bit.png\): box 0 has a negative width or height"
    if case == "citypersons_unknown_label":
        rewrite_citypersons(1, [[9, 5, 5, 20, 20, 0, 5, 5, 20, 20]], np.uint8)
        return r"anno_train.mat: image 1 \(bochum_\w+.png\): box 0: unknown class label 9 \(CityPersons labels: 0 ignore"
    if case == "citypersons_missing_images":
        for city, name, *_ in fx.CITYPERSONS_SCENES[1:]:
            (roots["citypersons"] / "leftImg8bit" / "train" / city / name).unlink()
        return (r"2 of 3 images listed in .*anno_train.mat are missing under .*citypersons: "
                r"leftImg8bit/train/bochum/bochum_000001_000019_leftImg8bit.png, "
                r"leftImg8bit/train/bochum/bochum_000002_000019_leftImg8bit.png$")
    if case == "odgt_line_not_json":
        rewrite_odgt(1, '{"ID": "284194,b2e", "gtboxes": [{"tag": "mask", "fbox": [10, 10')
        return r"annotation_train.odgt: line 2: not a"
    if case == "odgt_nan_size":
        rewrite_odgt(1, '{"ID": "284194,b2e", "gtboxes": [{"tag": "person", "fbox": [10, 10, NaN, 30]}]}')
        return r"annotation_train.odgt: line 2: not a"
    if case == "odgt_negative_size":
        rewrite_odgt(1, '{"ID": "284194,b2e", "gtboxes": [{"tag": "person", "fbox": [10, 10, 30, -30]}]}')
        return (r"annotation_train.odgt: line 2 \(ID 284194,b2e\): gtboxes\[0\].fbox = \[10.0, 10.0, 30.0, -30.0\]: "
                r"negative or non-finite width or height$")
    if case == "crowdhuman_missing_images":
        for image_id, *_ in fx.CROWDHUMAN_LINES:
            (roots["crowdhuman"] / "Images" / f"{image_id}.jpg").unlink()
        return (r"2 of 2 images listed in .*annotation_train.odgt are missing under .*crowdhuman: "
                r"Images/284193,a1f.jpg, Images/284194,b2e.jpg$")
    raise AssertionError(case)


FOUR_SOURCE_CASES = ["citypersons_truncated_mat", "citypersons_mat_given_as_cuhk", "cuhk_mat_given_as_citypersons",
                     "citypersons_nan_size", "citypersons_negative_size", "citypersons_unknown_label",
                     "citypersons_missing_images", "odgt_line_not_json", "odgt_nan_size", "odgt_negative_size",
                     "crowdhuman_missing_images"]


@pytest.mark.parametrize("case", FOUR_SOURCE_CASES)
def test_bad_citypersons_and_crowdhuman_input_one_line_exit_2_nothing_written(tmp_path, tracking_env, capsys, case):
    roots = _four_trees(tmp_path / "data")
    out_parent = tmp_path / "outputs"
    out_parent.mkdir()
    expected = _break_four(case, roots)
    argv = [*(arg for name, root in roots.items() for arg in (f"--{name}-root", str(root))),
            "--mix", "coco+cuhk+citypersons+crowdhuman", "--output-dir", str(out_parent / "prepared")]
    _assert_refused_before_any_output(argv, expected, capsys, out_parent, tmp_path)
    assert not (tmp_path / "demo").exists()  # no demo data generated for a source given a root


def test_coco_boxes_past_the_image_are_clipped_and_counted(tmp_path, tracking):
    coco = fx.make_coco_tree(tmp_path / "coco")
    path = coco / "annotations" / "instances_train2017.json"
    data = json.loads(path.read_text())
    data["annotations"][2]["bbox"] = [60, 50, 1000, 1000]  # image 2 is 80x60: clipped to [60, 50, 20, 10]
    data["annotations"].append({"id": 14, "image_id": 2, "category_id": 7, "bbox": [200, 10, 5, 5]})  # outside
    path.write_text(json.dumps(data))
    result = prepare(PrepareConfig(coco_root=str(coco), mix="coco", output_dir=str(tmp_path / "out")))
    train = json.loads((result.output_dir / "train.json").read_text())
    assert [a["bbox"] for a in train["annotations"]] == [[1.5, 2.0, 10.0, 20.0], [20, 5, 30, 30], [60, 50, 20, 10]]
    assert train["annotations"][2]["area"] == 200.0  # the given 1000 capped at the clipped box
    assert result.counts["coco"]["clipped_boxes"] == 1 and result.counts["coco"]["outside_boxes"] == 1
    assert result.stats["coco"]["avg_rel_size"] == pytest.approx((200 / 3072 + 200 / 4800) / 2)
    metrics = tracking.get_run(result.run_id).data.metrics
    assert metrics["coco/clipped_boxes"] == 1 and metrics["coco/outside_boxes"] == 1
    assert all(np.isfinite(v) for v in metrics.values())


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs filled to the last byte (needs root; skipped elsewhere)."""
    mount = tmp_path / "full"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill ({done.stderr.strip() or 'mount failed'}); needs root")
    try:
        for chunk in (4096, 1):
            with open(mount / f"filler-{chunk}", "wb", buffering=0) as f:
                with pytest.raises(OSError):
                    while True:
                        f.write(b"x" * chunk)
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_full_disk_while_writing_is_one_line_and_leaves_nothing(tmp_path, tracking_env, capsys, full_disk):
    coco = fx.make_coco_tree(tmp_path / "coco")
    argv = ["--coco-root", str(coco), "--mix", "coco", "--output-dir", str(full_disk / "prepared")]
    assert run_cli(_entry_point(), argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert re.fullmatch(rf"persondet: error: {re.escape(str(full_disk))}/\.persondet-prepare-\w+/prepared/"
                        r"train.json: cannot write \(No space left on device\)", err), err
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler-1", "filler-4096"]  # no temporary leftovers
    assert not (tmp_path / "mlflow.db").exists()  # no run was started


# ------------------------------------------------------------------------------- mlflow run on demo data
FOUR = "coco+cuhk+citypersons+crowdhuman"


@pytest.mark.slow
def test_mlflow_run_prepare_of_four_sources_on_demo_data(tmp_path, tracking):
    """`mlflow run . -e prepare -P mix=coco+cuhk+citypersons+crowdhuman` on the demo data in the real layouts
    (the CityPersons and CrowdHuman copies generated on first use), counted independently per source."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
           "PERSONDET_DEMO_HOME": str(tmp_path / "demo"), "MLFLOW_EXPERIMENT_NAME": "prepare-test"}
    env.pop("MLFLOW_EXPERIMENT_ID", None)
    env.pop("MLFLOW_RUN_ID", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run([str(Path(sys.executable).parent / "mlflow"), "run", ".", "-e", "prepare",
                           "--env-manager", "local", "-P", f"mix={FOUR}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    experiment = tracking.get_experiment_by_name("prepare-test")
    (run,) = tracking.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["persondet.entry_point"] == "prepare"
    stats = json.loads(Path(tracking.download_artifacts(run.info.run_id, "prepared/stats.json",
                                                        str(tmp_path / "dl"))).read_text())
    from persondet.synth import ensure_demo_data

    demo = ensure_demo_data(0, extra_sources=("citypersons", "crowdhuman"))  # the tree the run generated, reused
    roots = {name: getattr(demo, f"{name}_root") for name in FOUR.split("+")}
    expected = fx.independent_counts(roots)
    for source, counted in expected.items():
        assert counted["objects"] > 0
        assert {k: stats[source][k] for k in ("images", "objects", "ignore_regions")} == {
            k: counted[k] for k in ("images", "objects", "ignore_regions")}, source
        assert stats[source]["avg_rel_size"] == pytest.approx(counted["avg_rel_size"], rel=1e-9)
    assert expected["citypersons"]["ignore_regions"] > 0 and expected["crowdhuman"]["ignore_regions"] > 0
    assert stats["merged"]["objects"] == sum(c["objects"] for c in expected.values())
    assert run.data.metrics["merged/images"] == sum(c["images"] for c in expected.values())
    assert run.data.tags["dataset_mix"] == FOUR and run.data.params["mix"] == FOUR
    artifacts = {a.path for a in tracking.list_artifacts(run.info.run_id, "prepared/checks")}
    assert {f"prepared/checks/{name}_0.jpg" for name in roots} <= artifacts
