"""CrowdHuman reader: generated .odgt trees (both line decoders), the box options, bad lines, missing images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from persondet.errors import PersondetError
from persondet.formats import crowdhuman as ch
from persondet.synth import write_crowdhuman

DECODERS = ["json"] + (["msgspec"] if ch.msgspec is not None else [])


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return write_crowdhuman(tmp_path_factory.mktemp("ch") / "crowdhuman", seed=2, train_images=12, val_images=3)


def _lines(root: Path, split: str = "train") -> list[dict]:
    return [json.loads(line) for line in (root / f"annotation_{split}.odgt").read_text().splitlines()]


@pytest.mark.parametrize("decoder", DECODERS)
def test_generated_tree_reads_with_sizes_from_the_jpeg_headers(demo, decoder):
    source, counts = ch.read_crowdhuman(demo, "train", decoder=decoder)
    lines = _lines(demo)
    sizes = {}
    for image in source.images:
        with Image.open(demo / image["file_name"]) as f:
            sizes[image["id"]] = f.size
        assert f.size == (image["width"], image["height"])
        assert image["file_name"] == f"Images/{image['original_file_name']}"
    boxes = [b for line in lines for b in line["gtboxes"]]
    persons = [b for b in boxes if b["tag"] == "person" and not b["extra"].get("ignore", 0)]
    assert counts["boxes_total"] == len(boxes)
    assert counts["person_boxes"] == len(persons) == sum(1 for a in source.annotations if not a["ignore"])
    assert counts["masks"] == sum(b["tag"] == "mask" for b in boxes) > 0
    assert counts["ignored_persons"] == sum(b["tag"] == "person" and b["extra"].get("ignore", 0) for b in boxes) > 0
    assert counts["ignore_regions"] == counts["masks"] + counts["ignored_persons"]
    # full-body boxes past the border are clipped to the image, and counted
    past = 0
    for line in lines:
        image = next(im for im in source.images if im["original_file_name"] == f"{line['ID']}.jpg")
        W, H = sizes[image["id"]]
        past += sum(b["fbox"][0] < 0 or b["fbox"][1] < 0 or b["fbox"][0] + b["fbox"][2] > W
                    or b["fbox"][1] + b["fbox"][3] > H for b in line["gtboxes"])
    assert counts["clipped_boxes"] == past > 0
    for ann in source.annotations:
        x, y, w, h = ann["bbox"]
        W, H = sizes[ann["image_id"]]
        assert 0 <= x and 0 <= y and x + w <= W and y + h <= H and w > 0 and h > 0
        assert ann["iscrowd"] == 0 and ann["area"] == w * h
    assert [a["id"] for a in source.annotations] == list(range(1, len(source.annotations) + 1))


def test_both_decoders_give_the_same_records(demo):
    if ch.msgspec is None:
        pytest.skip("msgspec not installed: only the json decoder is there")
    assert ch.read_odgt(demo / "annotation_train.odgt", "json") == ch.read_odgt(demo / "annotation_train.odgt",
                                                                                  "msgspec")


def test_visible_box_option(demo):
    full, _ = ch.read_crowdhuman(demo, "val", box="fbox")
    visible, _ = ch.read_crowdhuman(demo, "val", box="vbox")
    lines = _lines(demo, "val")
    first = next(b for b in lines[0]["gtboxes"] if b["tag"] == "person" and not b["extra"].get("ignore", 0))
    by_image = [a for a in visible.annotations if a["image_id"] == 1 and not a["ignore"]]
    assert by_image[0]["bbox"] == [float(v) for v in first["vbox"]]  # the demo's vbox lies inside the image
    assert sum(a["area"] for a in visible.annotations) < sum(a["area"] for a in full.annotations)
    assert any(a.get("vis_ratio", 1.0) < 1.0 for a in full.annotations)


def test_images_without_persons_are_left_out(tmp_path):
    root = tmp_path / "ch"
    (root / "Images").mkdir(parents=True)
    lines = [{"ID": "1,a", "gtboxes": [{"tag": "mask", "fbox": [0, 0, 5, 5], "vbox": [0, 0, 5, 5],
                                        "extra": {"ignore": 1}}]},
             {"ID": "2,b", "gtboxes": [{"tag": "person", "fbox": [-5, 2, 10, 300], "vbox": [0, 2, 5, 20],
                                        "hbox": [0, 2, 3, 3], "extra": {"box_id": 0}, "head_attr": {}},
                                       {"tag": "person", "fbox": [1, 1, 0, 7], "extra": {}},
                                       {"tag": "person", "fbox": [50, 50, 10, 10], "extra": {}}]},
             {"ID": "3,c", "gtboxes": []}]
    (root / "annotation_train.odgt").write_text("".join(json.dumps(line) + "\n" for line in lines) + "\n")
    for line in lines:
        Image.new("RGB", (40, 30)).save(root / "Images" / f"{line['ID']}.jpg")
    source, counts = ch.read_crowdhuman(root)
    assert [im["id"] for im in source.images] == [2]
    assert source.annotations == [{"bbox": [0.0, 2.0, 5.0, 28.0], "area": 140.0, "iscrowd": 0, "ignore": 0,
                                   "vis_ratio": 0.0333, "id": 1, "image_id": 2}]
    assert counts == {"images_total": 3, "images_without_persons": 2, "boxes_total": 4, "person_boxes": 1,
                      "ignore_regions": 0, "masks": 1, "ignored_persons": 0, "dropped_boxes": 1,
                      "clipped_boxes": 1, "outside_boxes": 1}


def test_missing_images_are_counted_and_named(demo, tmp_path):
    root = tmp_path / "ch"
    shutil.copytree(demo, root)
    gone = [f"Images/{line['ID']}.jpg" for line in _lines(root)[:2]]
    for name in gone:
        (root / name).unlink()
    with pytest.raises(PersondetError) as info:
        ch.read_crowdhuman(root)
    message = str(info.value)
    assert message.startswith(f"2 of 12 images listed in {root / 'annotation_train.odgt'} are missing")
    assert gone[0] in message and "\n" not in message


GOOD = '{"ID": "1,a", "gtboxes": [{"tag": "person", "fbox": [1, 2, 3, 4], "vbox": [1, 2, 3, 4], "extra": {}}]}'


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("bad, match", [
    ('{"ID": "2,b", "gtboxes": [', r"line 2: not a"),
    ("this is not json", r"line 2: not a"),
    ('{"ID": "2,b", "gtboxes": [{"tag": "person", "fbox": [1, 2, NaN, 4]}]}', r"line 2: not a"),
    ('{"ID": "2,b", "gtboxes": [{"tag": "person", "fbox": [1, 2, 3]}]}', r"line 2: .*fbox"),
    ('{"ID": "2,b", "gtboxes": {"tag": "person"}}', r"line 2: not a CrowdHuman annotation line"),
    ('{"ID": 7, "gtboxes": []}', r"line 2: not a CrowdHuman annotation line"),
    ('[1, 2]', r"line 2: not a CrowdHuman annotation line"),
    ('{"ID": "2,b", "gtboxes": [{"tag": "dog", "fbox": [1, 2, 3, 4]}]}',
     r"line 2 \(ID 2,b\): gtboxes\[0\] has tag 'dog', expected one of person, mask"),
    (GOOD, r"line 2: ID 1,a is listed twice"),
])
def test_bad_lines_name_the_file_and_line(tmp_path, decoder, bad, match):
    path = tmp_path / "annotation_train.odgt"
    path.write_text(GOOD + "\n" + bad + "\n")
    with pytest.raises(PersondetError, match=match) as info:
        ch.read_odgt(path, decoder)
    assert str(info.value).startswith(f"{path}: line 2") and "\n" not in str(info.value)


@pytest.mark.parametrize("gtbox, box, match", [
    ('{"tag": "person", "fbox": [1, 2, -3, 4]}', "fbox", r"gtboxes\[0\].fbox = \[1.0, 2.0, -3.0, 4.0\]: negative"),
    ('{"tag": "mask", "vbox": [1, 2, 3, -4]}', "fbox", r"gtboxes\[0\].vbox = .*: negative"),
    ('{"tag": "person", "fbox": [1, 2, 3, 4]}', "vbox", r"gtboxes\[0\] is a person without vbox"),
    ('{"tag": "mask", "hbox": [1, 2, 3, 4]}', "fbox", r"gtboxes\[0\] \(mask\) has neither fbox nor vbox"),
])
def test_bad_boxes_name_the_line(tmp_path, gtbox, box, match):
    path = tmp_path / "annotation_train.odgt"
    path.write_text("\n" + '{"ID": "9,z", "gtboxes": [' + gtbox + "]}\n")
    images = ch.read_odgt(path)
    with pytest.raises(PersondetError, match=match) as info:
        ch.to_records(images, {"Images/9,z.jpg": (100, 100)}, box, where=path)
    assert str(info.value).startswith(f"{path}: line 2 (ID 9,z): ")


@pytest.mark.parametrize("kwargs, match", [
    ({"split": "test"}, r"crowdhuman_split='test' must be one of train, val"),
    ({"box": "hbox"}, r"crowdhuman_box='hbox' must be one of fbox, vbox"),
    ({"decoder": "yaml"}, r"odgt decoder 'yaml'"),
])
def test_bad_options(demo, kwargs, match):
    with pytest.raises(PersondetError, match=match):
        ch.read_crowdhuman(demo, **kwargs)


def test_missing_annotation_file(tmp_path):
    with pytest.raises(PersondetError, match=r"annotation_val.odgt: annotation file not found"):
        ch.read_crowdhuman(tmp_path, "val")
