"""Shared plumbing for the benchmark scripts: machine description, CPU load, atomic markdown output.

Every script reports its result as a ratio against an anchor measured in the same run, so the numbers
of one run can be compared even on a loaded or slow machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def cpu_model() -> str:
    """lscpu's "Model name" (falls back to /proc/cpuinfo, then platform)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    """One line: CPU model, cores, memory, GPU if any, torch version."""
    parts = [f"{cores()}-core CPU ({cpu_model()})"]
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        parts.append(f"{pages * page_size / 2**30:.0f} GiB RAM")
    except (ValueError, OSError):
        pass
    try:
        import torch

        if torch.cuda.is_available():
            parts.append(f"GPU {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}")
        else:
            parts.append("no GPU")
        parts.append(f"torch {torch.__version__}")
    except ImportError:
        pass
    parts.append(f"Python {platform.python_version()}")
    return ", ".join(parts)


def cores() -> int:
    """The CPU cores this process may run on (its affinity where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def load_average() -> str:
    try:
        one, five, _ = os.getloadavg()
        return f"{one:.2f} (1 min), {five:.2f} (5 min)"
    except OSError:
        return "unknown"


def _busy_note() -> str:
    """A warning when other processes competed for the CPUs during the run."""
    try:
        five = os.getloadavg()[1]
    except OSError:
        return ""
    if five <= cores():
        return ""
    return (f"**Busy machine**: the 5-minute load average ({five:.1f}) exceeded the {cores()} cores, so other "
            "processes took CPU time during this run: absolute rates are lower than on an idle machine, "
            "while the ratios compare sides measured under the same load.")


class Timer:
    """Wall-clock seconds of a ``with`` block (``perf_counter``)."""

    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_result(path: Path, title: str, method: str, table: str, notes: str = "",
                 load_before: str = "") -> Path:
    """Write the result page (title, method, machine, load, table, notes) atomically to ``path``."""
    body = [f"## {title}", "", f"**Method.** {method}", "",
            f"**Machine.** {machine()}", "",
            f"**CPU load average** before the run: {load_before or '?'}; after: {load_average()}.", "",
            f"**Measured** {time.strftime('%Y-%m-%d %H:%M %Z')} with `{' '.join([Path(sys.argv[0]).name] + sys.argv[1:])}`.",
            "", table, ""]
    if notes:
        body += [notes, ""]
    busy = _busy_note()
    if busy:
        body += [busy, ""]
    return write_text_atomic(path, "\n".join(body))


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary sibling and a rename: never a half-written page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def base_parser(name: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"bench/{name}.py", description=description)
    parser.add_argument("--output", type=Path, default=RESULTS / f"{name}.md",
                        help=f"markdown result file (default: bench/results/{name}.md)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes and few iterations: proves the script works, measures nothing")
    return parser


def run(main: Callable[[Sequence[str] | None], object]) -> None:
    """Entry: PersondetError -> one line on stderr, exit 2 (persondet.cli.run_cli)."""
    sys.path.insert(0, str(ROOT))
    from persondet.cli import run_cli

    sys.exit(run_cli(main))


def write_jpeg_set(directory: Path, n_images: int, sizes: Sequence[tuple[int, int]], seed: int = 0,
                   persons_per_image: int = 6) -> Path:
    """Write ``n_images`` photo-like JPEGs (smooth colour fields plus grain, quality 90, so their file size
    and decode cost resemble real photos rather than pure noise) with person boxes, and a plain COCO json
    (image paths relative to it).  ``sizes`` are (width, height) choices.  Returns the json path."""
    import json

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    directory = Path(directory)
    (directory / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id in range(1, n_images + 1):
        width, height = sizes[int(rng.integers(len(sizes)))]
        coarse = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.int16)
        grain = rng.integers(-12, 13, (height, width, 3), dtype=np.int16)
        name = f"images/{image_id:06d}.jpg"
        Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8)).save(directory / name, quality=90)
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        for _ in range(persons_per_image):
            w = float(rng.uniform(0.03, 0.25) * width)
            h = min(w * float(rng.uniform(1.5, 3.0)), height - 2.0)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                "bbox": [float(rng.uniform(0, width - w)), float(rng.uniform(0, height - h)), w, h],
                                "area": w * h, "iscrowd": 0})
    path = directory / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "person"}]}))
    return path


class ReferenceStyleDataset:
    """The anchor: what the torchvision detection reference recipe does on CPU per image (PIL decode,
    conversion to a float [0, 1] tensor, random horizontal flip), on the same files and boxes."""

    def __init__(self, persons) -> None:
        self.persons = persons

    def __len__(self) -> int:
        return len(self.persons)

    def __getitem__(self, index: int):
        import random

        import torch
        from PIL import Image
        from torchvision.transforms import functional as F

        with Image.open(self.persons.path(index)) as img:
            image = F.convert_image_dtype(F.pil_to_tensor(img.convert("RGB")), torch.float32)
        boxes = torch.tensor(self.persons.boxes[index], dtype=torch.float32).reshape(-1, 4)
        if random.random() < 0.5:
            width = image.shape[-1]
            image = image.flip(-1)
            boxes = boxes[:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + torch.tensor([width, 0, width, 0])
        return image, {"boxes": boxes, "labels": torch.ones(len(boxes), dtype=torch.int64)}
