"""Format readers and converters: COCO persons, CUHK-SYSU .mat, image headers, merge, stats."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import prepare_fixtures as fx
from persondet.errors import PersondetError
from persondet.formats import boxes as boxes_fmt
from persondet.formats import coco as coco_fmt
from persondet.formats import cuhk_sysu as cuhk
from persondet.formats import json_chunks
from persondet.formats import imagesize
from persondet.formats.imagesize import ImageHeaderError, image_size
from persondet.datasets import image_path, recorded_roots
from persondet.formats.paths import safe_relative_path
from persondet.formats.merge import SourceSet, merge, write_dataset
from persondet.stats import BOX_COLOURS, dataset_stats, describe, draw_checks, relative_sizes, stats_markdown

COCO_TINY = fx.SHARED_DATA / "coco-tiny"
TESTG100 = fx.SHARED_DATA / "cuhk-sysu-real" / "TestG100.mat"


# ------------------------------------------------------------------------------------------ CUHK converter
def _box(loc, dtype, ishard=0):
    return cuhk.CuhkBox(np.array([loc], dtype=dtype), ishard)


def test_converter_casts_before_arithmetic_uint8_overflow():
    raw = np.array([[250, 100, 10, 60]], dtype=np.uint8)
    assert (raw[0, [0]] + raw[0, [2]]).tolist() == [4]  # what uint8 arithmetic gives
    coco, counts = cuhk.cuhk_to_coco([cuhk.CuhkImage("s3.jpg", [cuhk.CuhkBox(raw, 0)])], {"s3.jpg": (400, 300)})
    x, y, w, h = coco["annotations"][0]["bbox"]
    assert x + w == 260 and y + h == 160
    assert counts["clipped_boxes"] == 0 and counts["dropped_boxes"] == 0


def test_converter_drops_clips_keeps_flags_and_identities():
    images = [
        cuhk.CuhkImage("a.jpg", [_box([10, 20, 30, 80], np.uint8), _box([100, 30, 40, 100], np.uint16, 1)]),
        cuhk.CuhkImage("b.jpg", [_box([280, 10, 50, 90], np.uint16), _box([50, 50, 0, 40], np.uint8),
                                 _box([5, 5, 20, -3], np.int16), cuhk.CuhkBox(np.zeros((1, 0)), 0)]),
        cuhk.CuhkImage("c.jpg", [_box([0, 0, 0, 0], np.uint8)]),  # nothing valid: image left out
        cuhk.CuhkImage("d.jpg", [_box([-15, -5, 30, 20], np.int16), _box([500, 10, 20, 20], np.uint16)]),
    ]
    sizes = {"a.jpg": (320, 240), "b.jpg": (300, 200), "c.jpg": (10, 10), "d.jpg": (100, 100)}
    coco, counts = cuhk.cuhk_to_coco(images, sizes, {("a.jpg", (100, 30, 40, 100)): 7})
    assert [im["file_name"] for im in coco["images"]] == ["Image/SSM/a.jpg", "Image/SSM/b.jpg", "Image/SSM/d.jpg"]
    assert [im["id"] for im in coco["images"]] == [1, 2, 3]
    anns = coco["annotations"]
    assert [a["id"] for a in anns] == [1, 2, 3, 4]
    assert [a["image_id"] for a in anns] == [1, 1, 2, 3]
    assert anns[1]["ishard"] == 1 and anns[0]["ishard"] == 0
    assert [a["person_id"] for a in anns] == [-1, 7, -1, -1]
    assert anns[2]["bbox"] == [280.0, 10.0, 20.0, 90.0]  # clipped at width 300
    assert anns[3]["bbox"] == [0.0, 0.0, 15.0, 15.0]  # clipped at the top-left corner
    assert anns[2]["area"] == 20.0 * 90.0
    assert counts == {"boxes_total": 9, "dropped_boxes": 4, "clipped_boxes": 2, "outside_boxes": 1,
                      "images_without_persons": 1, "person_ids": 1}
    assert all(isinstance(v, float) for a in anns for v in a["bbox"])


def test_converter_refuses_non_finite_boxes_naming_file_image_and_box():
    images = [cuhk.CuhkImage("a.jpg", [_box([1, 2, 3, 4], np.uint8)]),
              cuhk.CuhkImage("b.jpg", [_box([1, 2, 3, 4], np.uint8), _box([1.0, np.nan, 3.0, 4.0], np.float64)])]
    with pytest.raises(PersondetError, match=r"^Images.mat: b.jpg box 1: idlocate \[1.0, nan, 3.0, 4.0\]"):
        cuhk.cuhk_to_coco(images, {"a.jpg": (10, 10), "b.jpg": (10, 10)}, source="Images.mat")


def test_box_rules_clip_drop_and_keep_unclipped_values_exactly():
    boxes = np.array([[0.1, 0.2, 10.3, 20.7],  # inside: unchanged, bit for bit
                      [-5, 10, 20, 10],  # past the left border: clipped
                      [90, 50, 30, 30],  # past the right and bottom: clipped
                      [200, 10, 5, 5],  # outside
                      [10, 10, 0, 5], [10, 10, 5, -1]])  # empty
    clipped, kept, counts = boxes_fmt.clip_boxes(boxes, np.array([[100, 60]] * 6))
    assert kept.tolist() == [True, True, True, False, False, False]
    assert clipped[:3].tolist() == [[0.1, 0.2, 10.3, 20.7], [0, 10, 15, 10], [90, 50, 10, 10]]
    assert counts == {"dropped_boxes": 2, "clipped_boxes": 2, "outside_boxes": 1}
    assert boxes_fmt.first_insane(boxes) is None
    assert boxes_fmt.first_insane(np.array([[1, 2, 3, 4], [1, np.nan, 3, 4], [np.inf, 0, 1, 1]])) == 1
    assert boxes_fmt.first_insane(np.array([[1, 2, 3, 4], [0, 0, 1e6 + 1, 1]])) == 1
    assert boxes_fmt.box_is_sane(0, 0, 1e6, 1e6) and not boxes_fmt.box_is_sane(0, float("nan"), 1, 1)


def test_converter_needs_every_size():
    with pytest.raises(PersondetError, match="no image size for x.jpg"):
        cuhk.cuhk_to_coco([cuhk.CuhkImage("x.jpg", [])], {})


def test_select_split_from_pool():
    images = [cuhk.CuhkImage(n) for n in ("s1.jpg", "s2.jpg", "s3.jpg")]
    pool = {"s2.jpg"}
    assert [i.name for i in cuhk.select_split(images, pool, "test")] == ["s2.jpg"]
    assert [i.name for i in cuhk.select_split(images, pool, "train")] == ["s1.jpg", "s3.jpg"]
    assert len(cuhk.select_split(images, None, "all")) == 3
    with pytest.raises(PersondetError, match="needs pool.mat"):
        cuhk.select_split(images, None, "train")


def test_mat_helpers():
    assert cuhk.mat_str(np.array(["s1.jpg"]), "w") == "s1.jpg"
    cell = np.empty((1, 1), dtype=object)
    cell[0, 0] = np.array(["p1"])
    assert cuhk.mat_str(cell, "w") == "p1"
    assert cuhk.mat_box(np.array([[200, 200, 100, 100]], dtype=np.uint8), "w") == (200.0, 200.0, 100.0, 100.0)
    assert cuhk.mat_box(np.zeros((1, 0)), "w") is None
    with pytest.raises(PersondetError, match=r"w: idlocate has 3 values"):
        cuhk.mat_box(np.array([1, 2, 3]), "w")
    for bad in (np.nan, np.inf, -np.inf, 2e6):
        with pytest.raises(PersondetError, match=r"^w: idlocate \[1.0, 2.0, .*\] has a value that is not finite"):
            cuhk.mat_box(np.array([[1.0, 2.0, bad, 4.0]]), "w")
    with pytest.raises(PersondetError, match="expected one string"):
        cuhk.mat_str(np.array(["a", "b"]), "w")
    assert cuhk.identity_number("p10581") == 10581


# ---------------------------------------------------------------------------------------- CUHK .mat files
def test_images_pool_person_mat_roundtrip(tmp_path):
    root = fx.make_cuhk_tree(tmp_path / "cuhk")
    images = cuhk.read_images_mat(root / "annotation" / "Images.mat")
    assert [im.name for im in images] == ["s1.jpg", "s2.jpg", "s3.jpg"]
    assert [np.asarray(b.idlocate).dtype for b in images[0].boxes] == [np.uint8, np.uint16]
    assert [b.ishard for b in images[0].boxes] == [0, 1]
    assert cuhk.read_pool_mat(root / "annotation" / "pool.mat") == {"s3.jpg"}
    groups = cuhk.read_identities_mat(root / "annotation" / "Person.mat", "Person")
    index = cuhk.identity_index(groups)
    assert index == {("s1.jpg", (100, 30, 40, 100)): 7, ("s3.jpg", (250, 100, 10, 60)): 7}


@pytest.mark.parametrize("case, match", [
    ("missing", "annotation file not found"),
    ("truncated", "not a readable MATLAB .mat file"),
    ("text", "not a readable MATLAB .mat file"),
    ("wrong_key", r"no variable 'Img' \(found: Other\)"),
    ("no_field", r"struct has no field 'box' \(fields: imname, nAppear\)"),
])
def test_bad_mat_files(tmp_path, case, match):
    path = tmp_path / "Images.mat"
    if case == "truncated":
        fx.write_images_mat(path, [(n, b) for n, _, b in fx.CUHK_SCENES])
        path.write_bytes(path.read_bytes()[:300])
    elif case == "text":
        path.write_text("this is not a MATLAB file\n" * 20)
    elif case == "wrong_key":
        scipy_io().savemat(path, {"Other": np.zeros(3)})
    elif case == "no_field":
        scipy_io().savemat(path, {"Img": fx.mat_struct((1, 1), ("imname", "nAppear"),
                                                       [{"imname": np.array(["s1.jpg"]), "nAppear": 1}])})
    with pytest.raises(PersondetError, match=match) as info:
        cuhk.read_images_mat(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def scipy_io():
    import scipy.io

    return scipy.io


# The columns readers (read_scenes_mat, identity_index_mat) read plain struct arrays at once and everything else
# entry by entry: both ways must give the same records and the same errors.
PLAIN_SCENES = [*[(n, b) for n, _, b in fx.CUHK_SCENES],
                ("s4.jpg", [([-15, -5, 30, 20], 1, np.int16), ([1.5, 2.25, 30.0, 40.0], 0, np.float64)]),
                ("s5.jpg", [])]  # no boxes: an empty struct array
PLAIN_SIZES = {"s1.jpg": (320, 240), "s2.jpg": (300, 200), "s3.jpg": (400, 300), "s4.jpg": (100, 100),
               "s5.jpg": (50, 50)}
PEOPLE = [("p00007", [("s1.jpg", [100, 30, 40, 100]), ("s3.jpg", [250, 100, 10, 60])]),
          ("p12", [("s4.jpg", [2, 2, 30, 40])]), ("p3", [])]


def _write_images(path, images):
    """Images.mat from (name, [{"idlocate": value as stored, "ishard": value as stored}, ...])."""
    rows = [{"imname": np.array([name]), "nAppear": np.array([[len(boxes)]]),
             "box": fx.mat_struct((1, len(boxes)), ("idlocate", "ishard"), boxes)} for name, boxes in images]
    scipy_io().savemat(path, {"Img": fx.mat_struct((1, len(rows)), ("imname", "nAppear", "box"), rows)})


def _per_entry_way(monkeypatch):
    monkeypatch.setattr(cuhk, "_plain_scenes", lambda img: None)
    monkeypatch.setattr(cuhk, "_plain_identity_index", lambda table: None)


def _columns_way(monkeypatch):
    def refuse(*args):
        raise AssertionError("went the per-entry way")
    monkeypatch.setattr(cuhk, "_images", refuse)
    monkeypatch.setattr(cuhk, "_identities", refuse)


def test_columns_and_per_entry_readers_agree_on_plain_files(tmp_path, monkeypatch):
    fx.write_images_mat(tmp_path / "Images.mat", PLAIN_SCENES)
    fx.write_person_mat(tmp_path / "Person.mat", PEOPLE)
    pool = {"s3.jpg", "s4.jpg"}

    def convert(split):
        scenes = cuhk.select_split(cuhk.read_scenes_mat(tmp_path / "Images.mat"), pool, split)
        return cuhk.cuhk_to_coco(scenes, PLAIN_SIZES, cuhk.identity_index_mat(tmp_path / "Person.mat", "Person"))

    with monkeypatch.context() as patch:
        _columns_way(patch)
        fast = {split: convert(split) for split in ("all", "train", "test")}
    slow = {split: convert(split) for split in ("all", "train", "test") if _per_entry_way(monkeypatch) is None}
    assert fast == slow
    coco, counts = fast["all"]
    assert [a["bbox"] for a in coco["annotations"]][-2:] == [[0.0, 0.0, 15.0, 15.0], [1.5, 2.25, 30.0, 40.0]]
    assert [a["person_id"] for a in coco["annotations"]] == [-1, 7, -1, 7, -1, 12]
    assert [a["ishard"] for a in coco["annotations"]] == [0, 1, 0, 0, 1, 0]
    assert coco["annotations"][3]["bbox"] == [250.0, 100.0, 10.0, 60.0]  # uint8 250 + 10 does not wrap
    assert counts["images_without_persons"] == 1 and counts["boxes_total"] == 7
    # the list of records read entry by entry converts to the same
    images = cuhk.read_images_mat(tmp_path / "Images.mat")
    assert cuhk.cuhk_to_coco(cuhk.select_split(images, pool, "test"), PLAIN_SIZES,
                             cuhk.identity_index(cuhk.read_identities_mat(tmp_path / "Person.mat", "Person"))) \
        == fast["test"]


def test_odd_entries_read_entry_by_entry(tmp_path, monkeypatch):
    """An empty idlocate, a 4x1 idlocate, an empty ishard, a box cell: not plain columns, read as before."""
    box_cell = np.empty((1, 1), dtype=object)
    box_cell[0, 0] = fx.mat_struct((1, 1), ("idlocate", "ishard"),
                                   [{"idlocate": np.array([[5, 6, 7, 8]], dtype=np.uint8), "ishard": 1}])
    _write_images(tmp_path / "Images.mat", [
        ("a.jpg", [{"idlocate": np.array([[10, 20, 30, 40]], dtype=np.uint16), "ishard": np.zeros((0, 0))},
                   {"idlocate": np.zeros((1, 0)), "ishard": 0}]),
        ("b.jpg", [{"idlocate": np.array([[1], [2], [3], [4]], dtype=np.uint8), "ishard": 1}])])
    sizes = {"a.jpg": (100, 100), "b.jpg": (100, 100)}
    scenes = cuhk.read_scenes_mat(tmp_path / "Images.mat")
    coco, counts = cuhk.cuhk_to_coco(scenes, sizes)
    assert [(a["image_id"], a["bbox"], a["ishard"]) for a in coco["annotations"]] == \
        [(1, [10.0, 20.0, 30.0, 40.0], 0), (2, [1.0, 2.0, 3.0, 4.0], 1)]
    assert counts["boxes_total"] == 3 and counts["dropped_boxes"] == 1  # the empty idlocate
    assert cuhk.cuhk_to_coco(cuhk.read_images_mat(tmp_path / "Images.mat"), sizes) == (coco, counts)
    assert len(cuhk.select_split(scenes, {"b.jpg"}, "train")) == 1


@pytest.mark.parametrize("way", [_columns_way, _per_entry_way])
def test_box_errors_name_the_first_bad_entry_either_way(tmp_path, monkeypatch, way):
    fx.write_images_mat(tmp_path / "Images.mat", [
        ("a.jpg", [([1, 2, 3, 4], 0, np.uint8)]), ("b.jpg", [([1, 2, 3, 4], 0, np.uint8), ([1, np.inf, 3, 4], 0, float)])])
    way(monkeypatch)
    sizes = {"a.jpg": (10, 10), "b.jpg": (10, 10)}
    with pytest.raises(PersondetError, match=r"^I.mat: b.jpg box 1: idlocate \[1.0, inf, 3.0, 4.0\] has a value"):
        cuhk.cuhk_to_coco(cuhk.read_scenes_mat(tmp_path / "Images.mat"), sizes, source="I.mat")
    fx.write_person_mat(tmp_path / "Person.mat", [("p1", [("a.jpg", [1, 2, 3, 4])]), ("px", [("b.jpg", [1, 2, 3, 4])])])
    with pytest.raises(PersondetError, match=r"^identity name 'px' is not of the form p<number>$"):
        cuhk.identity_index_mat(tmp_path / "Person.mat", "Person")


def test_odd_boxes_are_checked_in_order_before_non_finite_ones(tmp_path):
    _write_images(tmp_path / "Images.mat", [
        ("a.jpg", [{"idlocate": np.array([[1.0, np.nan, 3.0, 4.0]]), "ishard": 0}]),
        ("b.jpg", [{"idlocate": np.array(["abcd"]), "ishard": 0}, {"idlocate": np.array([[1, 2, 3]]), "ishard": 0}])])
    with pytest.raises(PersondetError, match=r"^I.mat: b.jpg box 0: idlocate is not numeric \(ndarray\)$"):
        cuhk.cuhk_to_coco(cuhk.read_scenes_mat(tmp_path / "Images.mat"), {"a.jpg": (9, 9), "b.jpg": (9, 9)},
                          source="I.mat")
    images = cuhk.read_images_mat(tmp_path / "Images.mat")
    with pytest.raises(PersondetError, match=r"^I.mat: b.jpg box 0: idlocate is not numeric \(ndarray\)$"):
        cuhk.cuhk_to_coco(images, {"a.jpg": (9, 9), "b.jpg": (9, 9)}, source="I.mat")


@pytest.mark.parametrize("with_empty", [False, True])
def test_person_mat_boxes_round_half_to_even_either_way(tmp_path, monkeypatch, with_empty):
    """A gallery-style empty idlocate (skipped) is read entry by entry; the plain file as columns."""
    apps = [{"imname": np.array(["s2.jpg"]), "idlocate": np.array([[1.4, 2.6, 3.5, 4.5]]), "ishard": 0}]
    if with_empty:
        apps.insert(0, {"imname": np.array(["s1.jpg"]), "idlocate": np.zeros((0, 0)), "ishard": 0})
    else:
        _columns_way(monkeypatch)
    scene = fx.mat_struct((1, len(apps)), ("imname", "idlocate", "ishard"), apps)
    person = fx.mat_struct((1, 1), ("idname", "nAppear", "scene"),
                           [{"idname": np.array(["p9"]), "nAppear": len(apps), "scene": scene}])
    scipy_io().savemat(tmp_path / "Person.mat", {"Person": person})
    assert cuhk.identity_index_mat(tmp_path / "Person.mat", "Person") == {("s2.jpg", (1, 3, 4, 4)): 9}


@pytest.fixture(scope="module")
def testg100():
    if not TESTG100.exists():
        pytest.skip(f"{TESTG100} not present")
    return cuhk.read_query_gallery(TESTG100, "TestG100")


@pytest.mark.slow
def test_real_testg100_through_the_converter_helpers(testg100):
    """The real CUHK-SYSU file through the same helpers (load_mat, struct_*, mat_str, mat_box)."""
    assert len(testg100) == 2900
    dtypes, empty, boxes, wraps = set(), 0, 0, 0
    images, query_images = set(), set()
    for idname, query, gallery in testg100:
        assert idname.startswith("p")
        assert len(gallery) == 100
        query_images.add(query.imname)
        assert cuhk.mat_box(query.idlocate, idname) is not None  # every query has its box
        for app in [query, *gallery]:
            images.add(app.imname)
            raw = np.asarray(app.idlocate)
            dtypes.add(raw.dtype.name)
            box = cuhk.mat_box(app.idlocate, idname)
            if box is None:
                empty += 1
                continue
            boxes += 1
            assert box[2] > 0 and box[3] > 0
            flat = raw.reshape(-1)
            if raw.dtype.kind == "u" and int(flat[0]) + int(flat[2]) > np.iinfo(raw.dtype).max:
                wraps += 1  # in the stored dtype x + w would wrap; mat_box must give the true sum
                assert box[0] + box[2] == int(flat[0]) + int(flat[2])
    assert {"uint8", "uint16"} <= dtypes
    assert empty > 0 and boxes > 2900 and wraps > 0
    assert len(query_images) == 2725 and len(images) == 6978
    # the converter takes these as they are: the query boxes of the first images convert and keep ids
    index = cuhk.identity_index((n, [q]) for n, q, _ in testg100[:20])
    images_in = [cuhk.CuhkImage(q.imname, [cuhk.CuhkBox(q.idlocate, q.ishard)]) for _, q, _ in testg100[:20]]
    sizes = {im.name: (10_000, 10_000) for im in images_in}
    coco, counts = cuhk.cuhk_to_coco(images_in, sizes, index)
    assert counts["dropped_boxes"] == 0 and counts["person_ids"] == 20
    assert [a["person_id"] for a in coco["annotations"]] == [cuhk.identity_number(n) for n, _, _ in testg100[:20]]


# --------------------------------------------------------------------------------------------------- COCO
@pytest.fixture(params=["whole", "pieces"])
def coco_decoding(request, monkeypatch):
    """The COCO reader's two decodings: the whole file at once, or in pieces (tiny blocks: many pieces; a file
    they do not fit, or a faulty one, goes to the whole decoding, so results and errors are the same)."""
    if request.param == "pieces":
        monkeypatch.setattr(coco_fmt, "PIECES_FROM_BYTES", 0)
        monkeypatch.setattr(json_chunks, "BLOCK", 200)
    return request.param


def test_coco_tiny_persons(coco_decoding):
    path = COCO_TINY / "annotations" / "instances_train2017.json"
    if not path.exists():
        pytest.skip(f"{path} not present")
    persons = coco_fmt.read_coco_persons(path)
    assert len(persons.annotations) == 143
    assert sum(a["iscrowd"] for a in persons.annotations) == 3
    assert len(persons.images) == 40
    assert persons.counts["images_without_persons"] == 40 and persons.counts["annotations_total"] == 705
    reference = json.loads(path.read_text())
    expected = [a["bbox"] for a in reference["annotations"] if a["category_id"] == 1]
    assert [a["bbox"] for a in persons.annotations] == expected


def test_coco_reader_person_by_name_segmentations_skipped(tmp_path, coco_decoding):
    data = fx.coco_json()
    data["annotations"][0]["segmentation"] = [[1.5, 2.0, 11.5, 2.0] * 500]  # long polygons, any shape
    data["annotations"][2]["segmentation"] = {"counts": "PPYo0>0", "size": [60, 80]}  # compressed RLE
    data["images"][0].update(license=3, coco_url="http://x/1.jpg", date_captured="2013-11-14")
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data, indent=1))
    persons = coco_fmt.read_coco_persons(path)
    assert persons.category_id == 7 and len(persons.annotations) == 3
    assert persons.images == [{"id": i, "file_name": f, "width": w, "height": h} for i, f, w, h in fx.COCO_IMAGES[:2]]
    assert persons.annotations[1] == {"id": 11, "image_id": 1, "bbox": [20.0, 5.0, 30.0, 30.0], "area": 800.0,
                                      "iscrowd": 1}
    assert persons.counts == {"images_total": 3, "images_without_persons": 1, "annotations_total": 4,
                              "dropped_boxes": 0, "clipped_boxes": 0, "outside_boxes": 0, "crowd_regions": 1}


def test_coco_boxes_clipped_dropped_missing_area_and_iscrowd(tmp_path, coco_decoding):
    data = fx.coco_json()
    anns = data["annotations"]
    anns[0]["bbox"] = [-4.0, 40.0, 10.0, 20.0]  # image 1 is 64x48: clipped to [0, 40, 6, 8]
    anns[2]["bbox"] = [79.0, 59.0, 2.0, 2.0]  # image 2 is 80x60: clipped to [79, 59, 1, 1]
    del anns[2]["area"], anns[2]["iscrowd"]
    anns += [{"id": 20, "image_id": 2, "category_id": 7, "bbox": [90, 10, 5, 5]},  # right of the image
             {"id": 21, "image_id": 2, "category_id": 7, "bbox": [5, 5, -3, 5]},  # negative width
             {"id": 22, "image_id": 3, "category_id": 7, "bbox": [1, 1, 4, 0]}]  # zero height: image 3 left out
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    persons = coco_fmt.read_coco_persons(path)
    assert [a["bbox"] for a in persons.annotations] == [[0.0, 40.0, 6.0, 8.0], [20.0, 5.0, 30.0, 30.0],
                                                         [79.0, 59.0, 1.0, 1.0]]
    assert [a["area"] for a in persons.annotations] == [48.0, 800.0, 1.0]  # capped / given / box area
    assert [a["iscrowd"] for a in persons.annotations] == [0, 1, 0]
    assert [im["id"] for im in persons.images] == [1, 2]
    assert {k: persons.counts[k] for k in ("dropped_boxes", "clipped_boxes", "outside_boxes")} == \
        {"dropped_boxes": 2, "clipped_boxes": 2, "outside_boxes": 1}


def _coco_text(change) -> str:
    data = fx.coco_json()
    change(data)
    return json.dumps(data)


@pytest.mark.parametrize("text, match", [
    ('{"images": [], "annotations": [{"id": 1, "segmentation": [[1, 2]], "bbox": [1,2,3,4]',
     r"malformed JSON at byte 84: the text ends early"),
    ('{"images": [], "annotations": [}, "categories": []}', r"malformed JSON at byte 31: invalid character"),
    ('[1, 2, 3]', r"not a COCO file \(top level: expected `object`, got `array`\)"),
    ('{"images": [], "annotations": []}', r"no list 'categories'"),
    ('{"images": [], "annotations": [], "categories": [{"id": 1, "name": "dog"}]}',
     r"no category named 'person' \(categories: dog\)"),
    (_coco_text(lambda d: d["annotations"][2].update(image_id="2")),
     r"annotation 12 \(\$\.annotations\[2\]\.image_id\): Expected `int`, got `str`"),
    (_coco_text(lambda d: d["images"][1].update(width=80.5)),
     r"image 2 \(\$\.images\[1\]\.width\): Expected `int`, got `float`"),
    (_coco_text(lambda d: d["annotations"][1].pop("image_id")),
     r"annotation 11 \(\$\.annotations\[1\]\): Object missing required field `image_id`"),
    (_coco_text(lambda d: d["annotations"][0].update(bbox=[1, 2, 3])),
     r"annotation 10 \(image 1\): bbox \[1, 2, 3\] is not \[x, y, w, h\]"),
    (_coco_text(lambda d: d["annotations"][2].pop("bbox")), r"annotation 12 \(image 2\) has no bbox"),
    (_coco_text(lambda d: d["annotations"][2].update(bbox=[0, 0, float("nan"), 3])),
     r"malformed JSON at byte \d+: NaN is not a JSON number \(non-finite values are refused\), in annotation 12$"),
    (_coco_text(lambda d: d["annotations"][1].update(segmentation={"counts": [1, float("-inf")], "size": [4, 4]})),
     r"malformed JSON at byte \d+: -Infinity is not a JSON number .*, in annotation 11$"),
    (_coco_text(lambda d: d["images"][2].update(width=float("inf"))),
     r"malformed JSON at byte \d+: Infinity is not a JSON number .*, in image 3$"),
    (_coco_text(lambda d: d["annotations"][2].update(bbox=[0, 0, 1e308, 3])),
     r"annotation 12 \(image 2\): bbox \[0.0, 0.0, 1e\+308, 3.0\] has a value that is not finite or beyond 1e\+06"),
    (_coco_text(lambda d: d["annotations"][2].update(bbox=[0, 0, 30, 3])).replace("[0, 0, 30, 3]", "[0, 0, 30, 1e999]"),
     r"annotation 12 \(image 2\): bbox \[0, 0, 30, 1e999\] is not \[x, y, w, h\] in finite numbers"),
    (_coco_text(lambda d: d["images"][2].update(id=1)), r"image id 1 appears twice; ids must be unique"),
    (_coco_text(lambda d: d["annotations"][2].update(id=11)), r"annotation id 11 appears twice; ids must be unique"),
    (_coco_text(lambda d: d["images"][1].update(file_name="../../etc/hostname")),
     r"image 2: file_name '../../etc/hostname' leaves the dataset root"),
    (_coco_text(lambda d: d["images"][2].update(file_name="/etc/hostname")),
     r"image 3: file_name '/etc/hostname' is an absolute path"),
    (_coco_text(lambda d: d["images"][0].update(height=0)), r"image 1 \('000000000001.jpg'\) has size 64x0"),
])
def test_bad_coco_json(tmp_path, coco_decoding, text, match):
    path = tmp_path / "instances_train2017.json"
    path.write_text(text)
    with pytest.raises(PersondetError, match=match) as info:
        coco_fmt.read_coco_persons(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_malformed_json_position_is_in_the_file(tmp_path, coco_decoding):
    good = json.dumps(fx.coco_json())
    broken = good.replace('"bbox": [0, 0, 40, 30]', '"bbox": [0, 0, 40 30]')
    position = broken.index("40 30") + 3
    path = tmp_path / "x.json"
    path.write_text(broken)
    with pytest.raises(PersondetError, match=f"at byte {position}:"):
        coco_fmt.read_coco_persons(path)


@pytest.mark.parametrize("name", ["a.jpg", "train2017/a.jpg", "./a.jpg", "a..b.jpg", "..a/b.jpg", "dir/..x.png"])
def test_safe_relative_path_keeps_names_under_the_root(name):
    assert safe_relative_path(name, "f.json: image 1") == name


@pytest.mark.parametrize("name, match", [
    ("../a.jpg", "leaves the dataset root"), ("a/../../b.jpg", "leaves the dataset root"),
    ("..", "leaves the dataset root"), ("a\\..\\..\\b.jpg", "leaves the dataset root"),
    ("/etc/hostname", "absolute path"), ("\\\\host\\share\\a.jpg", "absolute path"), ("C:\\a.jpg", "absolute path"),
    ("C:a.jpg", "absolute path"), ("", "not a file name"), (" ", "not a file name"), (7, "not a file name"),
    ("a\x00.jpg", "NUL byte"),
])
@pytest.mark.parametrize("lazy", [False, True])
def test_safe_relative_path_refuses_names_that_leave_the_root(name, match, lazy):
    with pytest.raises(PersondetError, match=match) as info:
        safe_relative_path(name, (lambda: "f.json: image 1") if lazy else "f.json: image 1")
    assert str(info.value).startswith("f.json: image 1: file_name ")


# ------------------------------------------------------------------------------------------ image headers
@pytest.mark.parametrize("suffix, mode, kwargs", [
    (".jpg", "RGB", {}), (".jpg", "L", {}), (".jpg", "RGB", {"progressive": True}),
    (".png", "RGBA", {}), (".png", "P", {}),
])
def test_image_size_matches_pil(tmp_path, suffix, mode, kwargs):
    path = tmp_path / f"im{suffix}"
    Image.new(mode, (123, 45)).save(path, exif=Image.Exif(), **kwargs) if suffix == ".jpg" else \
        Image.new(mode, (123, 45)).save(path)
    assert image_size(path) == (123, 45)


def test_image_size_real_jpegs():
    files = sorted((COCO_TINY / "val2017").glob("*.jpg"))[:20]
    if not files:
        pytest.skip("coco-tiny not present")
    for f in files:
        with Image.open(f) as im:
            assert image_size(f) == im.size
        # the common-case loop and the general marker walk agree
        data = f.read_bytes()
        with open(f, "rb") as handle:
            assert imagesize._jpeg_size(data[:4096], handle.fileno(), f) == \
                imagesize._jpeg_walk(data[:4096], handle.fileno(), f) == im.size


def test_image_size_past_a_large_exif_block_and_every_truncation(tmp_path):
    exif = Image.Exif()
    exif[0x010E] = "x" * 30_000  # the frame header lies beyond the first read
    path = tmp_path / "big.jpg"
    Image.new("RGB", (640, 480)).save(path, exif=exif)
    assert image_size(path) == (640, 480)
    data = path.read_bytes()
    cut = tmp_path / "cut.jpg"
    frame = data.index(b"\xff\xc0")  # the frame header: marker, length, precision, height, width (9 bytes)
    assert frame > 30_000
    for k in [*range(0, frame + 9, 97), frame + 8]:  # every prefix short of it: a clean error, never a crash
        cut.write_bytes(data[:k])
        with pytest.raises(ImageHeaderError):
            image_size(cut)


@pytest.mark.parametrize("content, match", [
    (b"", r"empty file \(0 bytes\)"),
    (b"GIF89a....", "not a JPEG or PNG"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "no JPEG frame header"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "truncated PNG header"),
])
def test_unreadable_image_header(tmp_path, content, match):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageHeaderError, match=match) as info:
        image_size(path)
    assert str(path) in str(info.value)


# -------------------------------------------------------------------------------------------- merge, stats
def _sources(tmp_path):
    coco = SourceSet("coco", tmp_path / "c", [{"id": 9, "file_name": "train2017/a.jpg", "width": 100, "height": 50,
                                               "original_file_name": "a.jpg"}],
                     [{"id": 4, "image_id": 9, "bbox": [0, 0, 10, 10], "area": 80.0, "iscrowd": 0},
                      {"id": 5, "image_id": 9, "bbox": [0, 0, 50, 50], "area": 2000.0, "iscrowd": 1}])
    cuhk_set = SourceSet("cuhk", tmp_path / "k", [{"id": 1, "file_name": "Image/SSM/a.jpg", "width": 200, "height": 100}],
                         [{"id": 1, "image_id": 1, "bbox": [5, 5, 20, 50], "area": 1000.0, "iscrowd": 0,
                           "person_id": 3, "ishard": 1}])
    return [coco, cuhk_set]


def test_merge_ids_names_roots_and_pycocotools(tmp_path):
    from pycocotools.coco import COCO

    merged = merge(_sources(tmp_path), "coco+cuhk", "all")
    assert [im["id"] for im in merged["images"]] == [1, 2]
    assert [a["id"] for a in merged["annotations"]] == [1, 2, 3]
    assert [a["image_id"] for a in merged["annotations"]] == [1, 1, 2]
    assert [im["file_name"] for im in merged["images"]] == ["coco/train2017/a.jpg", "cuhk/Image/SSM/a.jpg"]
    assert [im["source"] for im in merged["images"]] == ["coco", "cuhk"]
    assert [im["original_file_name"] for im in merged["images"]] == ["a.jpg", "a.jpg"]
    assert merged["annotations"][2]["person_id"] == 3 and merged["annotations"][0]["person_id"] == -1
    assert merged["categories"] == [{"id": 1, "name": "person", "supercategory": "person"}]
    meta = merged["persondet"]
    assert meta["mix"] == "coco+cuhk" and set(meta["source_digests"]) == {"coco", "cuhk"}
    assert image_path(merged["images"][0], recorded_roots(merged)) == (tmp_path / "c" / "train2017" / "a.jpg").resolve()
    assert image_path(merged["images"][1], recorded_roots(merged)) == (tmp_path / "k" / "Image/SSM/a.jpg").resolve()
    path = write_dataset(merged, tmp_path / "train.json")
    api = COCO(str(path))
    assert len(api.getAnnIds(catIds=[1])) == 3 and len(api.getImgIds()) == 2
    # the digest follows the content
    changed = _sources(tmp_path)
    changed[1].annotations[0]["bbox"] = [5, 5, 21, 50]
    assert merge(changed, "coco+cuhk")["persondet"]["digest"] != meta["digest"]
    assert merge(_sources(tmp_path), "coco+cuhk")["persondet"]["digest"] == meta["digest"]


def test_merge_in_place_gives_the_same_set_and_digests(tmp_path):
    """prepare's merge (``consume``) renumbers annotations built by person_annotation in place: the set it
    gives, key order included, and its digests are those of the copying merge; records of another form are
    still copied into the template."""
    import copy

    import msgspec

    from persondet.formats.merge import person_annotation

    def sources():
        coco, cuhk_set = _sources(tmp_path)
        coco.annotations = [person_annotation(a["id"], a["image_id"], a["bbox"], a["area"], a["iscrowd"])
                            for a in coco.annotations]
        coco.prepared_form = True
        return [coco, cuhk_set]

    copied = merge(sources(), "coco+cuhk")
    given = sources()
    kept = copy.deepcopy(given)
    consumed = merge(given, "coco+cuhk", consume=True)
    assert msgspec.json.encode(consumed) == msgspec.json.encode(copied)  # same bytes: same keys, same order
    assert consumed["annotations"][0] is given[0].annotations[0]  # renumbered in place
    assert consumed["annotations"][2] is not given[1].annotations[0]  # not in the prepared form: copied
    assert consumed["persondet"]["digest"] == merge(kept, "coco+cuhk")["persondet"]["digest"]


def test_prepare_readers_build_annotations_in_the_prepared_form(tmp_path):
    """The COCO and CUHK-SYSU sources say ``prepared_form``: every annotation has the template's keys, in order."""
    from persondet.formats.merge import _ANNOTATION
    from persondet.prepare import read_coco_source, read_cuhk_source

    coco, _ = read_coco_source(fx.make_coco_tree(tmp_path / "coco"))
    cuhk_set, _ = read_cuhk_source(fx.make_cuhk_tree(tmp_path / "cuhk"))
    for source in (coco, cuhk_set):
        assert source.prepared_form and source.annotations
        assert {tuple(a) for a in source.annotations} == {tuple(_ANNOTATION)}, source.name


