"""The project's packaging agrees with itself: one list of dependencies, every contract entry point."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONTRACT_ENTRY_POINTS = {"prepare", "train", "evaluate", "promote", "tune", "report", "launch", "main"}


def _pyproject_dependencies() -> list[str]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["dependencies"]


def _conda_pip_dependencies() -> list[str]:
    env = yaml.safe_load((ROOT / "conda.yaml").read_text())
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "conda.yaml must have exactly one pip section"
    return pip_sections[0]


def _normalise(requirement: str) -> str:
    return re.sub(r"\s+", "", requirement).lower()


def test_conda_yaml_installs_exactly_the_pyproject_dependencies():
    assert sorted(map(_normalise, _conda_pip_dependencies())) == sorted(map(_normalise, _pyproject_dependencies()))


def test_conda_python_matches_the_supported_range():
    env = yaml.safe_load((ROOT / "conda.yaml").read_text())
    pythons = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert pythons, "conda.yaml pins no python"
    version = pythons[0].split("=")[1]
    major, minor = map(int, version.split(".")[:2])
    with open(ROOT / "pyproject.toml", "rb") as f:
        requires = tomllib.load(f)["project"]["requires-python"]
    floor = tuple(map(int, requires.removeprefix(">=").split(".")[:2]))
    assert (major, minor) >= floor


def test_install_script_installs_from_pyproject():
    script = (ROOT / "scripts" / "env.sh").read_text()
    assert 'pip install -q -e "$root[test]"' in script


def test_mlproject_declares_every_contract_entry_point_with_an_existing_script():
    project = yaml.safe_load((ROOT / "MLproject").read_text())
    entry_points = project["entry_points"]
    assert CONTRACT_ENTRY_POINTS <= set(entry_points)
    for name, spec in entry_points.items():
        script = spec["command"].split()[1]
        assert (ROOT / script).is_file(), f"{name}: {script} missing"
        for param in re.findall(r"\{(\w+)\}", spec["command"]):
            assert param in spec.get("parameters", {}), f"{name}: {{{param}}} is not a declared parameter"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in readme
    assert "bash scripts/test.sh" in ci


def test_formats_package_imports_neither_torch_nor_mlflow():
    import subprocess

    code = ("import sys, persondet.formats.coco, persondet.formats.cuhk_sysu, persondet.formats.merge;"
            "bad = [m for m in ('torch', 'mlflow') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mlproject_parameters_are_config_fields_under_the_same_name_and_default():
    from persondet.config import ENTRY_POINT_CONFIGS
    from persondet.configbase import config_fields, default_text

    project = yaml.safe_load((ROOT / "MLproject").read_text())
    assert set(project["entry_points"]) <= set(ENTRY_POINT_CONFIGS), "an entry point without a config class"
    for name, spec in project["entry_points"].items():
        fields = {f.name: f for f in config_fields(ENTRY_POINT_CONFIGS[name])}
        assert set(spec.get("parameters", {})) <= set(fields), name
        for flag, param in re.findall(r"--([\w-]+) \{(\w+)\}", spec["command"]):
            assert flag.replace("-", "_") == param, f"{name}: --{flag} carries {{{param}}}"
        for param, declared in spec.get("parameters", {}).items():
            f = fields[param]
            if f.metadata.get("required"):
                assert "default" not in declared, f"{name}.{param} is required: no MLproject default"
            else:
                # mlflow run logs the declared default; the config logs its own default: one text
                assert declared.get("default") == default_text(f), (
                    f"{name}.{param}: MLproject default {declared.get('default')!r} != config {default_text(f)!r}")
