"""Benchmark: the demo trainings of ``main`` (mix x batch size) at one recipe: AP50 against CPU cost.

Each combination is prepared, trained and evaluated through the library (``persondet.prepare.prepare``,
``persondet.training.train``, ``persondet.evaluation.evaluate``) in this process, against a temporary
SQLite tracking store, on the demo data or a variant of it (written by ``persondet.synth``'s writers, so
in the real on-disk formats) and scored on that data's in-house set.  Besides AP50 it reports the
training loop's wall-clock seconds (``train_time_s``) and the process CPU seconds of the loop, of the
whole ``train`` call and of ``evaluate``.  On a shared machine the CPU seconds of a one-thread run
(``--threads 1``) stay close to what the work costs, while wall-clock seconds grow with the load;
docs/TRAINING.md converts them into idle-machine seconds with a measured factor.

The defaults are the demo recipe of issue 11 (docs/TRAINING.md, "The demo trainings of main").
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

NAME = "demo_sweep"
MIXES = ("coco", "cuhk", "coco+cuhk")

# Demo-data variants: keyword arguments for synth.write_coco / write_cuhk / write_inhouse ("default" is
# the built-in demo tree itself, whatever synth's defaults are at the time).
VARIANTS: dict[str, dict[str, dict]] = {
    "default": {},
    # COCO persons over the in-house set's sizes too (synth drew 0.35-0.85 of the image height)
    "coco-wide": {"coco": {"person_height": (0.2, 0.8)}},
    # ... and CUHK-SYSU persons up to the in-house set's largest (synth draws 0.2-0.45)
    "both-wide": {"coco": {"person_height": (0.2, 0.8)}, "cuhk": {"person_height": (0.2, 0.6)}},
}


@dataclass(frozen=True)
class Recipe:
    """What ``main`` passes to each demo training, plus the small model's sampling sizes."""

    lr: float
    warmup_iters: int
    epochs: int
    iters: int | None  # max_iters_per_epoch; 0: the demo's (160 images an epoch, 160 // batch size)
    min_size: int
    max_size: int
    box_batch: int | None  # proposals sampled per image for the box head (None: as the model builds it)
    rpn_post_nms: int | None  # proposals kept per image in training (None: as the model builds it)

    def train_strings(self, batch_size: int) -> dict[str, str]:
        from persondet.pipeline import demo_train_settings

        iters = demo_train_settings(batch_size)["max_iters_per_epoch"] if self.iters == 0 else self.iters
        return {"epochs": str(self.epochs), "lr": str(self.lr), "warmup_iters": str(self.warmup_iters),
                "max_iters_per_epoch": "none" if iters is None else str(iters),
                "min_size": str(self.min_size), "max_size": str(self.max_size), "workers": "0"}


def _iters_text(iters: int | None) -> str:
    return "none" if iters is None else "the demo's (160 // batch size)" if iters == 0 else str(iters)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def demo_tree(variant: str, seed: int, home: Path):
    """The demo data of ``variant`` for ``seed``, written once under ``home``; a ``synth.DemoData``."""
    from persondet import synth

    if variant == "default":
        return synth.ensure_demo_data(seed=seed, root=home)
    target = home / f"sweep-{variant}-seed{seed}"
    if not (target / "complete").is_file():
        kwargs = VARIANTS[variant]
        synth.write_coco(target / "coco", seed=seed, **kwargs.get("coco", {}))
        synth.write_cuhk(target / "cuhk", seed=seed, **kwargs.get("cuhk", {}))
        synth.write_inhouse(target / "inhouse", seed=seed, **kwargs.get("inhouse", {}))
        (target / "complete").write_text(json.dumps(kwargs) + "\n")
    return synth.DemoData(coco_root=target / "coco", cuhk_root=target / "cuhk",
                          inhouse_annotations=target / "inhouse" / "annotations.json",
                          inhouse_images=target / "inhouse" / "images")


class Instrument:
    """Times ``engine.train_one_epoch`` (CPU and wall) and sets the small model's sampling sizes."""

    def __init__(self) -> None:
        self.loop_cpu = self.loop_wall = 0.0
        self.box_batch: int | None = None
        self.rpn_post_nms: int | None = None

    def install(self) -> None:
        from persondet import engine
        from persondet.training import build as training_build  # where the training builds its detector

        train_one_epoch, build_detector = engine.train_one_epoch, training_build.build_detector

        def timed_epoch(*args, **kwargs):
            cpu, wall = cpu_seconds(), time.perf_counter()
            try:
                return train_one_epoch(*args, **kwargs)
            finally:
                self.loop_cpu += cpu_seconds() - cpu
                self.loop_wall += time.perf_counter() - wall

        def build(name, *args, **kwargs):
            detector = build_detector(name, *args, **kwargs)
            if self.box_batch:
                detector.roi_heads.fg_bg_sampler.batch_size_per_image = self.box_batch
            if self.rpn_post_nms:
                detector.rpn._post_nms_top_n["training"] = self.rpn_post_nms
            return detector

        engine.train_one_epoch, training_build.build_detector = timed_epoch, build


