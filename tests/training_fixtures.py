"""Tiny generated training data for the training tests: JPEGs with bright boxes, a prepared COCO file."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from PIL import Image, ImageDraw


def make_prepared_set(root: Path, images: int = 8, seed: int = 0, sources=("coco", "cuhk")) -> Path:
    """A prepared-set json (with the "persondet" key and two source roots); returns its path."""
    rng = random.Random(seed)
    roots = {s: root / f"{s}_root" for s in sources}
    doc = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "person"}],
           "persondet": {"mix": "+".join(sources), "roots": {s: str(p) for s, p in roots.items()},
                         "cuhk_split": "all", "digest": "test"}}
    for i in range(1, images + 1):
        source = sources[i % len(sources)]
        w, h = (96, 72) if i % 3 else (72, 96)  # some portrait images
        img = Image.new("L" if i == 1 else "RGB", (w, h), 30)  # image 1 is grayscale
        draw = ImageDraw.Draw(img)
        bw, bh = rng.randint(10, 20), rng.randint(20, 35)
        x, y = rng.randint(0, w - bw - 1), rng.randint(0, h - bh - 1)
        draw.rectangle([x, y, x + bw, y + bh], fill=230 if i == 1 else (230, 200, 40))
        name = f"img/{i:03d}.jpg"
        path = roots[source] / name
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, quality=95)
        doc["images"].append({"id": i, "file_name": f"{source}/{name}", "width": w, "height": h,
                              "source": source, "original_file_name": name})
        if i != 2:  # image 2 has no person
            doc["annotations"].append({"id": len(doc["annotations"]) + 1, "image_id": i, "category_id": 1,
                                       "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": 0,
                                       "person_id": -1, "ishard": 0})
        if i == 3:  # a crowd region: never a training box
            doc["annotations"].append({"id": len(doc["annotations"]) + 1, "image_id": i, "category_id": 1,
                                       "bbox": [0, 0, 30, 30], "area": 900, "iscrowd": 1,
                                       "person_id": -1, "ishard": 0})
    out = root / "train.json"
    out.write_text(json.dumps(doc))
    return out


# --- trainings in subprocesses, logging to a SQLite store in ``tmp_path`` ---------------------------------
ROOT = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = ROOT / "entrypoints" / "train.py"
TINY_ARGS = ["--batch-size", "2", "--workers", "0", "--min-size", "96", "--max-size", "128", "--register", "false"]


def subprocess_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This environment without MLflow settings, logging to ``tmp_path/mlflow.db``, one thread."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update({"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "OMP_NUM_THREADS": "1",
                "PYTHONPATH": str(ROOT)}, **extra)
    return env


def store_client(tmp_path: Path):
    """A client of ``tmp_path/mlflow.db``, opened as persondet opens it (waiting while a training that
    runs beside the test creates the tables)."""
    from mlflow import MlflowClient

    from persondet.tracking.store import open_sqlite_store

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    open_sqlite_store(uri)
    return MlflowClient(uri)


def store_runs(tmp_path: Path) -> list:
    """Every run of the ``persondet`` experiment in ``tmp_path/mlflow.db``."""
    client = store_client(tmp_path)
    experiment = client.get_experiment_by_name("persondet")
    return client.search_runs([experiment.experiment_id]) if experiment else []


def wait_until(condition, timeout_s: float, what: str, process=None, every_s: float = 0.2):
    """``condition()``'s first truthy value within ``timeout_s``; fails naming ``what`` on a timeout, or when
    ``process`` ends first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{what}: the process ended with {process.returncode} first")
        time.sleep(every_s)
    raise AssertionError(f"{what}: not within {timeout_s} s")
