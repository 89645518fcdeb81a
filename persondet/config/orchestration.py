"""The configuration of the steps that run many trainings: ``tune`` (an optuna study) and ``launch`` (trainings
in containers on Docker hosts). Conventions: persondet/config/__init__.py."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Literal

from persondet.config.steps import _AUTO_MODEL, _WEIGHTS_BACKBONE, TrainConfig
from persondet.configbase import ConfigBase, ConfigError, require, setting
from persondet.model_names import MODEL_CHOICES
from persondet.server import redact


@dataclass(frozen=True)
class TuneConfig(ConfigBase):
    """An optuna study over lr, batch size and the CUHK-SYSU:COCO sampling ratio: each trial is a training
    run nested under the study's run, pruned (MedianPruner) on its per-epoch validation AP50. Workers
    started on one storage share the study; a crashed worker's trial is re-run."""

    n_trials: int = setting(10, "trials run by this worker; start more workers on one storage to share the "
                            "study")
    storage: str = setting("", "optuna storage URL, e.g. postgresql+psycopg2://user:password@host/db (the "
                           "password is not logged); empty: $PERSONDET_TUNE_STORAGE, else sqlite:///optuna.db")
    study_name: str = setting("persondet-tune", "the optuna study, and the name of its MLflow run")
    load_if_exists: bool = setting(True, "join the study when it exists (what a second worker does)")
    data: str = setting("", "a prepare run id or a COCO json path; empty: prepare the built-in demo data")
    val_annotations: str = setting("", "the set whose per-epoch AP50 is the objective; empty: the demo COCO "
                                   "val set")
    val_images: str = setting("", "the image folder of val_annotations")
    model: Literal[MODEL_CHOICES] = setting("auto", f"the detector trained; {_AUTO_MODEL}")
    weights_backbone: str = setting("auto", _WEIGHTS_BACKBONE)
    epochs: int = setting(3, "epochs per trial")
    max_iters_per_epoch: int | None = setting(None, "end each epoch after this many iterations; none = the "
                                              "whole epoch", none="none")
    workers: int = setting(2, "DataLoader worker processes per trial")
    lr_min: float = setting(1e-3, "search space: lr log-uniform in [lr_min, lr_max]")
    lr_max: float = setting(5e-2, "the upper end of the lr range")
    batch_sizes: tuple[int, ...] = setting((4, 8, 16), "search space: the global batch size, one of these")
    cuhk_ratio_min: float = setting(0.25, "search space: the CUHK-SYSU:COCO sampling ratio (source_weights "
                                    "coco=1,cuhk=<ratio>) log-uniform in [cuhk_ratio_min, cuhk_ratio_max]")
    cuhk_ratio_max: float = setting(4.0, "the upper end of the sampling ratio range")
    pruner_startup_trials: int = setting(2, "MedianPruner: no pruning before this many trials finished")
    pruner_warmup_epochs: int = setting(1, "MedianPruner: no pruning before a trial reported this many epochs")
    heartbeat_interval: int = setting(60, "seconds between a running trial's heartbeats")
    grace_period: int = setting(180, "seconds without a heartbeat after which a trial is stale (its worker "
                                "died); more than heartbeat_interval")
    max_retry: int = setting(2, "times a stale trial is re-run with its parameters")
    seed: int | None = setting(None, "seed of the TPE sampler; none = a different stream per worker",
                               none="none")

    def validate(self) -> None:
        require(self.n_trials >= 1, f"n_trials={self.n_trials} must be >= 1")
        require(bool(self.study_name.strip()), "study_name must not be empty")
        require(bool(self.val_annotations) == bool(self.val_images),
                "val_annotations and val_images go together: give both or neither")
        require(self.epochs >= 1, f"epochs={self.epochs} must be >= 1")
        require(self.max_iters_per_epoch is None or self.max_iters_per_epoch >= 1,
                f"max_iters_per_epoch={self.max_iters_per_epoch} must be >= 1")
        require(self.workers >= 0, f"workers={self.workers} must be >= 0")
        require(0 < self.lr_min <= self.lr_max, f"lr_min={self.lr_min}, lr_max={self.lr_max}: need 0 < lr_min <= lr_max")
        require(bool(self.batch_sizes) and all(b >= 1 for b in self.batch_sizes),
                f"batch_sizes={self.text('batch_sizes')!r} must be comma-separated integers >= 1")
        require(0 < self.cuhk_ratio_min <= self.cuhk_ratio_max,
                f"cuhk_ratio_min={self.cuhk_ratio_min}, cuhk_ratio_max={self.cuhk_ratio_max}: "
                "need 0 < cuhk_ratio_min <= cuhk_ratio_max")
        require(self.pruner_startup_trials >= 0, f"pruner_startup_trials={self.pruner_startup_trials} must be >= 0")
        require(self.pruner_warmup_epochs >= 0, f"pruner_warmup_epochs={self.pruner_warmup_epochs} must be >= 0")
        require(self.heartbeat_interval >= 1, f"heartbeat_interval={self.heartbeat_interval} must be >= 1")
        require(self.grace_period > self.heartbeat_interval,
                f"grace_period={self.grace_period} must be > heartbeat_interval={self.heartbeat_interval}")
        require(self.max_retry >= 0, f"max_retry={self.max_retry} must be >= 0")
        require(not re.search(r"://[^@]*:[^@]*@|[?&]password=", self.storage, re.I),
                "storage has a password in it, and parameters and command lines are readable by every user: give "
                "storage without it and the password in PERSONDET_TUNE_STORAGE_PASSWORD_FILE, PGPASSWORD or "
                "~/.pgpass (libpq); if mlflow run recorded it as a parameter, change that password")

    def batch_size_list(self) -> list[int]:
        return list(self.batch_sizes)

    def to_params(self) -> dict[str, str]:
        params = super().to_params()
        params["storage"] = redact(params["storage"])  # no password
        return params


