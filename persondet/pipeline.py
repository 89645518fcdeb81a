"""The ``main`` entry point: the whole study (prepare, train, evaluate, promote, report) end to end.

Each step is an MLflow project run of this repository's own entry points (``mlflow.projects.run`` with
``env_manager="local"``, behind ``tracking.projects.run_project``), so ``main`` is made of the same steps a
user runs by hand, and steps hand their results forward as run ids and logged artifacts (docs/ARCHITECTURE.md).  A step re-uses a
FINISHED run with the same entry point, the same parameters, the same input-data digest (tag
``persondet.input_digest``) and the same code version (``mlflow.source.git.commit``) instead of running
again.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from persondet.config import MainConfig
from persondet.datasets import SOURCES, is_merged, mix_sources
from persondet.errors import PersondetError
from persondet.model_names import resolve_model
from persondet.tracking import RunHandle, open_run, run_name
from persondet.tracking.projects import export_step_environment, run_project
from persondet.tracking.search import find_finished

REPO_ROOT = Path(__file__).resolve().parents[1]
INPUT_DIGEST_TAG = "persondet.input_digest"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Demo training on CPU (the sweep behind these numbers: docs/TRAINING.md, "The demo trainings of main"):
# every demo training sees the same 6 x 160 images (160: the smallest demo mix), so batch 8 makes 120
# updates and batch 16 makes 60, at 160 px: about a minute each on a 2-core machine.
DEMO_IMAGES_PER_EPOCH = 160
DEMO_TRAIN = {"epochs": "6", "min_size": "160", "max_size": "213", "workers": "0", "lr": "0.04",
              "warmup_iters": "10"}


def demo_train_settings(batch_size: int) -> dict[str, str]:
    """The settings of a demo training at ``batch_size``: DEMO_TRAIN, with epochs of DEMO_IMAGES_PER_EPOCH
    images (at least one iteration)."""
    return {**DEMO_TRAIN, "max_iters_per_epoch": str(max(1, DEMO_IMAGES_PER_EPOCH // batch_size))}


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
    test_name: str = ""

    def run_ids(self, entry_point: str) -> list[str]:
        return [s.run_id for s in self.steps if s.entry_point == entry_point]


def git_commit(root: Path = REPO_ROOT) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def root_digest(root: str | Path) -> str:
    """A source root's digest for re-using ``prepare`` runs: the content of its annotation files (every
    file that is not an image) and the names and sizes of its images (not their bytes: a cheap listing)."""
    base = Path(root)
    h = hashlib.sha256()
    for path in sorted(p for p in base.rglob("*") if p.is_file()):
        name = str(path.relative_to(base))
        if path.suffix.lower() in IMAGE_SUFFIXES:
            h.update(f"{name}:{path.stat().st_size}".encode())
            continue
        h.update(f"{name}:".encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def declared_parameters(entry_point: str) -> set[str]:
    """The parameters the MLproject file declares for ``entry_point``."""
    import yaml

    project = yaml.safe_load((REPO_ROOT / "MLproject").read_text())
    return set(project["entry_points"][entry_point].get("parameters") or {})


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
        tags = {"mlflow.project.entryPoint": entry_point, INPUT_DIGEST_TAG: digest, **(tags or {})}
        if self.commit:
            tags["mlflow.source.git.commit"] = self.commit
        return find_finished(self.experiment, tags, parameters)

    def step(self, entry_point: str, parameters: dict[str, str], digest: str) -> str:
        """The run id of ``entry_point`` with ``parameters`` on inputs ``digest``: re-used, or run now."""
        parameters = {k: str(v) for k, v in parameters.items()}
        start = time.time()
        found = self.find_finished(entry_point, parameters, digest)
        if found is not None:
            run_id, reused = found.info.run_id, True
        else:
            print(f"persondet main: running {entry_point} {parameters}", file=sys.stderr, flush=True)
            run_id, reused = run_project(REPO_ROOT, entry_point, parameters, self.experiment), False
            RunHandle(run_id).set_tags({INPUT_DIGEST_TAG: digest})
        seconds = time.time() - start
        self.study.steps.append(StepRecord(entry_point, parameters, run_id, reused, seconds))
        word = "re-used" if reused else "ran"
        print(f"persondet main: {word} {entry_point} -> run {run_id} ({seconds:.1f} s)", file=sys.stderr, flush=True)
        return run_id


def _is_demo(config: MainConfig) -> bool:
    """No source root given: the study runs on the built-in demo data."""
    return not any(getattr(config, source.root_param, "") for source in SOURCES.values())


@dataclass
class CheckedInputs:
    """What ``check_study`` found: the test set, evaluate's test parameters, the model and backbone
    initialisation every training gets (resolved), and the device."""

    test_set: Any
    test_parameters: dict[str, str]
    model: str
    weights_backbone: str
    device: str


def _train_settings(config: MainConfig, checked: CheckedInputs, data: str, batch_size: int) -> dict[str, str]:
    """The train settings of one training (config field names): the resolved model and backbone
    initialisation (`mlflow run` logs what it is given: the resolved values are what users compare), the
    study's settings, and on demo data the demo trainings' (DEMO_TRAIN) where the study leaves them auto."""
    settings = {"data": data, "batch_size": str(batch_size), "model": checked.model,
                "weights_backbone": checked.weights_backbone, "device": config.device, "amp": config.amp,
                "nproc": str(config.nproc)}
    if config.init:
        settings["init"] = config.init
    settings.update(demo_train_settings(batch_size) if _is_demo(config) else {})
    for name in ("epochs", "max_iters_per_epoch", "min_size", "max_size", "workers"):
        if getattr(config, name) is not None:
            settings[name] = str(getattr(config, name))
    return settings


def _project_parameters(entry_point: str, settings: dict[str, str]) -> dict[str, str]:
    """Settings as `mlflow run` parameters: one the entry point does not declare is passed as a --flag."""
    declared = declared_parameters(entry_point)
    return {key if key in declared else key.replace("_", "-"): value for key, value in settings.items()}


def _test_set(config: MainConfig):
    """The test set every model is evaluated on (the demo in-house set by default), read and checked once
    here; its images are not hashed (``evaluate`` hashes them), its cheap listing digest keys re-use."""
    from persondet.evaluation import DEMO_PERSON_CATEGORY, load_test_set

    annotations, images, person = config.test_annotations, config.test_images, config.person_category
    if not annotations:
        from persondet.synth import ensure_demo_data

        demo = ensure_demo_data(seed=0)
        annotations, images = str(demo.inhouse_annotations), str(demo.inhouse_images)
        if person == "person":  # the demo in-house set names its person category "pedestrian"
            person = DEMO_PERSON_CATEGORY
    return load_test_set(annotations, images, person, digest=False), {
        "test_annotations": annotations, "test_images": images, "person_category": person}


def check_study(config: MainConfig) -> CheckedInputs:
    """Every input of the study, checked in seconds before its first step (not after hours of training):
    the source roots hold their layouts (``Source.check_root``), the test set (annotation file, every image,
    its person category), the device, the model (``init``'s, with model auto), the backbone weights
    (downloaded into torch's hub cache now when missing) or ``init``, and each training's settings as
    ``train`` will check them.  The first problem is one PersondetError line."""
    from persondet.config import PrepareConfig, TrainConfig
    from persondet.distributed import device_for

    prepare_settings = PrepareConfig(**{s.root_param: getattr(config, s.root_param) for s in SOURCES.values()
                                        if hasattr(config, s.root_param)}, cuhk_split="all")
    for name, given in given_roots(config).items():  # a mistyped root: before any demo data is written
        if given:
            SOURCES[name].check_root(Path(given).expanduser().resolve(), prepare_settings)
    test_set, test_parameters = _test_set(config)
    device = device_for(config.device)
    model = resolve_model(config.model, cuda=device.type == "cuda")
    weights_backbone = config.weights_backbone
    if config.init:
        from persondet.tracking.models import describe_detector

        trained_as = describe_detector(config.init).get("model")
        if trained_as and config.model not in ("auto", trained_as):
            raise PersondetError(f"init={config.init!r} is a model={trained_as}: set model={trained_as} (or auto)")
        model = trained_as or model
    else:
        from persondet.model import check_backbone

        weights_backbone = check_backbone(model, config.weights_backbone)
    checked = CheckedInputs(test_set, test_parameters, model, weights_backbone, config.device)
    for batch_size in config.batch_size_list():
        TrainConfig.from_strings(_train_settings(config, checked, "<prepare run>", batch_size))
    return checked


def _digest(values) -> str:
    return hashlib.sha256(",".join(values).encode()).hexdigest()[:16]


def given_roots(config: MainConfig) -> dict[str, str]:
    """{source: root given ('' for the demo copy)} for every source the mixes name, in the registry's order;
    a root given that is not a directory is an error."""
    names = list(dict.fromkeys(name for mix in config.mix_list() for name in mix_sources(mix)))
    given = {name: getattr(config, SOURCES[name].root_param, "") for name in names}
    for name, root in given.items():
        if root and not Path(root).is_dir():
            raise PersondetError(f"{SOURCES[name].root_param}={root!r}: no such directory (the {name} root, "
                                 f"named by mixes={config.text('mixes')!r})")
    return given


def source_digests(config: MainConfig) -> dict[str, str]:
    """{source: root digest} for every source the mixes name: the root given, else the demo copy."""
    return {name: root_digest(root or SOURCES[name].demo_root(0)) for name, root in given_roots(config).items()}


def run_study(config: MainConfig, runner: Runner, checked: CheckedInputs | None = None) -> Study:
    """Prepare the mixes, train each at each batch size, evaluate, promote, report; re-using runs.

    What flows between the steps: run ids as parameters (a prepare run is train's ``data``, a training
    run's model is evaluate's ``runs:/<id>/model``); evaluate writes ``<test_name>/...`` metrics and the
    ``<test_name>/evaluation_run_id`` tag to each training run, which promote and report read.  Each step
    is keyed on its inputs: the sources' root digests, the prepare run, the test set's listing digest, the
    evaluation runs, and all of them for the report.
    """
    digests = source_digests(config)  # the data prepare reads
    checked = checked or check_study(config)
    test_set = checked.test_set
    runner.study.test_name = test_set.name
    root_settings = {s.root_param: getattr(config, s.root_param) for s in SOURCES.values()
                     if hasattr(config, s.root_param)}
    prepared: dict[str, str] = {}
    for mix in config.mix_list():
        prepared[mix] = runner.step("prepare", {**root_settings, "mix": mix, "cuhk_split": "all"},
                                    "+".join(digests[name] for name in mix_sources(mix)))

    trained: list[str] = []
    for mix in config.mix_list():
        for batch_size in config.batch_size_list():
            settings = _train_settings(config, checked, prepared[mix], batch_size)
            trained.append(runner.step("train", _project_parameters("train", settings), f"prepare:{prepared[mix]}"))

    evaluate_settings = {**checked.test_parameters, "device": config.device}
    workers = _train_settings(config, checked, "", 1).get("workers")
    if workers is not None:  # the study's (or the demo's) setting: evaluation decodes with as many
        evaluate_settings["workers"] = workers
    evaluations = [runner.step("evaluate", _project_parameters("evaluate", {"model_uri": f"runs:/{run_id}/model",
                                                                          **evaluate_settings}),
                               f"test:{test_set.listing_digest}") for run_id in trained]

    if any(is_merged(mix) for mix in config.mix_list()):
        runner.step("promote", {"metric": "AP50", "test_name": test_set.name},
                    "evaluations:" + _digest(sorted(evaluations)))
    inputs = sorted(prepared.values()) + sorted(trained) + sorted(evaluations)
    runner.step("report", {"experiment": config.experiment, "test_name": test_set.name}, "runs:" + _digest(inputs))
    return runner.study


def main(config: MainConfig) -> dict[str, Any]:
    """The whole study in ``config.experiment``, each step a child run of this ``main`` run."""
    start = time.time()
    checked = check_study(config)  # before any run: a bad input is one line in seconds
    export_step_environment(config.experiment)
    with open_run("main", run_name=run_name("main")) as run:
        run.log_params(config.to_params())
        study = run_study(config, Runner(config.experiment, git_commit()), checked)
        seconds = time.time() - start
        ran = [s for s in study.steps if not s.reused]
        run.log_metrics({"main_time_s": seconds, "steps_run": len(ran), "steps_reused": len(study.steps) - len(ran)})
        run.set_tags({"persondet.step_runs": json.dumps({s.entry_point + str(i): s.run_id
                                                         for i, s in enumerate(study.steps)})[:5000]})
    print(f"persondet main: {len(study.steps)} steps, {len(ran)} run, {len(study.steps) - len(ran)} re-used, "
          f"{seconds:.0f} s")
    summary = _summary(study)
    print(summary)
    return {"run_id": run.run_id, "seconds": seconds, "steps": study.steps, "summary": summary}


def _summary(study: Study) -> str:
    """What the study produced (``summary.study_summary``) from its step runs."""
    from persondet.summary import study_summary
    from persondet.tracking.search import get_run

    def last(entry_point: str):
        ids = study.run_ids(entry_point)
        return get_run(ids[-1]) if ids else None

    train_runs = [run for run in map(get_run, study.run_ids("train")) if run is not None]
    return study_summary(train_runs, study.test_name, last("promote"), last("report"))