def run_one(mix: str, batch_size: int, seed: int, recipe: Recipe, prepared: str, data, inst: Instrument) -> dict:
    """Train and evaluate one combination; the row of the results table."""
    import mlflow
    import torch

    from persondet.config import EvaluateConfig, TrainConfig
    from persondet.errors import PersondetError
    from persondet.evaluation import evaluate
    from persondet.training import train

    inst.loop_cpu = inst.loop_wall = 0.0
    inst.box_batch, inst.rpn_post_nms = recipe.box_batch, recipe.rpn_post_nms
    load = os.getloadavg()[0]
    cpu = cpu_seconds()
    metrics = train(TrainConfig.from_strings({
        "data": prepared, "model": "small", "batch_size": str(batch_size), "seed": str(seed),
        "register": "false", **recipe.train_strings(batch_size)}))
    train_cpu = cpu_seconds() - cpu
    if inst.loop_wall <= 0:  # persondet.training no longer calls engine.train_one_epoch: fix Instrument
        raise PersondetError("bench/demo_sweep.py: the training loop was not timed (engine.train_one_epoch "
                             "not called through the module); the CPU numbers would be wrong")
    run = mlflow.last_active_run()
    updates = int(run.data.params["iters_per_epoch"]) * recipe.epochs
    cpu = cpu_seconds()
    result = evaluate(EvaluateConfig(model_uri=f"runs:/{run.info.run_id}/model",
                                     test_annotations=str(data.inhouse_annotations),
                                     test_images=str(data.inhouse_images), person_category="pedestrian"))
    eval_cpu = cpu_seconds() - cpu
    return {"mix": mix, "batch_size": batch_size, "seed": seed, **asdict(recipe), "updates": updates,
            "AP50": result["metrics"]["AP50"], "AR100": result["metrics"]["AR100"],
            "train_time_s": metrics["train_time_s"], "loop_cpu_s": inst.loop_cpu, "train_call_cpu_s": train_cpu,
            "eval_cpu_s": eval_cpu, "load": (load + os.getloadavg()[0]) / 2, "threads": torch.get_num_threads()}


def _ints(text: str, flag: str, least: int) -> list[int]:
    from persondet.errors import PersondetError

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < least:
        raise PersondetError(f"{flag}={text!r} must be a comma-separated list of integers >= {least}")
    return values


