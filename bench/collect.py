"""Collect the benchmark result pages (bench/results/<name>.md) into docs/BENCHMARKS.md.

Each page was written by its script with its method, machine and table; this only puts them in one
document, in a fixed order, and says plainly which ones have not been measured yet.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

# (result name, script, what it needs)
ORDER = [
    ("gpu_train_throughput", "bench/gpu_train_throughput.py", "one NVIDIA GPU (H100/H200), about 5 minutes"),
    ("data_loading", "bench/data_loading.py", "CPU"),
    ("evaluation", "bench/evaluation.py", "CPU"),
    ("evaluation_correctness", "bench/evaluation_correctness.py", "CPU + ../shared/data (real CityPersons)"),
    ("tracking_overhead", "bench/tracking_overhead.py", "CPU"),
    ("prepare_scale", "bench/prepare_scale.py", "CPU"),
    ("auth_throughput", "bench/auth_throughput.py", "CPU + PostgreSQL server binaries"),
]

INTRO = """# Benchmarks

Every hot path of the platform has a script under `bench/` that measures it against an anchor **in the
same run** (so a slow or busy machine changes both sides) and writes its page to `bench/results/`.
This document is rebuilt from those pages by `python bench/collect.py`.
Run any script from the project's environment (`.venv/bin/python bench/<name>.py --help`); `--smoke`
runs it at toy size to prove it works (tests/test_bench_smoke.py does that in CI).

| benchmark | script | needs | anchor |
|---|---|---|---|
| GPU training throughput | `bench/gpu_train_throughput.py` | one NVIDIA GPU | plain fp32 loop in the style of torchvision's detection reference recipe |
| Data loading | `bench/data_loading.py` | CPU | the reference recipe's CPU input work (PIL decode, float conversion, flip) |
| Evaluation | `bench/evaluation.py` | CPU | pycocotools COCOeval |
| Evaluation correctness | `bench/evaluation_correctness.py` | CPU + ../shared/data | `evaluate` before: padded batches, ignore as persons, pycocotools |
| Tracking overhead | `bench/tracking_overhead.py` | CPU + a local `mlflow server` | the same training loop with logging off |
| Prepare at full scale | `bench/prepare_scale.py` | CPU | see its page |
| Authenticated throughput | `bench/auth_throughput.py` | CPU + PostgreSQL binaries | the same server without MLflow's credential cache |
"""


def build(results: Path) -> str:
    parts = [INTRO]
    for name, script, needs in ORDER:
        page = results / f"{name}.md"
        text = page.read_text().strip() if page.is_file() else ""
        if name == "gpu_train_throughput" and (not text or "Smoke run" in text):
            parts.append("## GPU training throughput\n\n**Not yet measured.** GPU: not yet measured in this "
                         "session (no device lent); run `python bench/gpu_train_throughput.py` on a GPU "
                         "machine (one H100 or H200; about 5 minutes), then `python bench/collect.py`. "
                         "Goals: persondet's `train` at least 2x the reference-style loop, and at least "
                         "100 images/s per H100 at batch 16. Until it is measured, the data-loading "
                         "worker counts below are sized for the goal of 100 images/s.\n")
            continue
        if not text:
            parts.append(f"## {name.replace('_', ' ').capitalize()}\n\n**Not yet measured**: run "
                         f"`python {script}` ({needs}), then `python bench/collect.py`.\n")
            continue
        parts.append(text + "\n")
    return "\n".join(parts)


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="bench/collect.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=_common.RESULTS, help="default: bench/results")
    parser.add_argument("--output", type=Path, default=_common.ROOT / "docs" / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    if not args.results.is_dir():
        from persondet.errors import PersondetError

        raise PersondetError(f"--results={str(args.results)!r} is not a directory")
    _common.write_text_atomic(args.output, build(args.results))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    _common.run(main)
