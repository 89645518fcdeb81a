"""The dataset vocabulary: mixes, merged data, the person category rule and the image path rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from persondet.config import ConfigError, PrepareConfig
from persondet.datasets import (SOURCES, image_path, is_merged, mix_name, mix_sort_key, person_category_id,
                                recorded_roots)
from persondet.errors import PersondetError


def test_a_mix_is_any_combination_of_registered_sources_in_canonical_order():
    assert list(SOURCES) == ["coco", "cuhk", "citypersons", "crowdhuman"]
    assert mix_name("cuhk+coco") == mix_name("coco+cuhk") == "coco+cuhk"
    assert mix_name("crowdhuman+coco+citypersons+cuhk") == "coco+cuhk+citypersons+crowdhuman"
    assert PrepareConfig(mix="crowdhuman + citypersons").mix == "crowdhuman + citypersons"
    assert PrepareConfig(mix="cuhk+coco").mix == "cuhk+coco"  # logged as typed, merged as coco+cuhk
    with pytest.raises(ConfigError, match=r"mix='coco\+kitti': 'kitti' is not a source \(sources: coco, cuhk"):
        PrepareConfig(mix="coco+kitti")
    with pytest.raises(ConfigError, match="named twice"):
        PrepareConfig(mix="coco+coco")
    assert sorted(["coco+cuhk", "custom", "cuhk", "coco"], key=mix_sort_key) == ["coco", "cuhk", "coco+cuhk", "custom"]
    assert sorted(["coco+cuhk+citypersons+crowdhuman", "crowdhuman", "coco+crowdhuman", "coco+cuhk", "coco"],
                  key=mix_sort_key) == ["coco", "crowdhuman", "coco+cuhk", "coco+crowdhuman",
                                        "coco+cuhk+citypersons+crowdhuman"]


def test_each_source_has_its_root_setting_and_its_reader_options_in_prepare():
    fields = PrepareConfig.__dataclass_fields__
    for source in SOURCES.values():
        assert source.root_param == f"{source.name}_root" and fields[source.root_param].default == ""
        for option in source.options:  # <source>_<option> in prepare, <option> for the reader
            assert option in fields and source.keyword(option) == option[len(source.name) + 1:]
    assert SOURCES["citypersons"].options == ("citypersons_split", "citypersons_subset")
    assert SOURCES["crowdhuman"].options == ("crowdhuman_split", "crowdhuman_box")
    with pytest.raises(ConfigError, match=r"citypersons_subset='hard' must be one of all, reasonable"):
        PrepareConfig.from_strings({"citypersons_subset": "hard"})
    with pytest.raises(ConfigError, match=r"crowdhuman_box='hbox' must be one of fbox, vbox"):
        PrepareConfig.from_strings({"crowdhuman_box": "hbox"})


def test_a_source_reads_with_the_prepare_settings_as_its_keywords(tmp_path):
    from persondet.synth import write_crowdhuman

    root = write_crowdhuman(tmp_path / "ch", seed=1, train_images=2, val_images=3)
    source, counts = SOURCES["crowdhuman"].read(root, PrepareConfig(crowdhuman_split="val", crowdhuman_box="vbox"))
    assert source.name == "crowdhuman" and counts["images_total"] == 3
    lines = (root / "annotation_val.odgt").read_text().splitlines()
    first = next(b["vbox"] for b in json.loads(lines[0])["gtboxes"] if b["tag"] == "person"
                 and not b["extra"].get("ignore"))
    assert [float(v) for v in first] in [a["bbox"] for a in source.annotations]  # the visible box, as asked


@pytest.mark.parametrize("mix, merged", [("coco+cuhk", True), ("cuhk+coco", True), ("coco", False),
                                         ("cuhk", False), ("custom", False), ("coco+custom", False),
                                         ("coco+citypersons", True), ("citypersons+crowdhuman", True),
                                         ("coco+cuhk+citypersons+crowdhuman", True), ("crowdhuman", False),
                                         ("citypersons", False)])
def test_merged_data_is_at_least_two_sources(mix, merged):
    assert is_merged(mix) is merged


CATEGORIES = [{"id": 1, "name": "car"}, {"id": 3, "name": "Pedestrian"}, {"id": 7, "name": "person"}]


def test_the_person_category_is_named_or_given_by_id():
    assert person_category_id(CATEGORIES) == 7  # default: person
    assert person_category_id(CATEGORIES, "pedestrian") == 3  # names compare case-insensitively
    assert person_category_id(CATEGORIES, "3") == 3 and person_category_id(CATEGORIES, 1) == 1
    with pytest.raises(PersondetError, match=r"t.json: no category named 'human' \(categories: 1:car, 3:Pedestrian"):
        person_category_id(CATEGORIES, "human", "t.json")
    with pytest.raises(PersondetError, match="no category with id 9"):
        person_category_id(CATEGORIES, "9")
    with pytest.raises(PersondetError, match="more than one category named 'person'"):
        person_category_id([{"id": 1, "name": "person"}, {"id": 2, "name": "Person"}])


def test_a_training_files_only_category_is_the_person_category_and_nothing_else_is_guessed():
    only = [{"id": 5, "name": "pedestrian"}]
    assert person_category_id(only, only_category=True) == 5
    with pytest.raises(PersondetError, match="no category named 'person'"):
        person_category_id(only)  # a test set names its person category
    with pytest.raises(PersondetError, match="no category named 'person'"):  # no synonyms
        person_category_id([{"id": 1, "name": "car"}, {"id": 2, "name": "pedestrian"}], only_category=True)


def test_the_image_path_rule(tmp_path):
    prepared = {"persondet": {"roots": {"coco": str(tmp_path / "c"), "cuhk": str(tmp_path / "k")}}}
    roots = recorded_roots(prepared)
    assert image_path({"file_name": "coco/train2017/a.jpg"}, roots, "/ignored") == tmp_path / "c" / "train2017/a.jpg"
    assert image_path({"file_name": "cuhk/Image/SSM/s1.jpg"}, roots) == tmp_path / "k" / "Image/SSM/s1.jpg"
    assert recorded_roots({"images": []}) is None
    assert image_path({"file_name": "cam1/f.png"}, None, tmp_path) == tmp_path / "cam1" / "f.png"
    with pytest.raises(PersondetError, match=r"image 4 file_name 'kitti/x.jpg': no root recorded for source 'kitti'"):
        image_path({"id": 4, "file_name": "kitti/x.jpg"}, roots)
    assert isinstance(image_path({"file_name": "x.jpg"}, None), Path)


def test_every_source_is_wired_the_way_docs_data_adding_a_dataset_says():
    """docs/DATA.md "Adding a dataset": a pure reader module and a demo generator per new source, its root in
    prepare and main (config and MLproject), the registry's reader keywords matching the reader."""
    import inspect
    import subprocess
    import sys

    import yaml

    from persondet import synth
    from persondet.config import MainConfig

    root = Path(__file__).resolve().parents[1]
    guide = (root / "docs" / "DATA.md").read_text()
    assert "## Adding a dataset" in guide
    project = yaml.safe_load((root / "MLproject").read_text())["entry_points"]
    for source in SOURCES.values():
        assert source.root_param in MainConfig.__dataclass_fields__, source.name
        for entry in ("prepare", "main"):
            assert source.root_param in project[entry]["parameters"], (entry, source.name)
            assert f"{{{source.root_param}}}" in project[entry]["command"], (entry, source.name)
        assert f"`{source.root_param}`" in guide
    for name in ("citypersons", "crowdhuman"):
        module = f"persondet.formats.{name}"
        reader = getattr(__import__(module, fromlist=["x"]), f"read_{name}")
        params = list(inspect.signature(reader).parameters.values())[1:]
        keywords = [SOURCES[name].keyword(o) for o in SOURCES[name].options]
        assert [p.name for p in params[:len(keywords)]] == keywords  # the rest are the reader's own, defaulted
        assert all(p.default is not inspect.Parameter.empty for p in params[len(keywords):]), name
        assert callable(getattr(synth, f"write_{name}")) and name in synth.EXTRA_SOURCES
        # pure: importing the reader pulls in neither torch nor mlflow
        code = f"import sys, {module}; print(sorted(m for m in ('torch', 'mlflow') if m in sys.modules))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True)
        assert out.stdout.strip() == "[]", (name, out.stdout)