def parse(argv) -> tuple:
    """(args, mixes, batch sizes, seeds, recipe); bad values raise PersondetError before any work."""
    from persondet.errors import PersondetError

    parser = _common.base_parser(NAME, __doc__.split("\n\n")[0])
    parser.add_argument("--mixes", default=",".join(MIXES), help="comma-separated dataset mixes")
    parser.add_argument("--batch-sizes", default="8,16", help="comma-separated global batch sizes")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument("--data", default="default", help=f"demo-data variant: {', '.join(VARIANTS)}")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the demo data")
    parser.add_argument("--lr", type=float, default=0.04)
    parser.add_argument("--warmup-iters", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--iters", type=int, default=0, help="max_iters_per_epoch (0: the demo's, 160 images an "
                        "epoch; -1: whole epochs)")
    parser.add_argument("--min-size", type=int, default=160)
    parser.add_argument("--max-size", type=int, default=213)
    parser.add_argument("--box-batch", type=int, default=0,
                        help="proposals sampled per image for the box head (0: as the model builds it)")
    parser.add_argument("--rpn-post-nms", type=int, default=0,
                        help="RPN proposals kept per image in training (0: as the model builds it)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (1: CPU seconds "
                        "that hold on a loaded machine)")
    parser.add_argument("--log", type=Path, default=None, help="also append each result as a JSON line here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.mixes, args.batch_sizes, args.seeds = "coco+cuhk", "2", "0"
        args.epochs, args.iters, args.min_size, args.max_size = 1, 2, 96, 128
    if args.data not in VARIANTS:
        raise PersondetError(f"--data={args.data!r} is not a variant of the demo data ({', '.join(VARIANTS)})")
    mixes = [m.strip() for m in args.mixes.split(",") if m.strip()]
    if not mixes or any(m not in MIXES for m in mixes):
        raise PersondetError(f"--mixes={args.mixes!r}: each must be one of {', '.join(MIXES)}")
    batch_sizes, seeds = _ints(args.batch_sizes, "--batch-sizes", 1), _ints(args.seeds, "--seeds", 0)
    for flag in ("lr", "epochs", "min_size", "max_size", "threads"):
        if not getattr(args, flag) > 0:
            raise PersondetError(f"--{flag.replace('_', '-')}={getattr(args, flag)} must be > 0")
    if args.iters < -1:
        raise PersondetError(f"--iters={args.iters} must be >= -1")
    for flag in ("warmup_iters", "box_batch", "rpn_post_nms"):
        if getattr(args, flag) < 0:
            raise PersondetError(f"--{flag.replace('_', '-')}={getattr(args, flag)} must be >= 0")
    recipe = Recipe(args.lr, args.warmup_iters, args.epochs, None if args.iters == -1 else args.iters,
                    args.min_size, args.max_size,
                    args.box_batch or None, args.rpn_post_nms or None)
    return args, mixes, batch_sizes, seeds, recipe


def main(argv=None) -> None:
    args, mixes, batch_sizes, seeds, recipe = parse(argv)
    import torch

    from persondet.config import PrepareConfig
    from persondet.prepare import prepare

    torch.set_num_threads(args.threads)
    load_before = _common.load_average()
    home = Path(os.environ.get("PERSONDET_DEMO_HOME") or Path.home() / ".cache" / "persondet" / "demo")
    data = demo_tree(args.data, args.data_seed, home)
    inst = Instrument()
    inst.install()
    rows = []
    with tempfile.TemporaryDirectory(prefix="persondet-demo-sweep-") as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        os.environ["MLFLOW_EXPERIMENT_NAME"] = "demo-sweep"
        os.environ.pop("MLFLOW_RUN_ID", None)
        cwd = os.getcwd()
        os.chdir(tmp)  # the store's artifacts (./mlruns) go to the temporary folder too
        try:
            for mix in mixes:
                cpu = cpu_seconds()
                prepared = prepare(PrepareConfig(mix=mix, coco_root=str(data.coco_root),
                                                 cuhk_root=str(data.cuhk_root)))
                prepare_cpu = cpu_seconds() - cpu
                images = prepared.stats["merged"]["images"]
                print(f"prepared {mix}: {images} images, {prepare_cpu:.1f} CPU s", flush=True)
                for batch_size, seed in itertools.product(batch_sizes, seeds):
                    row = run_one(mix, batch_size, seed, recipe, prepared.run_id, data, inst)
                    row.update(data=args.data, data_seed=args.data_seed, train_images=images,
                               prepare_cpu_s=prepare_cpu)
                    rows.append(row)
                    print("RESULT " + json.dumps(row), flush=True)
                    if args.log:
                        with open(args.log, "a") as f:
                            f.write(json.dumps(row) + "\n")
        finally:
            os.chdir(cwd)
    table = _common.markdown_table(
        ["mix", "batch", "seed", "updates", "AP50", "loop CPU s", "train_time_s (wall)", "train call CPU s",
         "evaluate CPU s", "load"],
        [[r["mix"], r["batch_size"], r["seed"], r["updates"], f"{r['AP50']:.3f}", f"{r['loop_cpu_s']:.1f}",
          f"{r['train_time_s']:.1f}", f"{r['train_call_cpu_s']:.1f}", f"{r['eval_cpu_s']:.1f}",
          f"{r['load']:.1f}"] for r in rows])
    print(table)
    method = (f"data `{args.data}` (seed {args.data_seed}); lr {recipe.lr}, warmup_iters {recipe.warmup_iters}, "
              f"epochs {recipe.epochs}, max_iters_per_epoch {_iters_text(recipe.iters)}, min_size {recipe.min_size}, "
              f"max_size {recipe.max_size}, box-head proposals per image {recipe.box_batch or 'as built'}, RPN "
              f"post-NMS proposals in training {recipe.rpn_post_nms or 'as built'}; {args.threads} torch "
              "thread(s), workers 0; prepare, train and evaluate called in one process against a temporary "
              "SQLite store; CPU seconds from getrusage (user + system) of this process.")
    _common.write_result(args.output, "Demo trainings: AP50 and CPU cost", method, table, load_before=load_before)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    _common.run(main)