def test_stats_exclude_crowd_and_average_relative_size(tmp_path):
    stats = dataset_stats(merge(_sources(tmp_path), "coco+cuhk"))
    assert stats["coco"] == {"images": 1, "objects": 1, "avg_rel_size": 100 / 5000, "crowd_regions": 1,
                             "ignore_regions": 0}
    assert stats["cuhk"] == {"images": 1, "objects": 1, "avg_rel_size": 1000 / 20000, "crowd_regions": 0,
                             "ignore_regions": 0}
    assert stats["merged"]["objects"] == 2
    assert stats["merged"]["avg_rel_size"] == pytest.approx((0.02 + 0.05) / 2)
    assert "| cuhk | 1 | 1 | 0.05000 | 0 | 0 |" in stats_markdown(stats)


def _with_ignore_regions(tmp_path):
    """coco + cuhk + a CityPersons-like and a CrowdHuman-like source holding ignore regions and extras."""
    city = SourceSet("citypersons", tmp_path / "cp", [{"id": 3, "file_name": "leftImg8bit/train/a/x.png",
                                                       "width": 100, "height": 100}],
                     [{"id": 1, "image_id": 3, "bbox": [0, 0, 10, 20], "area": 200.0, "iscrowd": 0, "ignore": 0,
                       "class_label": 1, "instance_id": 24000, "vis_ratio": 0.7},
                      {"id": 2, "image_id": 3, "bbox": [50, 50, 40, 40], "area": 1600.0, "iscrowd": 0, "ignore": 1,
                       "class_label": 0, "instance_id": 0, "vis_ratio": 1.0},
                      {"id": 3, "image_id": 3, "bbox": [20, 0, 30, 30], "area": 900.0, "iscrowd": 1, "ignore": 0,
                       "class_label": 5, "instance_id": 24, "vis_ratio": 0.0}])
    crowd = SourceSet("crowdhuman", tmp_path / "ch", [{"id": 1, "file_name": "Images/1,a.jpg", "width": 200,
                                                       "height": 100}],
                      [{"bbox": [0, 0, 100, 50], "area": 5000.0, "iscrowd": 0, "ignore": 1, "id": 1, "image_id": 1},
                       {"bbox": [10, 10, 20, 40], "area": 800.0, "iscrowd": 0, "ignore": 0, "vis_ratio": 0.5, "id": 2,
                        "image_id": 1}])
    return [*_sources(tmp_path), city, crowd]


