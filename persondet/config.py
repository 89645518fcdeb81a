"""Frozen, validated configuration for every step.

One name per idea: the command-line flag ``--batch-size``, the dataclass field ``batch_size`` and the
logged MLflow parameter ``batch_size`` are the same setting.  ``to_params()`` returns exactly what is
logged.  MLflow compares parameter values as strings, so a field that the user typed keeps the string the
user typed (``raw``) and ``to_params`` logs that string rather than a re-formatted number.

Each step owns its own class here; the shared machinery is ``ConfigBase``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from persondet.errors import PersondetError

MIXES = ("coco", "cuhk", "coco+cuhk")
CUHK_SPLITS = ("all", "train", "test")


class ConfigError(PersondetError, ValueError):
    """A configuration value is invalid; the message names the setting and the value."""


@dataclass(frozen=True)
class ConfigBase:
    # Strings as the user typed them (name -> text), so logged params match what was passed.
    raw: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:  # overridden by each step
        pass

    def to_params(self) -> dict[str, str]:
        params: dict[str, str] = {}
        for f in dataclasses.fields(self):
            if f.name == "raw" or f.metadata.get("log") is False:
                continue
            value = getattr(self, f.name)
            params[f.name] = self.raw.get(f.name, _as_text(value))
        return params

    @classmethod
    def from_strings(cls, values: Mapping[str, str | None]) -> "ConfigBase":
        """Build from command-line strings, converting to each field's type and remembering the text."""
        kwargs: dict[str, Any] = {}
        raw: dict[str, str] = {}
        types = {f.name: f for f in dataclasses.fields(cls)}
        for name, text in values.items():
            if name not in types:
                raise ConfigError(f"unknown setting {name!r} for {cls.__name__}")
            if text is None:
                continue
            kwargs[name] = _convert(name, text, types[name])
            if isinstance(text, str):
                raw[name] = text
        return cls(raw=raw, **kwargs)


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, (tuple, list)):
        return ",".join(_as_text(v) for v in value)
    return str(value)


def _convert(name: str, text: Any, f: dataclasses.Field) -> Any:
    if not isinstance(text, str):
        return text
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    kind = kind.replace(" ", "")
    try:
        if kind in ("int",):
            return int(text)
        if kind in ("float",):
            return float(text)
        if kind in ("float|None", "Optional[float]"):
            return None if text.strip().lower() in ("", "none", "auto") else float(text)
        if kind in ("int|None", "Optional[int]"):
            return None if text.strip().lower() in ("", "none", "auto") else int(text)
        if kind == "bool":
            lowered = text.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a valid {kind}") from None
    return text


def _parse_batch_sizes(text: str) -> list[int]:
    """``"8,16"`` -> [8, 16]; a clear error for anything else."""
    try:
        sizes = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise ConfigError(f"batch_sizes={text!r} must be comma-separated integers") from None
    require(bool(sizes) and all(b >= 1 for b in sizes), f"batch_sizes={text!r} must be comma-separated integers >= 1")
    return sizes


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class PrepareConfig(ConfigBase):
    coco_root: str = ""  # empty: the built-in demo data
    cuhk_root: str = ""  # empty: the built-in demo data
    mix: str = "coco+cuhk"
    cuhk_split: str = "all"
    coco_split: str = "train2017"
    output_dir: str = field(default="", metadata={"log": False})
    check_images: int = 4  # annotation check images drawn per source
    demo_seed: int = 0

    def validate(self) -> None:
        require(self.mix in MIXES, f"mix={self.mix!r} must be one of {', '.join(MIXES)}")
        require(self.cuhk_split in CUHK_SPLITS,
                f"cuhk_split={self.cuhk_split!r} must be one of {', '.join(CUHK_SPLITS)}")
        require(self.check_images >= 0, f"check_images={self.check_images} must be >= 0")


TRAIN_MODELS = ("auto", "small", "fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2",
                "fasterrcnn_mobilenet_v3_large_fpn")
AMP_MODES = ("none", "bf16", "fp16")
DECODERS = ("pil", "torchvision", "torchvision-cuda")


