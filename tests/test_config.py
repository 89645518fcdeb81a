"""Config fields convert by their real type hints; the text the user typed is what gets logged."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from persondet.config import ConfigBase, ConfigError, MainConfig, TrainConfig, TuneConfig, setting


@dataclass(frozen=True)
class Sample(ConfigBase):
    """A test-only config with one field of each supported kind."""

    sizes: list[int] = setting(None, "a list of ints")
    shape: tuple[int, ...] = setting((1, 2), "a tuple of ints")
    root: Path = setting(Path("data"), "a path")
    cache: Path | None = setting(None, "an optional path", none="none")
    flag: bool = setting(False, "a bool")
    cap: int | None = setting(None, "an optional int")
    ratio: float = setting(0.5, "a float")
    kind: Literal["fast", "slow"] = setting("fast", "a closed choice")
    names: tuple[Literal["coco", "cuhk"], ...] = setting(("coco",), "a list of choices")


def test_list_path_and_tuple_fields_convert_and_log_as_typed():
    config = Sample.from_strings({"sizes": "8, 16", "root": "/data/coco", "shape": "3", "cache": "/tmp/c",
                                  "names": "cuhk,coco"})
    assert config.sizes == [8, 16] and config.shape == (3,) and config.names == ("cuhk", "coco")
    assert config.root == Path("/data/coco") and isinstance(config.root, Path) and config.cache == Path("/tmp/c")
    params = config.to_params()
    assert params["sizes"] == "8, 16" and params["root"] == "/data/coco" and params["shape"] == "3"
    assert params["ratio"] == "0.5" and params["kind"] == "fast"  # not typed: the default's text


def test_numbers_keep_the_typed_text():
    config = Sample.from_strings({"ratio": "2e-2", "cap": "010"})
    assert config.ratio == 0.02 and config.cap == 10
    assert config.to_params()["ratio"] == "2e-2" and config.to_params()["cap"] == "010"


@pytest.mark.parametrize("word", ["", "none", "auto", "AUTO", " None "])
def test_none_words(word):
    config = Sample.from_strings({"cap": word, "cache": word})
    assert config.cap is None and config.cache is None
    assert config.to_params()["cap"] == word  # typed: logged as typed


def test_none_not_typed_is_logged_as_the_fields_word():
    params = Sample().to_params()
    assert params["cap"] == "auto" and params["cache"] == "none"
    assert TrainConfig(data="x").to_params()["lr"] == "auto"
    assert TrainConfig(data="x").to_params()["max_iters_per_epoch"] == "none"


@pytest.mark.parametrize("text, value", [("true", True), ("TRUE", True), ("1", True), ("yes", True), ("on", True),
                                         ("false", False), ("0", False), ("no", False), ("off", False),
                                         ("", False)])
def test_bool_words(text, value):
    assert Sample.from_strings({"flag": text}).flag is value


@pytest.mark.parametrize("values, message", [
    ({"sizes": "8,x"}, "sizes='8,x': 'x' is not a valid int"),
    ({"shape": "1.5"}, "shape='1.5': '1.5' is not a valid int"),
    ({"root": ""}, "root='' is not a valid path"),
    ({"flag": "maybe"}, "flag='maybe' is not a valid bool"),
    ({"cap": "many"}, "cap='many' is not a valid int or auto"),
    ({"ratio": "fast"}, "ratio='fast' is not a valid float"),
    ({"kind": "medium"}, "kind='medium' must be one of fast, slow"),
    ({"names": "coco,kitti"}, "names='coco,kitti': 'kitti' must be one of coco, cuhk"),
    ({"colour": "red"}, "unknown setting 'colour' for Sample"),
])
def test_bad_values_are_one_line_errors_naming_field_and_value(values, message):
    with pytest.raises(ConfigError) as info:
        Sample.from_strings(values)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_a_string_given_to_the_constructor_converts_like_the_command_line():
    tune = TuneConfig(batch_sizes="2, 4", seed="7")
    assert tune.batch_sizes == (2, 4) and tune.batch_size_list() == [2, 4] and tune.seed == 7
    assert tune.to_params()["batch_sizes"] == "2, 4"
    with pytest.raises(ConfigError, match="model='yolo' must be one of auto, small"):
        TuneConfig(model="yolo")


def test_a_config_that_travelled_as_json_is_equal():
    main = MainConfig.from_strings({"batch_sizes": "2,4", "mixes": "coco", "epochs": "3"})
    payload = json.loads(json.dumps({f: getattr(main, f) for f in ("batch_sizes", "mixes", "epochs")}))
    again = MainConfig(raw=main.raw, **payload)
    assert again == main and again.batch_sizes == (2, 4) and again.to_params() == main.to_params()


def test_list_fields_log_the_same_strings_as_before():
    # MLflow compares params as strings: the typed list fields keep the text they had as str fields.
    params = MainConfig().to_params()
    assert params["batch_sizes"] == "8,16" and params["mixes"] == "coco,cuhk,coco+cuhk"
    assert params["epochs"] == "auto" and params["max_iters_per_epoch"] == "auto"
    assert TuneConfig().to_params()["batch_sizes"] == "4,8,16"
    main = MainConfig.from_strings({"epochs": "2", "max_iters_per_epoch": "5"})
    assert main.epochs == 2 and main.max_iters_per_epoch == 5


def test_unsupported_field_type_is_a_programming_error():
    @dataclass(frozen=True)
    class Odd(ConfigBase):
        table: dict[str, int] = setting(None, "not supported")

    with pytest.raises(TypeError, match="unsupported config type"):
        Odd(table="a=1")
