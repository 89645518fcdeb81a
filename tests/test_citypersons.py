"""CityPersons reader: the real training annotations, generated trees in the MATLAB encoding, bad input."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

import prepare_fixtures as fx
from persondet.errors import PersondetError
from persondet.formats import citypersons as cp
from persondet.formats import cuhk_sysu
from persondet.synth import write_citypersons
from persondet.synth.mat import save_matlab

REAL = fx.SHARED_DATA / "citypersons-real" / "annotations" / "anno_train.mat"
# ../shared/data/README.md (citypersons-real): what the real file holds
REAL_LABELS = {0: 6768, 1: 16526, 2: 1680, 3: 1032, 4: 417, 5: 1347}
REAL_DTYPES = {"uint16": 2665, "uint8": 199, "int16": 111}
FIELDS = [("cityname", object), ("im_name", object), ("bbs", object)]


# ------------------------------------------------------------------------------------- the real annotations
@pytest.fixture(scope="module")
def real():
    if not REAL.exists():
        pytest.skip(f"{REAL} not present (../shared/data holds the real CityPersons annotations)")
    images = cp.read_annotations(REAL, "train")
    raw = [c[0, 0]["bbs"] for c in scipy.io.loadmat(REAL)["anno_train_aligned"][0]]  # as stored, for checks
    return images, raw


def test_real_file_images_dtypes_empties_and_labels(real):
    images, raw = real
    assert len(images) == 2975 and len({im.city for im in images}) == 18
    assert Counter(im.stored_dtype for im in images) == REAL_DTYPES
    assert sum(len(im.bbs) == 0 for im in images) == 197
    assert all(im.bbs.dtype == np.float64 and im.bbs.shape[1] == 10 for im in images)
    first = images[0]
    assert first.file_name == "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png"
    sizes = {im.file_name: (2048, 1024) for im in images}  # the real images are 2048 x 1024; not here
    _, _, counts = cp.to_records(images, sizes)
    assert {k: counts[f"class_{k}_{name}"] for k, name in enumerate(cp.CLASS_NAMES)} == REAL_LABELS
    assert counts["boxes_total"] == sum(REAL_LABELS.values())
    # negative corners only occur in int16 images, and they survive the cast
    negative = [im for im in images if (im.bbs[:, 1:3] < 0).any()]
    assert negative and {im.stored_dtype for im in negative} == {"int16"}
    # in the stored uint8 some y1 + h wrap around; the cast gives the true sum
    wraps = [(im, r) for im, r in zip(images, raw) if r.dtype == np.uint8 and r.size
             and ((r[:, 2] + r[:, 4]) < r[:, 2]).any()]
    assert wraps
    im, r = wraps[0]
    j = int(np.argmax((r[:, 2] + r[:, 4]) < r[:, 2]))
    assert im.bbs[j, 2] + im.bbs[j, 4] == int(r[j, 2]) + int(r[j, 4]) > 255


def test_real_file_records_default_mapping(real):
    images, _ = real
    out_images, annotations, counts = cp.to_records(images, {im.file_name: (2048, 1024) for im in images})
    persons = sum(REAL_LABELS[k] for k in (1, 2, 3, 4))
    assert counts["person_boxes"] == persons == sum(1 for a in annotations if not a["iscrowd"] and not a["ignore"])
    assert counts["crowd_regions"] == REAL_LABELS[5] == sum(a["iscrowd"] for a in annotations)
    assert {a["class_label"] for a in annotations if a["ignore"]} == {0}
    assert {a["class_label"] for a in annotations if a["iscrowd"]} == {5}
    # an image is kept when it holds a person or a group; the others are counted and left out
    kept = {im.index + 1 for im in images if np.isin(im.bbs[:, 0], (1, 2, 3, 4, 5)).any()}
    assert {im["id"] for im in out_images} == kept
    assert counts["images_without_persons"] == 2975 - len(kept) == 475
    # boxes are clipped to 2048 x 1024, the clipped ones counted
    all_rows = np.concatenate([im.bbs for im in images])
    x, y, w, h = all_rows[:, 1:5].T
    assert counts["clipped_boxes"] == int(((x < 0) | (y < 0) | (x + w > 2048) | (y + h > 1024)).sum()) > 100
    assert all(0 <= a["bbox"][0] and a["bbox"][0] + a["bbox"][2] <= 2048 and a["bbox"][1] + a["bbox"][3] <= 1024
               for a in annotations)
    assert all(isinstance(v, float) for a in annotations[:100] for v in a["bbox"])
    assert [a["id"] for a in annotations] == list(range(1, len(annotations) + 1))


def test_real_file_reasonable_subset(real):
    images, _ = real
    _, annotations, counts = cp.to_records(images, {im.file_name: (2048, 1024) for im in images}, "reasonable")
    rows = np.concatenate([im.bbs for im in images])
    label, h = rows[:, 0], rows[:, 4]
    visible = rows[:, 8] * rows[:, 9] / (rows[:, 3] * rows[:, 4])
    expected = int(((label == 1) & (h >= 50) & (visible >= 0.65)).sum())
    assert counts["person_boxes"] == expected == sum(1 for a in annotations if not a["ignore"])
    assert 0 < expected < REAL_LABELS[1]
    assert all(a["class_label"] == 1 and a["vis_ratio"] >= 0.65 for a in annotations if not a["ignore"])
    assert counts["crowd_regions"] == 0 and counts["persons_ignored"] > 0


def test_sizes_come_from_the_caller_not_from_an_assumption(real):
    images, _ = real
    wide = {im.file_name: (4096, 2048) for im in images}
    _, annotations, counts = cp.to_records(images, wide)
    rows = np.concatenate([im.bbs for im in images])
    assert counts["clipped_boxes"] == int(((rows[:, 1] < 0) | (rows[:, 2] < 0)).sum())  # no right/bottom clips
    assert max(a["bbox"][0] + a["bbox"][2] for a in annotations) > 2048


# --------------------------------------------------------------------------------------- generated trees
@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return write_citypersons(tmp_path_factory.mktemp("cp") / "citypersons", seed=5, train_images=16, val_images=4)


def test_generated_tree_reads_with_sizes_from_the_png_headers(demo):
    source, counts = cp.read_citypersons(demo, "train")
    assert source.name == "citypersons" and source.root == demo
    for image in source.images:
        with Image.open(demo / image["file_name"]) as f:
            assert f.size == (image["width"], image["height"]) == (512, 256)
        assert image["file_name"].startswith("leftImg8bit/train/") and image["original_file_name"].endswith(".png")
    for ann in source.annotations:
        x, y, w, h = ann["bbox"]
        assert x >= 0 and y >= 0 and x + w <= 512 and y + h <= 256 and ann["area"] == w * h
    raw = scipy.io.loadmat(demo / "annotations" / "anno_train.mat")["anno_train_aligned"][0]
    without = sum(1 for c in raw if not np.isin(c[0, 0]["bbs"][:, 0], (1, 2, 3, 4, 5)).any())
    assert counts["images_without_persons"] == without > 0
    assert counts["images_total"] == 16 and len(source.images) == 16 - without
    assert counts["clipped_boxes"] > 0 and all(counts[f"class_{k}_{n}"] for k, n in enumerate(cp.CLASS_NAMES))
    val, _ = cp.read_citypersons(demo, "val", "reasonable")
    assert all(im["file_name"].startswith("leftImg8bit/val/") for im in val.images)


def test_uint8_storage_is_cast_before_adding(tmp_path):
    path = tmp_path / "annotations" / "anno_train.mat"
    _write(path, [("aachen", "a.png", [[1, 200, 100, 100, 120, 9, 200, 100, 100, 120]])])
    assert scipy.io.loadmat(path)["anno_train_aligned"][0, 0][0, 0]["bbs"].dtype == np.uint8
    images = cp.read_annotations(path)
    _, annotations, counts = cp.to_records(images, {images[0].file_name: (400, 300)})
    assert annotations[0]["bbox"] == [200.0, 100.0, 100.0, 120.0] and counts["clipped_boxes"] == 0


def test_missing_images_are_counted_and_named(demo, tmp_path):
    import shutil

    root = tmp_path / "cp"
    shutil.copytree(demo, root)
    images = cp.read_annotations(cp.annotation_path(root, "train"))
    for image in images[3:6]:
        (root / image.file_name).unlink()
    with pytest.raises(PersondetError) as info:
        cp.read_citypersons(root, "train")
    message = str(info.value)
    assert message.startswith(f"3 of 16 images listed in {cp.annotation_path(root, 'train')} are missing")
    assert images[3].file_name in message and "\n" not in message


# -------------------------------------------------------------------------------------------- bad input
def _write(path: Path, entries, key: str = "anno_train_aligned") -> Path:
    cell = np.empty((1, len(entries)), dtype=object)
    for k, (city, name, rows) in enumerate(entries):
        entry = np.empty((1, 1), dtype=FIELDS)
        entry[0, 0] = (city, name, np.array(rows, dtype=np.float64).reshape(-1, 10))
        cell[0, k] = entry
    save_matlab(path, key, cell, "MATLAB 5.0 MAT-file, test")
    return path


GOOD = [1, 10, 20, 30, 70, 24000, 10, 20, 30, 70]


@pytest.mark.parametrize("case, match", [
    ("missing", "annotation file not found"),
    ("truncated", "not a readable MATLAB .mat file"),
    ("text", "not a readable MATLAB .mat file"),
    ("cuhk_images_mat", r"no variable 'anno_train_aligned' \(found: Img; this looks like CUHK-SYSU "
                        r"annotation/Images.mat\)"),
    ("val_as_train", r"no variable 'anno_train_aligned' \(found: anno_val_aligned; this looks like CityPersons "
                     r"annotations/anno_val.mat\)"),
    ("unknown_label", r"image 1 \(b.png\): box 1: unknown class label 7 \(CityPersons labels: 0 ignore, "
                      r"1 pedestrian, .*5 group\)"),
    ("nan", r"image 0 \(a.png\): box 0 is not a number: \[1, 10, 20, nan, 70"),
    ("negative_width", r"image 1 \(b.png\): box 0 has a negative width or height: \[2, 5, 5, -4, 9"),
    ("negative_visible", r"image 0 \(a.png\): box 0 has a negative width or height"),
    ("nine_columns", r"image 0 \(a.png\): bbs has shape \(1, 9\), expected n x 10"),
    ("no_bbs_field", r"struct has no field 'bbs' \(fields: cityname, im_name\)"),
])
def test_bad_annotation_files(tmp_path, case, match):
    path = tmp_path / "anno_train.mat"
    if case == "truncated":
        _write(path, [("aachen", "a.png", [GOOD] * 50)])
        path.write_bytes(path.read_bytes()[:200])
    elif case == "text":
        path.write_text("not a MATLAB file\n" * 20)
    elif case == "cuhk_images_mat":
        fx.write_images_mat(path, [(n, b) for n, _, b in fx.CUHK_SCENES])
    elif case == "val_as_train":
        _write(path, [("aachen", "a.png", [GOOD])], key="anno_val_aligned")
    elif case == "unknown_label":
        _write(path, [("aachen", "a.png", [GOOD]), ("bochum", "b.png", [GOOD, [7, *GOOD[1:]]])])
    elif case == "nan":
        _write(path, [("aachen", "a.png", [[1, 10, 20, math.nan, 70, 24000, 10, 20, 30, 70]])])
    elif case == "negative_width":
        _write(path, [("aachen", "a.png", [GOOD]), ("bochum", "b.png", [[2, 5, 5, -4, 9, 25000, 5, 5, 4, 9]])])
    elif case == "negative_visible":
        _write(path, [("aachen", "a.png", [[1, 10, 20, 30, 70, 24000, 10, 20, 30, -70]])])
    elif case == "nine_columns":
        cell = np.empty((1, 1), dtype=object)
        entry = np.empty((1, 1), dtype=FIELDS)
        entry[0, 0] = ("aachen", "a.png", np.array([GOOD[:9]], dtype=np.float64))
        cell[0, 0] = entry
        save_matlab(path, "anno_train_aligned", cell, "test")
    elif case == "no_bbs_field":
        cell = np.empty((1, 1), dtype=object)
        entry = np.empty((1, 1), dtype=FIELDS[:2])
        entry[0, 0] = ("aachen", "a.png")
        cell[0, 0] = entry
        save_matlab(path, "anno_train_aligned", cell, "test")
    with pytest.raises(PersondetError, match=match) as info:
        cp.read_annotations(path, "train")
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def test_citypersons_file_given_as_cuhk_sysu_names_what_it_looks_like(tmp_path):
    path = _write(tmp_path / "Images.mat", [("aachen", "a.png", [GOOD])])
    with pytest.raises(PersondetError, match=r"no variable 'Img' \(found: anno_train_aligned; this looks like "
                                             r"CityPersons annotations/anno_train.mat\)") as info:
        cuhk_sysu.read_images_mat(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("kwargs, match", [
    ({"split": "test"}, r"citypersons_split='test' must be one of train, val"),
    ({"subset": "tall"}, r"citypersons_subset='tall' must be one of all, reasonable"),
])
def test_bad_options(tmp_path, kwargs, match):
    with pytest.raises(PersondetError, match=match):
        cp.read_citypersons(tmp_path, **kwargs)