def parse_source_weights(text: str) -> dict[str, float]:
    """``"coco=1,cuhk=2"`` -> {"coco": 1.0, "cuhk": 2.0}; empty text -> {} (uniform over images)."""
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name, sep, value = part.partition("=")
        try:
            number = float(value) if sep else float("nan")
        except ValueError:
            number = float("nan")
        require(bool(name.strip()) and number == number and number >= 0,
                f"source_weights={text!r}: {part!r} is not <source>=<weight >= 0>")
        weights[name.strip()] = number
    require(not weights or any(v > 0 for v in weights.values()),
            f"source_weights={text!r}: at least one weight must be > 0")
    return weights


@dataclass(frozen=True)
class TrainConfig(ConfigBase):
    data: str = ""  # a prepare run id or a COCO json path
    model: str = "auto"  # auto: fasterrcnn_resnet50_fpn on GPU, small on CPU
    weights_backbone: str = "none"  # none, imagenet, or a local state-dict file
    batch_size: int = 8  # global: all processes together
    epochs: int = 12
    lr: float | None = None  # None/auto: 0.02 * batch_size / 16
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 1000  # capped at the first epoch's length
    nproc: int = 1  # processes per node (GPUs per node)
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 0  # 0: a free port on one node, 29500 across nodes
    workers: int = 2
    pin_memory: bool = True  # only applies with CUDA
    amp: str = "none"
    channels_last: bool = False
    min_size: int | None = None  # None: the model's default
    max_size: int | None = None
    seed: int = 0
    deterministic: bool = False
    resume: str = ""  # a training run id or a checkpoint file
    checkpoint_dir: str = ""  # also keep last.pt here (it is always logged as checkpoints/last.pt)
    source_weights: str = ""  # e.g. "coco=1,cuhk=2": per-source sampling weights
    val_annotations: str = ""  # optional COCO-format set evaluated each epoch (val/AP50)
    val_images: str = ""
    register: bool = True
    max_iters_per_epoch: int | None = None  # a cap for demos and tests
    device: str = "auto"  # auto, cpu, cuda
    decode: str = "pil"  # pil, torchvision (decode_jpeg), torchvision-cuda

    def validate(self) -> None:
        require(bool(self.data.strip()), "data is required: a prepare run id or a COCO json path")
        require(self.model in TRAIN_MODELS, f"model={self.model!r} must be one of {', '.join(TRAIN_MODELS)}")
        require(self.batch_size >= 1, f"batch_size={self.batch_size} must be >= 1")
        require(self.epochs >= 1, f"epochs={self.epochs} must be >= 1")
        require(self.lr is None or (self.lr > 0 and self.lr == self.lr and self.lr != float("inf")),
                f"lr={self.raw.get('lr', self.lr)!r} must be a positive number or auto")
        require(0 <= self.momentum < 1, f"momentum={self.momentum} must be in [0, 1)")
        require(self.weight_decay >= 0, f"weight_decay={self.weight_decay} must be >= 0")
        require(self.warmup_iters >= 0, f"warmup_iters={self.warmup_iters} must be >= 0")
        require(self.nproc >= 1, f"nproc={self.nproc} must be >= 1")
        require(self.nnodes >= 1, f"nnodes={self.nnodes} must be >= 1")
        require(0 <= self.node_rank < self.nnodes,
                f"node_rank={self.node_rank} must be in [0, nnodes={self.nnodes})")
        require(0 <= self.master_port <= 65535, f"master_port={self.master_port} must be in 0..65535")
        world = self.nproc * self.nnodes
        require(self.batch_size % world == 0,
                f"batch_size={self.batch_size} must be divisible by the number of processes "
                f"(nproc * nnodes = {world})")
        require(self.workers >= 0, f"workers={self.workers} must be >= 0")
        require(self.amp in AMP_MODES, f"amp={self.amp!r} must be one of {', '.join(AMP_MODES)}")
        for name in ("min_size", "max_size"):
            value = getattr(self, name)
            require(value is None or value >= 32, f"{name}={value} must be >= 32")
        require(self.max_iters_per_epoch is None or self.max_iters_per_epoch >= 1,
                f"max_iters_per_epoch={self.max_iters_per_epoch} must be >= 1")
        require(bool(self.val_annotations) == bool(self.val_images),
                "val_annotations and val_images go together: give both or neither")
        require(self.device in ("auto", "cpu", "cuda"), f"device={self.device!r} must be auto, cpu or cuda")
        require(self.decode in DECODERS, f"decode={self.decode!r} must be one of {', '.join(DECODERS)}")
        require(self.decode != "torchvision-cuda" or self.workers == 0,
                "decode=torchvision-cuda decodes in the training process: set workers=0")
        parse_source_weights(self.source_weights)

    @property
    def learning_rate(self) -> float:
        """The learning rate used: lr, or the linear scaling rule 0.02 * batch_size / 16."""
        return self.lr if self.lr is not None else 0.02 * self.batch_size / 16

    def to_params(self) -> dict[str, str]:
        params = super().to_params()
        if self.lr is None and "lr" not in self.raw:
            params["lr"] = "auto"
        return params


