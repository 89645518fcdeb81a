"""The command line explains itself: every option's meaning and default come from its config field, and
docs/PARAMETERS.md is generated from the same declarations."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from persondet import cli
from persondet.config import ENTRY_POINT_CONFIGS, TrainConfig
from persondet.configbase import config_fields, default_text

ROOT = Path(__file__).resolve().parents[1]
MLPROJECT = yaml.safe_load((ROOT / "MLproject").read_text())


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("name", list(ENTRY_POINT_CONFIGS))
def test_every_config_field_and_step_has_help(name):
    config_cls = ENTRY_POINT_CONFIGS[name]
    assert len(cli.description(config_cls).split()) >= 8, f"{config_cls.__name__} needs a docstring"
    for f in config_fields(config_cls):
        text = f.metadata.get("help", "")
        assert isinstance(text, str) and len(text.split()) >= 2, f"{config_cls.__name__}.{f.name} has no help"


@pytest.mark.parametrize("name", list(MLPROJECT["entry_points"]))
def test_help_of_each_entry_point_script_shows_every_option_with_meaning_and_default(name):
    script = MLPROJECT["entry_points"][name]["command"].split()[1]
    # A wide terminal so that argparse does not wrap (it would break words at hyphens).
    proc = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "COLUMNS": "1000"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = _flat(proc.stdout)
    config_cls = ENTRY_POINT_CONFIGS[name]
    assert cli.description(config_cls) in out
    for f in config_fields(config_cls):
        assert cli.dashed(f.name) in out
        assert _flat(f.metadata["help"]) in out, f"{name}: --{f.name} help missing"
        shown = "(required)" if f.metadata.get("required") else f"default: {default_text(f) or 'empty'}"
        assert f"{_flat(f.metadata['help'])} {shown}" in out or f"{_flat(f.metadata['help'])} ({shown}" in out


def test_train_help_carries_the_recipe():
    out = _flat(cli.build_parser(TrainConfig).format_help())
    assert "auto = 0.02 x batch_size / 16, the linear scaling rule" in out
    assert "--lr float|auto" in out and "(default: auto)" in out
    assert "--batch-sizes" not in out and "--max-iters-per-epoch int|none" in out


def test_parameters_doc_is_up_to_date():
    generated = subprocess.run([sys.executable, "-m", "persondet.cli", "--markdown"], capture_output=True,
                               text=True, cwd=ROOT, timeout=120, check=True).stdout
    assert generated == cli.markdown()
    on_disk = (ROOT / cli.PARAMETERS_DOC).read_text()
    assert on_disk == generated, ("docs/PARAMETERS.md is out of date: run "
                                  "`python -m persondet.cli --markdown > docs/PARAMETERS.md`")
    assert "(docs/PARAMETERS.md)" in (ROOT / "README.md").read_text()  # linked from the README


def test_parameters_doc_lists_every_field_once_per_entry_point():
    text = cli.markdown()
    for name, config_cls in ENTRY_POINT_CONFIGS.items():
        section = text.split(f"\n## {name}\n")[1].split("\n## ")[0]
        rows = [line for line in section.splitlines() if line.startswith("| `")]
        assert [row.split("`")[1] for row in rows] == [f.name for f in config_fields(config_cls)]
    assert "| `lr` | `float\\|auto` | `auto` |" in text
    assert "| `data` | `text` | required |" in text and "| `batch_sizes` | `int,...` | `8,16` |" in text


def test_an_undeclared_mlflow_parameter_reaches_the_config_under_its_name():
    # mlflow run -P weight_decay=0.001 (not declared in MLproject) logs `weight_decay` and appends
    # `--weight_decay 0.001` to the command: the script must accept that spelling.
    from mlflow.projects._project_spec import load_project

    entry = load_project(str(ROOT)).get_entry_point("train")
    command = entry.compute_command({"data": "x.json", "weight_decay": "0.001", "batch_size": "4"}, None)
    argv = shlex.split(command)[2:]  # after `python entrypoints/train.py`
    config = cli.parse_config(TrainConfig, argv)
    assert config.weight_decay == 0.001 and config.batch_size == 4
    assert config.to_params()["weight_decay"] == "0.001" and config.to_params()["batch_size"] == "4"
    assert config.to_params()["max_iters_per_epoch"] == "none"  # MLproject's default, as the field's


def test_a_bad_option_is_one_line_and_exit_status_2(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "entrypoints" / "prepare.py"), "--mix", "coco+kitti"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("persondet: error: mix='coco+kitti': 'kitti' is not a source "
                                   "(sources: coco, cuhk, citypersons, crowdhuman; a mix joins them with '+')")
