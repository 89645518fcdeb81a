"""The built-in demo data: real formats, determinism, size profile, atomic caching."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from persondet import synth
from persondet.errors import PersondetError

SMALL = synth.DemoProfile(name="small", coco_train_images=24, coco_val_images=8, cuhk_images=20,
                          cuhk_pool_images=8, inhouse_images=10)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> synth.DemoData:
    return synth.ensure_demo_data(seed=3, root=tmp_path_factory.mktemp("demo"), profile=SMALL)


def _cuhk_boxes(cuhk_root: Path):
    img = scipy.io.loadmat(cuhk_root / "annotation" / "Images.mat")["Img"]
    for entry in img[0]:
        for box in entry["box"][0]:
            yield entry["imname"], box["idlocate"], box["ishard"]


def _annotation_files(tree: Path) -> dict[str, bytes]:
    return {str(p.relative_to(tree)): p.read_bytes() for p in sorted(tree.rglob("*"))
            if p.suffix in (".json", ".mat")}


def test_same_seed_gives_identical_annotation_files_and_another_seed_differs(tmp_path, demo):
    again = synth.ensure_demo_data(seed=3, root=tmp_path / "a", profile=SMALL)
    other = synth.ensure_demo_data(seed=4, root=tmp_path / "b", profile=SMALL)
    first = _annotation_files(demo.coco_root.parent)
    assert len(first) == 8  # 2 COCO + 5 CUHK-SYSU + 1 in-house
    assert first == _annotation_files(again.coco_root.parent)
    assert first != _annotation_files(other.coco_root.parent)


def test_layout_and_reuse(demo, tmp_path):
    root = demo.coco_root.parent
    assert root.name == "seed3-small"
    assert (root / synth.MARKER).is_file()
    for rel in ("coco/annotations/instances_train2017.json", "coco/annotations/instances_val2017.json",
                "cuhk/annotation/Images.mat", "cuhk/annotation/Person.mat", "cuhk/annotation/pool.mat",
                "cuhk/annotation/test/train_test/Train.mat", "cuhk/annotation/test/train_test/TestG50.mat"):
        assert (root / rel).is_file(), rel
    assert not list(root.parent.glob(".*tmp*")), "temporary build directory left behind"
    # reused, not rewritten
    stamp = (root / "coco/annotations/instances_train2017.json").stat().st_mtime_ns
    synth.ensure_demo_data(seed=3, root=root.parent, profile=SMALL)
    assert (root / "coco/annotations/instances_train2017.json").stat().st_mtime_ns == stamp


def test_demo_home_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PERSONDET_DEMO_HOME", str(tmp_path / "home"))
    tiny = synth.DemoProfile(name="tiny", coco_train_images=4, coco_val_images=2, cuhk_images=4,
                             cuhk_pool_images=2, inhouse_images=2)
    data = synth.ensure_demo_data(seed=1, profile=tiny)
    assert data.coco_root == tmp_path / "home" / "seed1-tiny" / "coco"


def test_demo_tree_of_an_older_format_is_replaced_by_the_current_one(tmp_path):
    tiny = synth.DemoProfile(name="tiny", coco_train_images=4, coco_val_images=2, cuhk_images=4,
                             cuhk_pool_images=2, inhouse_images=2, cheap_images=True)
    data = synth.ensure_demo_data(seed=1, root=tmp_path, profile=tiny)
    tree = data.coco_root.parent
    (tree / synth.MARKER).write_text("0\n")  # as an earlier persondet left it
    (tree / "left-by-the-old-version.txt").write_text("x")
    again = synth.ensure_demo_data(seed=1, root=tmp_path, profile=tiny)
    assert again == data
    assert (tree / synth.MARKER).read_text().strip() == synth.FORMAT_VERSION
    assert not (tree / "left-by-the-old-version.txt").exists()
    assert (tree / "coco/annotations/instances_train2017.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [tree.name]  # nothing set aside is left


def test_demo_coco_persons_span_the_in_house_sizes(demo):
    import json

    coco = json.loads((demo.coco_root / "annotations/instances_train2017.json").read_text())
    heights = {im["id"]: im["height"] for im in coco["images"]}
    rel = [a["bbox"][3] / heights[a["image_id"]] for a in coco["annotations"]
           if a["category_id"] == 1 and not a["iscrowd"]]
    assert min(rel) < 0.3 and max(rel) > 0.7  # the in-house set's persons are 0.25-0.6 of the image


def test_non_empty_foreign_directory_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("x")
    with pytest.raises(PersondetError, match="not empty"):
        synth.build_demo_tree(tmp_path / "out", profile=SMALL)
    assert (tmp_path / "out" / "mine.txt").read_text() == "x"


def test_coco_loads_in_pycocotools_with_the_coco_features(demo):
    from pycocotools.coco import COCO

    path = demo.coco_root / "annotations" / "instances_train2017.json"
    coco = COCO(str(path))
    cats = coco.loadCats(coco.getCatIds())
    assert len(cats) == 80 and coco.getCatIds(catNms=["person"]) == [1]
    raw = json.loads(path.read_text())
    anns = raw["annotations"]
    persons = [a for a in anns if a["category_id"] == 1]
    crowds = [a for a in persons if a["iscrowd"] == 1]
    assert any(a["category_id"] != 1 for a in anns)
    assert all(isinstance(a["segmentation"], list) for a in anns if not a["iscrowd"])
    with_person = {a["image_id"] for a in persons}
    assert 0 < len(with_person) < len(raw["images"])  # some images have no person
    assert len(with_person) == round(0.75 * 24)
    assert len({a["id"] for a in anns}) == len(anns)
    assert all(isinstance(a["segmentation"], dict) for a in crowds)
    # bbox is tight around the polygon
    a = persons[0]
    xy = np.array(a["segmentation"][0]).reshape(-1, 2)
    assert np.allclose([xy[:, 0].min(), xy[:, 1].min()], a["bbox"][:2], atol=0.01)
    assert np.allclose(xy.max(axis=0) - xy.min(axis=0), a["bbox"][2:], atol=0.02)


def test_crowd_regions_are_rle_person_regions(tmp_path):
    from pycocotools.coco import COCO

    root = synth.write_coco(tmp_path, train_images=6, val_images=1, train_person_images=6, crowd_fraction=1.0,
                            cheap_images=True)
    coco = COCO(str(root / "annotations" / "instances_train2017.json"))
    crowds = coco.loadAnns(coco.getAnnIds(iscrowd=True))
    assert len(crowds) == 6 and all(a["category_id"] == 1 for a in crowds)
    for a in crowds:
        mask = coco.annToMask(a)
        ys, xs = np.nonzero(mask)
        assert mask.sum() == a["area"]
        assert [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1] == a["bbox"]


def test_crowd_rle_matches_the_rectangle():
    from pycocotools import mask as mask_utils

    W, H, (x, y, w, h) = 7, 5, (2, 1, 3, 2)
    rle = mask_utils.frPyObjects({"counts": synth.coco.rect_rle(x, y, w, h, W, H), "size": [H, W]}, H, W)
    expected = np.zeros((H, W), np.uint8)
    expected[y:y + h, x:x + w] = 1
    assert (mask_utils.decode(rle) == expected).all()


def test_images_exist_with_the_declared_sizes(demo):
    for split in ("train2017", "val2017"):
        raw = json.loads((demo.coco_root / "annotations" / f"instances_{split}.json").read_text())
        for im in raw["images"]:
            with Image.open(demo.coco_root / split / im["file_name"]) as f:
                assert f.size == (im["width"], im["height"])
    inhouse = json.loads(demo.inhouse_annotations.read_text())
    for im in inhouse["images"]:
        with Image.open(demo.inhouse_images / im["file_name"]) as f:
            assert f.size == (im["width"], im["height"])
    names = {str(n[0]) for n, _, _ in _cuhk_boxes(demo.cuhk_root)}
    assert names == {p.name for p in (demo.cuhk_root / "Image" / "SSM").glob("*.jpg")}


def test_cuhk_mat_encoding_is_the_one_scipy_reads_from_matlab_files(demo):
    img = scipy.io.loadmat(demo.cuhk_root / "annotation" / "Images.mat")["Img"]
    assert img.shape == (1, 20) and img.dtype.names == ("imname", "nAppear", "box")
    first = img[0, 0]
    assert first["imname"].shape == (1,) and first["imname"].dtype.kind == "U" and first["imname"][0] == "s1.jpg"
    assert first["box"].shape == (1, int(first["nAppear"][0, 0]))
    boxes = list(_cuhk_boxes(demo.cuhk_root))
    dtypes = {loc.dtype for _, loc, _ in boxes}
    assert dtypes == {np.dtype(np.uint8), np.dtype(np.uint16)}
    for _, loc, hard in boxes:
        assert loc.shape == (1, 4) and hard.shape == (1, 1)
        assert (loc.dtype == np.uint16) == (int(loc.max()) > 255)
    xywh = np.array([loc[0].astype(np.int64) for _, loc, _ in boxes])
    assert ((xywh[:, 2] <= 0) | (xywh[:, 3] <= 0)).any(), "no zero-size box"
    sizes = {}
    for name in {str(n[0]) for n, _, _ in boxes}:
        with Image.open(demo.cuhk_root / "Image" / "SSM" / name) as f:
            sizes[name] = f.size
    past = [b for (n, loc, _) in boxes for b in [loc[0].astype(int)]
            if b[0] + b[2] > sizes[str(n[0])][0] or b[1] + b[3] > sizes[str(n[0])][1]]
    assert past, "no box runs past the image border"


def test_cuhk_protocol_files(demo):
    ann = demo.cuhk_root / "annotation"
    pool = scipy.io.loadmat(ann / "pool.mat")["pool"]
    assert pool.shape == (8, 1) and pool[0, 0].dtype.kind == "U"
    pool_names = {str(c[0]) for c in pool[:, 0]}
    train = scipy.io.loadmat(ann / "test" / "train_test" / "Train.mat")["Train"]
    assert train.shape[1] == 1 and train[0, 0].shape == (1, 1)
    assert train[0, 0].dtype.names == ("idname", "nAppear", "scene")
    for item in train[:, 0]:
        for scene in item[0, 0]["scene"][0]:
            assert str(scene["imname"][0]) not in pool_names
    test = scipy.io.loadmat(ann / "test" / "train_test" / "TestG50.mat")["TestG50"]
    assert test.shape[0] == 1 and test.dtype.names == ("Query", "Gallery")
    q = test[0, 0]["Query"]
    assert q.shape == (1, 1) and q.dtype.names == ("imname", "idlocate", "ishard", "idname")
    gallery = test[0, 0]["Gallery"]
    assert gallery.shape == (1, 7)  # pool - 1 here; 50 when the pool is large enough
    empties = [g for g in gallery[0] if g["idlocate"].size == 0]
    assert empties and empties[0]["idlocate"].shape == (1, 0)
    assert {str(g["imname"][0]) for g in gallery[0]} <= pool_names
    person = scipy.io.loadmat(ann / "Person.mat")["Person"]
    assert person.dtype.names == ("idname", "nAppear", "scene") and person.shape[0] == 1


def test_real_file_has_the_encoding_we_imitate():
    real = Path(__file__).resolve().parents[2] / "shared" / "data" / "cuhk-sysu-real" / "TestG100.mat"
    if not real.exists():
        pytest.skip("../shared/data not present")
    t = scipy.io.loadmat(real)["TestG100"]
    q = t[0, 0]["Query"][0, 0]
    assert q["imname"].shape == (1,) and q["idlocate"].dtype in (np.uint8, np.uint16)
    assert any(g["idlocate"].shape == (1, 0) for g in t[0, 0]["Gallery"][0])


def test_inhouse_person_category_has_another_id_and_name(demo):
    raw = json.loads(demo.inhouse_annotations.read_text())
    by_name = {c["name"]: c["id"] for c in raw["categories"]}
    assert by_name["pedestrian"] != 1 and "person" not in by_name
    files = [im["file_name"] for im in raw["images"]]
    assert all("/" in f for f in files)
    assert {Path(f).suffix for f in files} == {".jpg", ".png"}
    with_person = {a["image_id"] for a in raw["annotations"] if a["category_id"] == by_name["pedestrian"]}
    assert len(with_person) < len(files)
    assert any("area" not in a for a in raw["annotations"]) and any("iscrowd" not in a for a in raw["annotations"])


def _avg_rel(images: dict, boxes) -> float:
    return float(np.mean([w * h / (images[i][0] * images[i][1]) for i, (w, h) in boxes]))


def test_size_profile_cuhk_has_larger_images_and_smaller_people(demo):
    coco = json.loads((demo.coco_root / "annotations" / "instances_train2017.json").read_text())
    cims = {im["id"]: (im["width"], im["height"]) for im in coco["images"]}
    coco_rel = _avg_rel(cims, [(a["image_id"], a["bbox"][2:]) for a in coco["annotations"]
                               if a["category_id"] == 1 and not a["iscrowd"]])
    kims, kboxes = {}, []
    for n, loc, _ in _cuhk_boxes(demo.cuhk_root):
        name = str(n[0])
        if name not in kims:
            with Image.open(demo.cuhk_root / "Image" / "SSM" / name) as f:
                kims[name] = f.size
        kboxes.append((name, loc[0].astype(int)[2:]))
    cuhk_rel = _avg_rel(kims, kboxes)
    house = json.loads(demo.inhouse_annotations.read_text())
    hims = {im["id"]: (im["width"], im["height"]) for im in house["images"]}
    house_rel = _avg_rel(hims, [(a["image_id"], a["bbox"][2:]) for a in house["annotations"] if a["category_id"] == 3])
    assert cuhk_rel < house_rel < coco_rel
    assert np.mean([w * h for w, h in kims.values()]) > 1.5 * np.mean([w * h for w, h in cims.values()])


def test_cheap_images_have_the_declared_sizes_and_share_files(tmp_path):
    root = synth.write_cuhk(tmp_path / "cuhk", images=30, pool_images=10, boxes=90, cheap_images=True)
    files = list((root / "Image" / "SSM").glob("*.jpg"))
    assert len(files) == 30 and not (root / ".cheap").exists()
    img = scipy.io.loadmat(root / "annotation" / "Images.mat")["Img"]
    assert sum(int(e["nAppear"][0, 0]) for e in img[0]) == 90
    assert len({f.stat().st_ino for f in files}) < 30  # hard links
    coco = synth.write_coco(tmp_path / "coco", train_images=20, val_images=5, train_person_images=11,
                            cheap_images=True)
    raw = json.loads((coco / "annotations" / "instances_train2017.json").read_text())
    assert len({a["image_id"] for a in raw["annotations"] if a["category_id"] == 1}) == 11
    for im in raw["images"]:
        with Image.open(coco / "train2017" / im["file_name"]) as f:
            assert f.size == (im["width"], im["height"])


def test_bad_counts_are_one_line_errors(tmp_path):
    with pytest.raises(PersondetError, match="pool_images"):
        synth.write_cuhk(tmp_path / "c", images=5, pool_images=5)
    with pytest.raises(PersondetError, match="person images 9"):
        synth.write_coco(tmp_path / "k", train_images=4, val_images=1, train_person_images=9)


def test_cli_writes_a_tree_and_rejects_bad_input(tmp_path, capsys):
    out = tmp_path / "cli"
    assert synth.cli(["--out", str(out), "--coco-images", "4", "--coco-val-images", "2", "--cuhk-images", "6",
                      "--inhouse-images", "3", "--cheap-images"]) == 0
    assert (out / "cuhk" / "annotation" / "Images.mat").is_file()
    assert "COCO 2017 layout" in capsys.readouterr().out
    assert synth.cli(["--out", str(tmp_path / "x"), "--cuhk-images", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("persondet: error: --cuhk-images") and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------- CityPersons and CrowdHuman
EXTRA = synth.DemoProfile(name="small", coco_train_images=24, coco_val_images=8, cuhk_images=20, cuhk_pool_images=8,
                          inhouse_images=10, citypersons_train_images=8, citypersons_val_images=2,
                          crowdhuman_train_images=6, crowdhuman_val_images=2)
REAL_CITYPERSONS = Path(__file__).resolve().parents[2] / "shared" / "data" / "citypersons-real" / "annotations" / \
    "anno_train.mat"


def _tree_files(tree: Path) -> dict[str, bytes]:
    return {str(p.relative_to(tree)): p.read_bytes() for p in sorted(tree.rglob("*")) if p.is_file()}


def test_extra_sources_join_a_finished_tree_and_leave_it_as_it_was(demo, tmp_path):
    import shutil

    root = tmp_path / "home" / "seed3-small"
    shutil.copytree(demo.coco_root.parent, root)
    before = _tree_files(root)
    data = synth.ensure_demo_data(seed=3, root=root.parent, profile=EXTRA)
    assert data.citypersons_root is None and data.crowdhuman_root is None
    data = synth.ensure_demo_data(seed=3, root=root.parent, profile=EXTRA, extra_sources=synth.EXTRA_SOURCES)
    assert data.citypersons_root == root / "citypersons" and data.crowdhuman_root == root / "crowdhuman"
    after = _tree_files(root)
    assert {k: v for k, v in after.items() if k in before} == before  # coco/, cuhk/, inhouse/ untouched
    assert (root / "citypersons" / "annotations" / "anno_train.mat").is_file()
    assert (root / "crowdhuman" / "annotation_val.odgt").is_file()
    assert not [p for p in root.rglob(".*tmp*")], "temporary build folder left behind"
    stamp = (root / "crowdhuman" / "annotation_train.odgt").stat().st_mtime_ns
    again = synth.ensure_demo_data(seed=3, root=root.parent, profile=EXTRA, extra_sources=("crowdhuman",))
    assert again == data and (root / "crowdhuman" / "annotation_train.odgt").stat().st_mtime_ns == stamp
    with pytest.raises(PersondetError, match="unknown extra source 'caltech'"):
        synth.ensure_demo_data(seed=3, root=root.parent, profile=EXTRA, extra_sources=("caltech",))


def test_extra_sources_are_deterministic_by_seed(tmp_path):
    def files(seed, name):
        synth.write_citypersons(tmp_path / name / "cp", seed=seed, train_images=6, val_images=2, cheap_images=True)
        synth.write_crowdhuman(tmp_path / name / "ch", seed=seed, train_images=6, val_images=2, cheap_images=True)
        return {k: v for k, v in _tree_files(tmp_path / name).items() if k.endswith((".mat", ".odgt"))}

    first = files(1, "a")
    assert len(first) == 4 and first == files(1, "b") and first != files(2, "c")


def _mat_layout(path: Path, key: str) -> dict:
    cells = scipy.io.loadmat(path)[key]
    as_double = scipy.io.loadmat(path, mat_dtype=True)[key]
    entries = [c[0, 0] for c in cells[0]]
    return {"top": (cells.ndim, cells.shape[0], cells.dtype.kind), "cell": {c.shape for c in cells[0]},
            "fields": {e.dtype.names for e in entries}, "city": {(e["cityname"].shape, e["cityname"].dtype.kind)
                                                                 for e in entries},
            "dtypes": {e["bbs"].dtype.name for e in entries}, "columns": {e["bbs"].shape[1] for e in entries},
            "empty": {(e["bbs"].shape, e["bbs"].dtype.name) for e in entries if e["bbs"].size == 0},
            "as_double": {c[0, 0]["bbs"].dtype.name for c in as_double[0] if c[0, 0]["bbs"].size}}


def test_citypersons_demo_is_encoded_like_the_real_file(tmp_path):
    root = synth.write_citypersons(tmp_path / "cp", seed=0, train_images=24, val_images=8)
    layout = _mat_layout(root / "annotations" / "anno_train.mat", "anno_train_aligned")
    assert layout == {"top": (2, 1, "O"), "cell": {(1, 1)}, "fields": {("cityname", "im_name", "bbs")},
                      "city": {((1,), "U")}, "dtypes": {"uint8", "uint16", "int16"}, "columns": {10},
                      "empty": {((0, 10), "uint8")}, "as_double": {"float64"}}
    if REAL_CITYPERSONS.exists():
        assert _mat_layout(REAL_CITYPERSONS, "anno_train_aligned") == layout
    cells = scipy.io.loadmat(root / "annotations" / "anno_train.mat")["anno_train_aligned"][0]
    rows = np.concatenate([c[0, 0]["bbs"].astype(np.int64) for c in cells if c[0, 0]["bbs"].size])
    assert set(rows[:, 0].tolist()) == {0, 1, 2, 3, 4, 5}
    int16 = [c[0, 0]["bbs"] for c in cells if c[0, 0]["bbs"].dtype == np.int16]
    assert all((b[:, 1] < 0).any() for b in int16)  # int16 storage exactly where a box starts left of the image
    groups = rows[rows[:, 0] == 5]
    assert (groups[:, 6:] == 0).all() and (groups[:, 5] == 24).all()  # as in the real file
    for c in cells:
        with Image.open(root / "leftImg8bit" / "train" / str(c[0, 0]["cityname"][0]) / str(c[0, 0]["im_name"][0])) as f:
            assert f.format == "PNG" and f.size == (512, 256)
    assert scipy.io.loadmat(root / "annotations" / "anno_val.mat")["anno_val_aligned"].shape == (1, 8)


def test_crowdhuman_demo_lines_and_images(tmp_path):
    import re

    root = synth.write_crowdhuman(tmp_path / "ch", seed=0, train_images=12, val_images=3)
    lines = [json.loads(line) for line in (root / "annotation_train.odgt").read_text().splitlines()]
    assert len(lines) == 12 and all(list(line) == ["ID", "gtboxes"] for line in lines)
    assert all(re.fullmatch(r"\d{6},[0-9a-f]{15}", line["ID"]) for line in lines)
    boxes = [(line["ID"], b) for line in lines for b in line["gtboxes"]]
    assert all(list(b) == ["fbox", "tag", "hbox", "extra", "vbox", "head_attr"] for _, b in boxes)
    masks = [b for _, b in boxes if b["tag"] == "mask"]
    ignored = [b for _, b in boxes if b["tag"] == "person" and b["extra"].get("ignore") == 1]
    assert masks and ignored and all(b["extra"] == {"ignore": 1} and b["head_attr"] == {} for b in masks)
    assert any("ignore" not in b["extra"] for _, b in boxes)  # extra's keys are optional
    past = occluded = 0
    for image_id, b in boxes:
        with Image.open(root / "Images" / f"{image_id}.jpg") as f:
            W, H = f.size
            assert f.format == "JPEG"
        x, y, w, h = b["fbox"]
        vx, vy, vw, vh = b["vbox"]
        assert 0 <= vx and 0 <= vy and vx + vw <= W and vy + vh <= H and x <= vx and vx + vw <= x + w
        past += x < 0 or y < 0 or x + w > W or y + h > H
        occluded += vy + vh < min(y + h, H)
    assert past > 0 and occluded > 0


def test_cli_writes_the_extra_sources_when_asked(tmp_path, capsys):
    out = tmp_path / "cli"
    assert synth.cli(["--out", str(out), "--coco-images", "2", "--coco-val-images", "1", "--cuhk-images", "3",
                      "--inhouse-images", "1", "--citypersons-images", "4", "--crowdhuman-images", "4",
                      "--cheap-images"]) == 0
    printed = capsys.readouterr().out
    assert f"CityPersons layout: {out / 'citypersons'}" in printed and "CrowdHuman layout" in printed
    assert len(list((out / "crowdhuman" / "Images").glob("*.jpg"))) == 4 + 1
    assert (out / "citypersons" / "annotations" / "anno_val.mat").is_file()