# --- launch: trainings in containers on Docker hosts (persondet/launch.py, docs/LAUNCH.md) ---------------

IMAGE_SOURCES = ("build", "present")  # or the path of a `docker save` archive
# Train settings the launcher sets itself for each run (the rest may go in train_options).
LAUNCH_SETS = ("data", "batch_size", "nproc", "nnodes", "node_rank", "master_addr", "master_port", "model",
               "epochs", "max_iters_per_epoch", "resume", "checkpoint_dir", "device")


def parse_train_options(text: str) -> dict[str, str]:
    """``"min_size=512,amp=bf16"`` -> {"min_size": "512", "amp": "bf16"}, checked against TrainConfig."""
    names = {f.name for f in dataclasses.fields(TrainConfig)} - {"raw"}
    options: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        key, sep, value = part.partition("=")
        key = key.strip().replace("-", "_")
        require(bool(sep) and key in names, f"train_options={text!r}: {part!r} is not <train setting>=<value>")
        require(key not in LAUNCH_SETS, f"train_options={text!r}: {key} is set by launch itself")
        options[key] = value.strip()
    return options


@dataclass(frozen=True)
class LaunchConfig(ConfigBase):
    """Run train for every (server x batch size) in containers on Docker hosts through the Docker Engine API
    (the seed study's server comparison), every run reporting to the tracking server of MLFLOW_TRACKING_URI
    with the credentials of the launcher's environment; a second launch re-uses finished runs."""

    servers: str = setting("servers.yml", "the servers file: Docker hosts (unix://, ssh://user@host, "
                           "tcp://host:2376 with tls), their GPU counts and dataset roots (docs/LAUNCH.md)")
    data: str = setting("", "a prepare run id, or a COCO json path as seen inside the containers (under a "
                        "data root)", required=True)
    batch_sizes: tuple[int, ...] = setting((8, 16), "global batch sizes: one training per server and batch size")
    model: Literal[MODEL_CHOICES] = setting("auto", f"the train model; {_AUTO_MODEL}")
    epochs: int = setting(12, "epochs of each training")
    max_iters_per_epoch: int | None = setting(None, "cap on iterations per epoch (speed comparisons, tests); "
                                              "none = the whole epoch", none="none")
    train_options: str = setting("", "more train settings for every run, e.g. "
                                 "'amp=bf16,workers=8,weights_backbone=imagenet'")
    experiment: str = setting("persondet", "the MLflow experiment of the trainings")
    image: str = setting("persondet-trainer:latest", "the trainer image's name")
    image_source: str = setting("build", "build: build docker/trainer.Dockerfile on each host (cached layers "
                                "make it quick); present: the image must be there; or a `docker save` archive "
                                "to load")
    base_image: str = setting("", "BASE_IMAGE build argument (empty: the Dockerfile's python:3.11-slim-bookworm)")
    wheelhouse: str = setting("", "pip --find-links URL for the build, as the host reaches it, installing with "
                              "--no-index (air-gapped hosts; empty: the package index)")
    parallel: bool = setting(True, "run on all servers at once (one training at a time per server); false: one "
                             "after another")
    multi_node: bool = setting(False, "one training per batch size over all servers as torchrun nodes (the "
                               "first is the master)")
    master_port: int = setting(29500, "the master's port in a multi-node training")

    def validate(self) -> None:
        require(bool(self.servers.strip()), "servers is required: a servers file (docs/LAUNCH.md)")
        require(bool(self.batch_sizes) and all(b >= 1 for b in self.batch_sizes),
                f"batch_sizes={self.text('batch_sizes')!r} must be comma-separated integers >= 1")
        require(self.epochs >= 1, f"epochs={self.epochs} must be >= 1")
        require(self.max_iters_per_epoch is None or self.max_iters_per_epoch >= 1,
                f"max_iters_per_epoch={self.max_iters_per_epoch} must be >= 1")
        try:
            TrainConfig.from_strings({"data": self.data, **parse_train_options(self.train_options)})
        except ConfigError as exc:
            raise ConfigError(exc if "train_options" in str(exc)
                              else f"train_options={self.train_options!r}: {exc}") from None
        require(bool(self.experiment.strip()), "experiment must not be empty")
        require(bool(self.image.strip()), "image must not be empty")
        require(self.image_source in IMAGE_SOURCES or self.image_source.endswith((".tar", ".tar.gz")),
                f"image_source={self.image_source!r} must be build, present or a .tar archive")
        require(1 <= self.master_port <= 65535, f"master_port={self.master_port} must be in 1..65535")

    def batch_size_list(self) -> list[int]:
        return list(self.batch_sizes)