def test_merge_keeps_ignore_regions_and_source_extras(tmp_path):
    merged = merge(_with_ignore_regions(tmp_path), "coco+cuhk+citypersons+crowdhuman")
    anns = merged["annotations"]
    assert [a["ignore"] for a in anns] == [0, 0, 0, 0, 1, 0, 1, 0]  # present on every annotation, 0 by default
    assert list(anns[4])[:9] == ["id", "image_id", "category_id", "bbox", "area", "iscrowd", "ignore", "person_id",
                                 "ishard"]
    assert (anns[4]["class_label"], anns[4]["instance_id"], anns[4]["vis_ratio"]) == (0, 0, 1.0)
    assert anns[7]["vis_ratio"] == 0.5 and "vis_ratio" not in anns[6] and "class_label" not in anns[0]
    assert set(merged["persondet"]["source_digests"]) == {"coco", "cuhk", "citypersons", "crowdhuman"}
    # the ignore flag is part of the content: flipping it changes the digest
    flipped = _with_ignore_regions(tmp_path)
    flipped[3].annotations[0]["ignore"] = 0
    assert merge(flipped, "x")["persondet"]["digest"] != merged["persondet"]["digest"]


def test_stats_count_ignore_regions_apart_from_persons(tmp_path):
    merged = merge(_with_ignore_regions(tmp_path), "coco+cuhk+citypersons+crowdhuman")
    merged["annotations"].append({**merged["annotations"][-1], "id": 99, "ignore": 0, "extra": {"ignore": 1}})
    stats = dataset_stats(merged)
    assert stats["citypersons"] == {"images": 1, "objects": 1, "avg_rel_size": 200 / 10000, "crowd_regions": 1,
                                    "ignore_regions": 1}
    assert stats["crowdhuman"] == {"images": 1, "objects": 1, "avg_rel_size": 800 / 20000, "crowd_regions": 0,
                                   "ignore_regions": 2}  # the ignore flag and a nested extra.ignore
    assert stats["merged"]["objects"] == 4 and stats["merged"]["ignore_regions"] == 3
    assert relative_sizes(merged)["crowdhuman"] == [800 / 20000]
    assert "| crowdhuman | 1 | 1 | 0.04000 | 0 | 2 |" in stats_markdown(stats)