@dataclass(frozen=True)
class EvaluateConfig(ConfigBase):
    model_uri: str = ""  # runs:/<run_id>/model, models:/<name>/<version>, models:/<name>@<alias>
    test_annotations: str = ""  # a COCO json; empty: the built-in demo in-house test set
    test_images: str = ""  # image folder; empty: the annotation file's folder (or the demo's images/)
    test_name: str = ""  # empty: derived from the annotation file's name
    person_category: str = "person"  # the person category's name or its integer id
    batch_size: int = 4
    examples: int = 4  # example images drawn with ground truth and detections
    demo_seed: int = 0
    log_to_training_run: bool = True  # also log <test_name>/AP50... to the model's training run

    def validate(self) -> None:
        require(bool(self.model_uri), "model_uri is required (runs:/<run_id>/model, "
                "models:/<name>/<version> or models:/<name>@<alias>)")
        require(self.batch_size >= 1, f"batch_size={self.batch_size} must be >= 1")
        require(self.examples >= 0, f"examples={self.examples} must be >= 0")
        require(bool(str(self.person_category).strip()), "person_category must be a name or an id")


@dataclass(frozen=True)
class PromoteConfig(ConfigBase):
    metric: str = "AP50"
    model_name: str = "persondet"
    test_name: str = ""  # empty: the test set most merged-data versions were evaluated on
    test_digest: str = ""  # empty: that test set's latest digest
    alias: str = "champion"
    stage: str = "Production"

    def validate(self) -> None:
        require(bool(self.metric), "metric must not be empty")
        require(bool(self.model_name), "model_name must not be empty")


@dataclass(frozen=True)
class ReportConfig(ConfigBase):
    experiment: str = "persondet"
    test_name: str = ""  # empty: the test set with the most evaluated training runs
    output_dir: str = field(default="", metadata={"log": False})  # also write report.html here
    examples: int = 3  # test images shown side by side (coco-only vs merged model)

    def validate(self) -> None:
        require(bool(self.experiment), "experiment must not be empty")
        require(self.examples >= 0, f"examples={self.examples} must be >= 0")


@dataclass(frozen=True)
class MainConfig(ConfigBase):
    coco_root: str = ""  # empty: the built-in demo data
    cuhk_root: str = ""
    test_annotations: str = ""  # empty: the built-in demo in-house test set
    test_images: str = ""
    batch_sizes: str = "8,16"
    epochs: str = "auto"  # auto: the demo setting on demo data, else the train default
    model: str = "auto"
    mixes: str = "coco,cuhk,coco+cuhk"
    experiment: str = "persondet"
    max_iters_per_epoch: int | None = None  # None: the demo setting on demo data, else no cap

    def validate(self) -> None:
        for mix in self.mix_list():
            require(mix in MIXES, f"mixes={self.mixes!r}: {mix!r} must be one of {', '.join(MIXES)}")
        _parse_batch_sizes(self.batch_sizes)

    def mix_list(self) -> list[str]:
        return [m.strip() for m in self.mixes.split(",") if m.strip()]

    def batch_size_list(self) -> list[int]:
        return _parse_batch_sizes(self.batch_sizes)


