"""The ``main`` entry point: the whole study (prepare, train, evaluate, promote, report) end to end.

Each step is an MLflow project run of this repository's own entry points (``mlflow.projects.run`` with
``env_manager="local"``), so ``main`` is made of the same steps a user runs by hand.  A step re-uses a
FINISHED run with the same entry point, the same parameters, the same input-data digest (tag
``persondet.input_digest``) and the same code version (``mlflow.source.git.commit``) instead of running
again.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from persondet import tracking
from persondet.config import MainConfig
from persondet.errors import PersondetError

REPO_ROOT = Path(__file__).resolve().parents[1]
INPUT_DIGEST_TAG = "persondet.input_digest"
# Demo training on CPU: one short epoch per run so the six trainings of `main` fit in minutes on a
# 2-core machine. At batch 8 and 16 that is only about 24 updates, so the learning rate is raised and
# the warm-up cut (the sweep behind these numbers is in docs/TRAINING.md).
DEMO_TRAIN = {"epochs": "1", "max_iters_per_epoch": "24", "min_size": "256", "max_size": "341",
              "workers": "0", "lr": "0.04", "warmup_iters": "5"}


@dataclass
class StepRecord:
    entry_point: str
    parameters: dict[str, str]
    run_id: str
    reused: bool
    seconds: float


@dataclass
class Study:
    steps: list[StepRecord] = field(default_factory=list)


def git_commit(root: Path = REPO_ROOT) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _hash_files(paths) -> str:
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(str(path).encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def source_digest(root: str, annotation_dirs=("annotations", "annotation")) -> str:
    """Content digest of a dataset root's annotation files plus its image listing (names and sizes)."""
    base = Path(root)
    files = [p for d in annotation_dirs if (base / d).is_dir() for p in (base / d).rglob("*") if p.is_file()]
    h = hashlib.sha256(_hash_files(files).encode())
    for p in sorted(base.rglob("*")):
        if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg", ".png"):
            h.update(f"{p.relative_to(base)}:{p.stat().st_size}".encode())
    return h.hexdigest()[:16]


def declared_parameters(entry_point: str) -> set[str]:
    from mlflow.projects._project_spec import load_project

    return set(load_project(str(REPO_ROOT)).get_entry_point(entry_point).parameters)


class Runner:
    """Runs (or re-uses) one entry point at a time and remembers what it did."""

    def __init__(self, experiment: str, commit: str | None):
        self.experiment = experiment
        self.commit = commit
        self.study = Study()

    def find_finished(self, entry_point: str, parameters: dict[str, str], digest: str,
                      tags: dict[str, str] | None = None):
        """The newest FINISHED run of ``entry_point`` with these parameters, input digest, code version
        and ``tags`` (e.g. launch's server name), or None."""
        filters = [f"tags.`mlflow.project.entryPoint` = '{entry_point}'", "attributes.status = 'FINISHED'",
                   f"tags.`{INPUT_DIGEST_TAG}` = '{digest}'"]
        filters += [f"tags.`{key}` = '{value}'" for key, value in (tags or {}).items()]
        if self.commit:
            filters.append(f"tags.`mlflow.source.git.commit` = '{self.commit}'")
        c = tracking.client()
        experiment = c.get_experiment_by_name(self.experiment)
        if experiment is None:
            return None
        for run in c.search_runs([experiment.experiment_id], " and ".join(filters),
                                 order_by=["attributes.start_time DESC"], max_results=200):
            if all(tracking.same_logged_param(run.data.params.get(k), v) for k, v in parameters.items()):
                return run
        return None

    def step(self, entry_point: str, parameters: dict[str, str], digest: str) -> str:
        import mlflow

        parameters = {k: str(v) for k, v in parameters.items()}
        start = time.time()
        found = self.find_finished(entry_point, parameters, digest)
        if found is not None:
            run_id, reused = found.info.run_id, True
        else:
            print(f"persondet main: running {entry_point} {parameters}", file=sys.stderr, flush=True)
            from mlflow.exceptions import ExecutionException

            try:
                submitted = mlflow.projects.run(str(REPO_ROOT), entry_point=entry_point, parameters=parameters,
                                                experiment_name=self.experiment, env_manager="local",
                                                synchronous=True)
            except ExecutionException as exc:
                raise PersondetError(f"step {entry_point} {parameters} failed ({' '.join(str(exc).split())}); "
                                     "see its output above") from None
            run_id, reused = submitted.run_id, False
            tracking.log_to_other_run(run_id, tags={INPUT_DIGEST_TAG: digest})
        seconds = time.time() - start
        self.study.steps.append(StepRecord(entry_point, parameters, run_id, reused, seconds))
        word = "re-used" if reused else "ran"
        print(f"persondet main: {word} {entry_point} -> run {run_id} ({seconds:.1f} s)", file=sys.stderr, flush=True)
        return run_id


def _is_demo(config: MainConfig) -> bool:
    return not config.coco_root and not config.cuhk_root