def test_stats_classify_every_flag_combination_by_the_person_box_rule():
    """relative_sizes and dataset_stats (describe's one pass) count by the rule: what they count must be
    what is_person_box / box_kind say, for flags missing, false, true or oddly typed, nested or not."""
    from itertools import product

    from persondet.datasets import is_person_box
    from persondet.stats import box_kind

    flags = product([None, 0, 1, True], [None, 0, 1, False], [None, {}, {"ignore": 1}, {"ignore": 0}, {"occ": 1}])
    images = [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 50},
              {"id": 2, "file_name": "b.jpg", "width": 40, "height": 30, "source": "cuhk"}]
    anns = []
    for k, values in enumerate(flags):
        ann = {"id": k + 1, "image_id": 1 + k % 2, "bbox": [0, 0, 1 + k % 7, 2]}
        ann.update({key: v for key, v in zip(("iscrowd", "ignore", "extra"), values) if v is not None})
        anns.append(ann)
    dataset = {"images": images, "annotations": anns}
    persons = [a for a in anns if is_person_box(a)]
    sizes = relative_sizes(dataset)
    assert sizes == {"coco": [a["bbox"][2] * 2 / 5000 for a in persons if a["image_id"] == 1],
                     "cuhk": [a["bbox"][2] * 2 / 1200 for a in persons if a["image_id"] == 2]}
    kinds = [box_kind(a) for a in anns]
    merged = dataset_stats(dataset)["merged"]
    assert (merged["objects"], merged["crowd_regions"], merged["ignore_regions"]) == (
        len(persons), kinds.count("crowd"), kinds.count("ignore"))
    assert describe(dataset) == (sizes, dataset_stats(dataset))  # prepare's one pass: both halves
    assert 0 < len(persons) < len(anns) and kinds.count("ignore") > 0


