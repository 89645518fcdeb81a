"""The benchmark scripts run from the project's environment: --help, a --smoke run, and bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("evaluation", "data_loading", "tracking_overhead", "gpu_train_throughput", "auth_throughput",
           "evaluation_correctness")


def _run(name: str, *args: str, tmp_path: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
           "PERSONDET_DEMO_HOME": str(tmp_path / "demo"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "bench" / f"{name}.py"), *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("name", SCRIPTS + ("demo_sweep",))
def test_help(name, tmp_path):
    result = _run(name, "--help", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--smoke" in result.stdout and "--output" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", SCRIPTS)
def test_smoke_run_writes_a_table(name, tmp_path):
    output = tmp_path / f"{name}.md"
    result = _run(name, "--smoke", "--output", str(output), tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    text = output.read_text()
    assert "**Machine.**" in text and "**Method.**" in text
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) >= 3, text  # header, rule, at least one measured row
    assert re.search(r"\| \**\d+\.\d+x", text), text  # a ratio against the anchor, in the table
    assert not list(tmp_path.glob(f".{name}.md.*.tmp"))


@pytest.mark.parametrize("name,args,message", [
    ("evaluation", ["--images", "0"], "--images=0 must be >= 1"),
    ("data_loading", ["--images", "3"], "--images=3 must be at least twice"),
    ("tracking_overhead", ["--iters", "0"], "--iters=0"),
    ("gpu_train_throughput", ["--batch-sizes", "8,x"], "--batch-sizes='8,x'"),
    ("demo_sweep", ["--mixes", "coco,citypersons"], "--mixes='coco,citypersons'"),
    ("demo_sweep", ["--data", "huge"], "--data='huge' is not a variant"),
    ("demo_sweep", ["--seeds", "-1"], "--seeds='-1'"),
    ("auth_throughput", ["--clients", "0"], "--clients=0, --calls=200: both must be >= 1"),
    ("evaluation_correctness", ["--detections-per-image", "-1"], "--detections-per-image=-1 must be >= 0"),
])
def test_bad_input_is_one_line_and_writes_nothing(name, args, message, tmp_path):
    output = tmp_path / "out.md"
    result = _run(name, *args, "--output", str(output), tmp_path=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("persondet: error: ") and message in lines[0], result.stderr
    assert not output.exists()


@pytest.mark.slow
def test_demo_sweep_smoke_run_trains_evaluates_and_times_the_loop(tmp_path):
    output = tmp_path / "demo_sweep.md"
    result = _run("demo_sweep", "--smoke", "--data", "default", "--output", str(output), tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    row = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert row["updates"] == 2 and 0.0 <= row["AP50"] <= 1.0
    assert 0 < row["loop_cpu_s"] < row["train_call_cpu_s"]  # the loop was timed, inside the whole call
    assert "| coco+cuhk | 2 | 0 | 2 |" in output.read_text()


def test_collect_builds_the_document_and_says_what_is_unmeasured(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "evaluation.md").write_text("## Evaluation\n\n| a | b |\n|---|---|\n| 1 | **2.0x** |\n")
    (results / "gpu_train_throughput.md").write_text("## GPU\n\nSmoke run on CPU at a tiny input size\n")
    output = tmp_path / "BENCHMARKS.md"
    result = _run("collect", "--results", str(results), "--output", str(output), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    text = output.read_text()
    assert "| 1 | **2.0x** |" in text
    assert "GPU: not yet measured in this session" in text and "Smoke run" not in text
    assert "run `python bench/tracking_overhead.py`" in text  # no page yet: said plainly


def test_collect_rejects_a_missing_results_folder(tmp_path):
    result = _run("collect", "--results", str(tmp_path / "nope"), "--output", str(tmp_path / "B.md"),
                  tmp_path=tmp_path)
    assert result.returncode == 2 and "--results=" in result.stderr and "is not a directory" in result.stderr
    assert not (tmp_path / "B.md").exists()