def _train_parameters(config: MainConfig, data: str, batch_size: int) -> dict[str, str]:
    import torch

    model = config.model
    if model == "auto":  # resolved here: `mlflow run` logs the given value, train logs the model it built
        model = "fasterrcnn_resnet50_fpn" if torch.cuda.is_available() else "small"
    params = {"data": data, "batch_size": str(batch_size), "model": model}
    settings = dict(DEMO_TRAIN) if _is_demo(config) else {}
    if config.epochs != "auto":
        settings["epochs"] = config.epochs
    if config.max_iters_per_epoch is not None:
        settings["max_iters_per_epoch"] = str(config.max_iters_per_epoch)
    declared = declared_parameters("train")
    for key, value in settings.items():
        # a setting the train entry point does not declare is passed as an extra --flag
        params[key if key in declared else key.replace("_", "-")] = value
    return params


def run_study(config: MainConfig) -> Study:
    """Prepare the mixes, train each at each batch size, evaluate, promote, report; re-using runs."""
    os.environ["MLFLOW_EXPERIMENT_NAME"] = config.experiment
    # `mlflow run ... --env-manager local` starts `python` by name: use this interpreter's environment.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    uri = tracking.ensure_tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        # the steps run in the repository folder: a relative SQLite path must mean the same file there
        uri = "sqlite:///" + os.path.abspath(uri[len("sqlite:///"):])
    os.environ["MLFLOW_TRACKING_URI"] = uri
    import mlflow

    mlflow.set_tracking_uri(uri)  # what mlflow.projects hands to the steps
    runner = Runner(config.experiment, git_commit())
    from persondet.synth import ensure_demo_data

    demo = None
    if _is_demo(config):
        demo = ensure_demo_data(seed=0)
        coco_digest = cuhk_digest = f"demo:{source_digest(str(demo.coco_root))}:{source_digest(str(demo.cuhk_root))}"
    else:
        coco_digest = source_digest(config.coco_root) if config.coco_root else ""
        cuhk_digest = source_digest(config.cuhk_root) if config.cuhk_root else ""

    prepared: dict[str, str] = {}
    for mix in config.mix_list():
        digest = "+".join(d for name, d in (("coco", coco_digest), ("cuhk", cuhk_digest)) if name in mix.split("+"))
        prepared[mix] = runner.step("prepare", {"coco_root": config.coco_root, "cuhk_root": config.cuhk_root,
                                                "mix": mix, "cuhk_split": "all"}, digest)

    trained: list[str] = []
    for mix in config.mix_list():
        for batch_size in config.batch_size_list():
            trained.append(runner.step("train", _train_parameters(config, prepared[mix], batch_size),
                                       f"prepare:{prepared[mix]}"))

    from persondet.evaluation import DEMO_PERSON_CATEGORY, load_test_set

    annotations, images, person = config.test_annotations, config.test_images, "person"
    if not annotations:
        demo = demo or ensure_demo_data(seed=0)
        annotations, images, person = str(demo.inhouse_annotations), str(demo.inhouse_images), DEMO_PERSON_CATEGORY
    test_set = load_test_set(annotations, images, person)
    evaluations = []
    for run_id in trained:
        evaluations.append(runner.step("evaluate", {"model_uri": f"runs:/{run_id}/model",
                                                    "test_annotations": annotations, "test_images": images,
                                                    "person_category": person}, f"test:{test_set.digest}"))

    merged = [m for m in config.mix_list() if {"coco", "cuhk"} <= set(m.split("+"))]
    if merged:
        runner.step("promote", {"metric": "AP50", "test_name": test_set.name},
                    "evaluations:" + hashlib.sha256(",".join(sorted(evaluations)).encode()).hexdigest()[:16])
    inputs = sorted(prepared.values()) + sorted(trained) + sorted(evaluations)
    runner.step("report", {"experiment": config.experiment, "test_name": test_set.name},
                "runs:" + hashlib.sha256(",".join(inputs).encode()).hexdigest()[:16])
    return runner.study


def main(config: MainConfig) -> dict[str, Any]:
    start = time.time()
    with tracking.start_run("main", run_name="main") as run:
        tracking.log_params(config.to_params())
        study = run_study(config)
        seconds = time.time() - start
        ran = [s for s in study.steps if not s.reused]
        tracking.log_metrics({"main_time_s": seconds, "steps_run": len(ran),
                              "steps_reused": len(study.steps) - len(ran)})
        tracking.set_tags({"persondet.step_runs": json.dumps({s.entry_point + str(i): s.run_id
                                                              for i, s in enumerate(study.steps)})[:5000]})
        main_run = run.info.run_id if run is not None else None
    print(f"persondet main: {len(study.steps)} steps, {len(ran)} run, {len(study.steps) - len(ran)} re-used, "
          f"{seconds:.0f} s")
    return {"run_id": main_run, "seconds": seconds, "steps": study.steps}