def test_check_images_draw_ignore_regions_in_their_own_colour(tmp_path):
    sources = _with_ignore_regions(tmp_path)[2:]
    for source in sources:
        for image in source.images:
            path = source.root / image["file_name"]
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (image["width"], image["height"]), (128, 128, 128)).save(path)
    merged = merge(sources, "citypersons+crowdhuman")
    city, crowd = draw_checks(merged, tmp_path / "checks", per_source=1)
    assert len(set(BOX_COLOURS.values())) == len(BOX_COLOURS)

    def kind_at(path, x, y):  # the box colour nearest to the pixel (JPEG blurs thin lines a little)
        with Image.open(path) as im:
            pixel = np.asarray(im.convert("RGB"))[y, x].astype(int)
        colours = {**BOX_COLOURS, "background": (128, 128, 128)}
        return min(colours, key=lambda k: np.abs(pixel - colours[k]).sum())

    # CrowdHuman: the ignore region's right edge (x = 100), the person's (x = 30)
    assert kind_at(crowd, 99, 30) == "ignore" and kind_at(crowd, 29, 40) == "person"
    assert kind_at(crowd, 60, 30) == "background"
    # CityPersons: label 0 at [50, 50, 40, 40], the group at [20, 0, 30, 30], the legend's first line
    assert kind_at(city, 89, 70) == "ignore" and kind_at(city, 35, 29) == "crowd"
    # the legend: a strip below the image naming the kinds drawn, in their colours (CityPersons: no hard box)
    with Image.open(city) as im:
        assert im.width == 100 and im.height > 100
        strip = np.asarray(im.convert("RGB"))[100:].astype(int).reshape(-1, 3)
    present = {k for k, c in BOX_COLOURS.items() if (np.abs(strip - c).max(axis=1) < 40).sum() >= 5}
    assert present == {"person", "crowd", "ignore"}