@dataclass(frozen=True)
class TuneConfig(ConfigBase):
    n_trials: int = 10  # trials run by THIS worker; start more workers on one storage to share a study
    storage: str = ""  # optuna storage URL; empty: $PERSONDET_TUNE_STORAGE, else sqlite:///optuna.db
    study_name: str = "persondet-tune"
    load_if_exists: bool = True  # join the study when it exists (what a second worker does)
    data: str = ""  # a prepare run id or a COCO json path; empty: prepare the built-in demo data
    val_annotations: str = ""  # the set whose per-epoch AP50 is the objective; empty: the demo COCO val
    val_images: str = ""
    model: str = "auto"
    epochs: int = 3
    max_iters_per_epoch: int | None = None
    workers: int = 2  # data loader processes per trial
    lr_min: float = 1e-3  # the search space: lr log-uniform in [lr_min, lr_max],
    lr_max: float = 5e-2
    batch_sizes: str = "4,8,16"  # batch_size one of these,
    cuhk_ratio_min: float = 0.25  # and the CUHK-SYSU:COCO sampling ratio log-uniform in this range
    cuhk_ratio_max: float = 4.0
    pruner_startup_trials: int = 2  # MedianPruner: no pruning before this many trials finished
    pruner_warmup_epochs: int = 1  # ... nor before a trial reported this many epochs
    heartbeat_interval: int = 60  # seconds; a trial whose heartbeat stops for grace_period is stale
    grace_period: int = 180
    max_retry: int = 2  # a stale (crashed worker's) trial is re-run with its parameters this often
    seed: int | None = None  # sampler seed; None: a different stream per worker

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
        _parse_batch_sizes(self.batch_sizes)
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
        return _parse_batch_sizes(self.batch_sizes)

    def to_params(self) -> dict[str, str]:
        import re

        params = super().to_params()
        params["storage"] = re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", params["storage"])  # no password
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
    servers: str = field(default="servers.yml", metadata={
        "help": "the servers file: Docker hosts (unix://, ssh://user@host, tcp://host:2376 with tls), their "
                "GPU counts and dataset roots (docs/LAUNCH.md)"})
    data: str = field(default="", metadata={
        "help": "a prepare run id, or a COCO json path as seen inside the containers (under a data root)"})
    batch_sizes: str = field(default="8,16", metadata={
        "help": "global batch sizes: one training per server and batch size"})
    model: str = field(default="auto", metadata={"help": "the train model (auto: resnet50-FPN on GPU)"})
    epochs: int = field(default=12, metadata={"help": "epochs of each training"})
    max_iters_per_epoch: int | None = field(default=None, metadata={
        "help": "cap on iterations per epoch (auto/empty: none); for speed comparisons and tests"})
    train_options: str = field(default="", metadata={
        "help": "more train settings for every run, e.g. 'amp=bf16,workers=8,weights_backbone=imagenet'"})
    experiment: str = field(default="persondet", metadata={"help": "the MLflow experiment of the trainings"})
    image: str = field(default="persondet-trainer:latest", metadata={"help": "the trainer image's name"})
    image_source: str = field(default="build", metadata={
        "help": "build: build docker/trainer.Dockerfile on each host (cached layers make it quick); "
                "present: the image must be there; or a `docker save` archive to load"})
    base_image: str = field(default="", metadata={
        "help": "BASE_IMAGE build argument (empty: the Dockerfile's python:3.11-slim-bookworm)"})
    wheelhouse: str = field(default="", metadata={
        "help": "pip --find-links URL for the build, as the host reaches it, installing with --no-index "
                "(air-gapped hosts; empty: the package index)"})
    parallel: bool = field(default=True, metadata={
        "help": "run on all servers at once (one training at a time per server); false: one after another"})
    multi_node: bool = field(default=False, metadata={
        "help": "one training per batch size over all servers as torchrun nodes (the first is the master)"})
    master_port: int = field(default=29500, metadata={"help": "the master's port in a multi-node training"})

    def validate(self) -> None:
        require(bool(self.servers.strip()), "servers is required: a servers file (docs/LAUNCH.md)")
        require(bool(self.data.strip()), "data is required: a prepare run id or a COCO json path")
        _parse_batch_sizes(self.batch_sizes)
        require(self.model in TRAIN_MODELS, f"model={self.model!r} must be one of {', '.join(TRAIN_MODELS)}")
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
        return _parse_batch_sizes(self.batch_sizes)
