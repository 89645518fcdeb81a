"""The configuration of the single steps: prepare, train, evaluate, promote, report and main (the study).
Conventions: persondet/config/__init__.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from persondet.configbase import ConfigBase, require, setting
from persondet.datasets import (CITYPERSONS_SPLITS, CITYPERSONS_SUBSETS, CROWDHUMAN_BOXES, CROWDHUMAN_SPLITS,
                                CUHK_SPLITS, mix_problem)
from persondet.metrics import BACKENDS, DEFAULT_BACKEND
from persondet.model_names import MODEL_CHOICES, REGISTERED_MODEL

DEFAULT_MIXES = ("coco", "cuhk", "coco+cuhk")  # the seed study's three mixes


@dataclass(frozen=True)
class PrepareConfig(ConfigBase):
    """Read the sources of a mix (COCO, CUHK-SYSU, CityPersons, CrowdHuman) in their original layouts,
    convert them to COCO format, merge them, describe the result (statistics, relative-size plot,
    annotation check images) and log it as a prepare run whose prepared/train.json the train step reads."""

    coco_root: str = setting("", "COCO 2017 root (annotations/instances_<coco_split>.json and "
                             "<coco_split>/*.jpg); empty: the built-in demo data")
    cuhk_root: str = setting("", "CUHK-SYSU root (annotation/Images.mat, Person.mat, pool.mat and "
                             "Image/SSM/); empty: the built-in demo data")
    citypersons_root: str = setting("", "CityPersons root (annotations/anno_<citypersons_split>.mat and "
                                    "leftImg8bit/<citypersons_split>/<city>/); empty: the built-in demo data "
                                    "(generated when first used)")
    crowdhuman_root: str = setting("", "CrowdHuman root (annotation_<crowdhuman_split>.odgt and Images/); "
                                   "empty: the built-in demo data (generated when first used)")
    mix: str = setting("coco+cuhk", "the sources merged into the prepared set: one source or several joined by "
                       "+, e.g. coco, cuhk, coco+cuhk, coco+cuhk+citypersons+crowdhuman (any + combination of "
                       "the registered sources)")
    cuhk_split: Literal[CUHK_SPLITS] = setting("all", "the CUHK-SYSU images used: its train or test split "
                                               "(the test split is pool.mat's test pool), or all (pool included)")
    coco_split: str = setting("train2017", "the COCO split read (train2017, val2017)")
    citypersons_split: Literal[CITYPERSONS_SPLITS] = setting("train", "the CityPersons split read (train, val)")
    citypersons_subset: Literal[CITYPERSONS_SUBSETS] = setting(
        "all", "CityPersons persons: all = pedestrians, riders, sitting and other persons (groups: crowd "
        "regions, label 0: ignore regions); reasonable = only pedestrians >= 50 px tall and >= 65 % visible, "
        "every other box an ignore region")
    crowdhuman_split: Literal[CROWDHUMAN_SPLITS] = setting("train", "the CrowdHuman split read (train, val)")
    crowdhuman_box: Literal[CROWDHUMAN_BOXES] = setting("fbox", "the CrowdHuman person box: fbox (full body, "
                                                        "clipped to the image) or vbox (the visible part)")
    output_dir: str = setting("", "also write the prepared files into this folder (renamed into place when "
                              "complete); empty: only the run's artifacts", log=False)
    check_images: int = setting(4, "images per source drawn with their boxes under checks/")
    demo_seed: int = setting(0, "seed of the built-in demo data (used where a root is empty)")

    def validate(self) -> None:
        require(not mix_problem(self.mix), f"mix={self.mix!r}: {mix_problem(self.mix)}")
        require(self.check_images >= 0, f"check_images={self.check_images} must be >= 0")


AMP_MODES = ("none", "bf16", "fp16")
DECODERS = ("pil", "torchvision", "torchvision-cuda")
DEVICES = ("auto", "cpu", "cuda")
_AUTO_MODEL = "auto = fasterrcnn_resnet50_fpn on a GPU, small (a light CPU model for demos and tests) on CPU"
_WEIGHTS_BACKBONE = ("initial backbone weights: auto = imagenet for the torchvision models, none for small; "
                     "imagenet (torchvision's ImageNet weights, downloaded once into torch's hub cache, "
                     "$TORCH_HOME/hub/checkpoints), none (random initialisation) or a local state-dict file of the "
                     "classification backbone (the same network as imagenet: frozen first stages, "
                     "FrozenBatchNorm)")


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
    """Train a torchvision Faster R-CNN person detector on a prepared set, in one process or with
    torchrun/DDP over nproc x nnodes processes: one MLflow run with per-step losses, timing, checkpoints and
    the model, registered as persondet. The recipe is torchvision's detection reference (1x schedule): SGD
    with lr 0.02 for a global batch of 16, momentum 0.9, weight decay 1e-4, linear warm-up, 12 epochs with
    the lr x0.1 at epochs 8 and 11."""

    data: str = setting("", "a prepare run id (its artifact prepared/train.json is downloaded) or a COCO "
                        "json path", required=True)
    model: Literal[MODEL_CHOICES] = setting("auto", f"the detector; {_AUTO_MODEL}; logged as typed, the "
                                           "model built as model_resolved")
    weights_backbone: str = setting("auto", _WEIGHTS_BACKBONE + "; logged as typed, the one used as "
                                    "weights_backbone_resolved")
    init: str = setting("", "start from a whole earlier detector, e.g. to fine-tune the champion on new data: a "
                        "logged model (runs:/<run_id>/model, models:/<name>/<version>, models:/<name>@<alias>) "
                        "or a detector's state-dict file, read as weights only; model auto becomes its model; "
                        "empty: the detector starts from weights_backbone")
    batch_size: int = setting(8, "global batch: images per iteration over all processes together, divisible "
                              "by nproc x nnodes (each process gets its share); the auto lr scales with it")
    epochs: int = setting(12, "passes over the data; the lr drops x0.1 at epochs 8 and 11 of 12 (the 1x "
                          "schedule), at the same fractions of other counts")
    lr: float | None = setting(None, "SGD learning rate; auto = 0.02 x batch_size / 16, the linear scaling rule "
                               "of the 1x recipe (0.02 for 8 GPUs x 2 images); logged as typed")
    momentum: float = setting(0.9, "SGD momentum")
    weight_decay: float = setting(1e-4, "SGD weight decay")
    warmup_iters: int = setting(1000, "linear lr warm-up from 0.001 x lr over this many iterations, capped at "
                                "the first epoch's length")
    nproc: int = setting(1, "processes per node, one per GPU (torchrun's --nproc-per-node); more than one "
                         "process runs DDP (nccl on GPU, gloo on CPU)")
    nnodes: int = setting(1, "machines taking part; run the same command on each, with its node_rank")
    node_rank: int = setting(0, "this machine's index, 0 .. nnodes-1; node 0 creates the MLflow run")
    master_addr: str = setting("127.0.0.1", "address of node 0, where the processes meet")
    master_port: int = setting(0, "port on node 0 where the processes meet; 0 = a free port on one node, "
                               "29500 across nodes")
    workers: int = setting(2, "DataLoader worker processes per training process, at most the CPU count (0: "
                           "load in the training process)")
    pin_memory: bool = setting(True, "page-locked host memory for faster copies to the GPU (only with CUDA)")
    amp: Literal[AMP_MODES] = setting("none", "mixed precision: bf16 or fp16 autocast (fp16 with a "
                                      "GradScaler); none = float32")
    channels_last: bool = setting(False, "channels-last memory layout (faster convolutions on recent GPUs)")
    min_size: int | None = setting(None, "resize so the shorter image side is this many pixels (>= 32); auto "
                                   "= the model's default (small: 320, torchvision models: 800)")
    max_size: int | None = setting(None, "at most this many pixels on the longer side after resizing "
                                   "(>= 32); auto = the model's default (small: 512, torchvision models: 1333)")
    seed: int = setting(0, "seeds Python, NumPy and torch (each process adds its rank)")
    deterministic: bool = setting(False, "torch's deterministic algorithms (slower; a resumed CPU training "
                                  "then equals an uninterrupted one bit for bit)")
    resume: str = setting("", "continue a killed training in the same run from its last epoch: a training "
                          "run id (its artifact checkpoints/last.pt) or a checkpoint file; empty: a new run")
    checkpoint_dir: str = setting("", "also keep last.pt in this folder (it is always logged as "
                                  "checkpoints/last.pt)")
    source_weights: str = setting("", "per-source sampling weights of a merged set, e.g. coco=1,cuhk=2 "
                                  "(sources not named: 0); empty: every image equally likely")
    val_annotations: str = setting("", "a COCO-format set evaluated after each epoch (metrics val/AP50, "
                                   "val/AP); give val_images with it")
    val_images: str = setting("", "the image folder of val_annotations")
    register: bool = setting(True, "register the logged model as persondet in the MLflow Model Registry")
    max_iters_per_epoch: int | None = setting(None, "end each epoch after this many iterations (demos, "
                                              "tests); none = the whole epoch", none="none")
    device: Literal[DEVICES] = setting("auto", "where to train; auto = cuda when available, else cpu")
    decode: Literal[DECODERS] = setting("pil", "image decoding: pil, torchvision (decode_image, in the "
                                        "workers) or torchvision-cuda (nvjpeg on the GPU; needs workers=0)")

    def validate(self) -> None:
        require(self.batch_size >= 1, f"batch_size={self.batch_size} must be >= 1")
        require(self.epochs >= 1, f"epochs={self.epochs} must be >= 1")
        require(self.lr is None or (self.lr > 0 and self.lr == self.lr and self.lr != float("inf")),
                f"lr={self.text('lr')!r} must be a positive number or auto")
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
        for name in ("min_size", "max_size"):
            value = getattr(self, name)
            require(value is None or value >= 32, f"{name}={value} must be >= 32")
        require(self.max_iters_per_epoch is None or self.max_iters_per_epoch >= 1,
                f"max_iters_per_epoch={self.max_iters_per_epoch} must be >= 1")
        require(bool(self.val_annotations) == bool(self.val_images),
                "val_annotations and val_images go together: give both or neither")
        require(self.decode != "torchvision-cuda" or self.workers == 0,
                "decode=torchvision-cuda decodes in the training process: set workers=0")
        require(not (self.init and self.resume), "init and resume do not go together: resume continues a "
                "training from its checkpoint, init starts a new one from a detector's weights")
        parse_source_weights(self.source_weights)

    @property
    def learning_rate(self) -> float:
        """The learning rate used: lr, or the linear scaling rule 0.02 * batch_size / 16."""
        return self.lr if self.lr is not None else 0.02 * self.batch_size / 16


@dataclass(frozen=True)
class EvaluateConfig(ConfigBase):
    """Evaluate a model (or score a COCO results file) on a COCO-format test set: COCO metrics of the person
    category, AP50 first, ignore regions neither hits nor misses, on an evaluation run, also logged to the
    model's training run as <test_name>/AP50 ...; detections, the precision-recall curve and example images
    as artifacts; test images found in the training set are reported as data leakage."""

    model_uri: str = setting("", "the model: runs:/<run_id>/model, models:/<name>/<version> or "
                             "models:/<name>@<alias>; give it or detections")
    detections: str = setting("", "instead of model_uri: a COCO results file (a JSON list of image_id, "
                              "category_id, bbox [x, y, w, h], score) of a detector trained elsewhere, scored "
                              "the same way; the images are then not needed")
    test_annotations: str = setting("", "a COCO-format annotation file; empty: the built-in demo in-house "
                                    "test set")
    test_images: str = setting("", "the images' folder (file_name may hold sub-folders); empty: the "
                               "annotation file's folder, or the demo's images/")
    test_name: str = setting("", "the test set's name in metric keys (<test_name>/AP50); empty: the "
                             "annotation file's stem, or its folder's name when the stem is generic "
                             "(inhouse/annotations.json -> inhouse)")
    person_category: str = setting("person", "the person category: its name (case-insensitive) or its "
                                   "integer id")
    batch_size: int = setting(4, "images per inference batch (only images the model resizes to one shape "
                              "share a batch, so the metrics do not depend on it)")
    device: Literal[DEVICES] = setting("auto", "where the model runs; auto = cuda when available, else cpu; "
                                       "the device used is logged as device_resolved")
    workers: int = setting(2, "DataLoader processes decoding the test images (0: in the evaluating process)")
    coco_backend: Literal[BACKENDS] = setting(DEFAULT_BACKEND, "the COCOeval implementation: "
                                              "faster-coco-eval (the same 12 numbers, faster) or pycocotools "
                                              "(the reference)")
    examples: int = setting(4, "test images drawn with ground truth (green) and detections (red) under "
                            "evaluation/examples/")
    demo_seed: int = setting(0, "seed of the built-in demo data (used when test_annotations is empty)")
    log_to_training_run: bool = setting(True, "also log <test_name>/AP50 ... and the test set's digest to the "
                                        "model's training run, so the MLflow UI compares training runs")

    def validate(self) -> None:
        require(bool(self.model_uri.strip()) != bool(self.detections.strip()),
                "give model_uri (a logged model) or detections (a COCO results file), one of them")
        require(self.batch_size >= 1, f"batch_size={self.batch_size} must be >= 1")
        require(self.workers >= 0, f"workers={self.workers} must be >= 0")
        require(self.examples >= 0, f"examples={self.examples} must be >= 0")
        require(bool(str(self.person_category).strip()), "person_category must be a name or an id")


@dataclass(frozen=True)
class PromoteConfig(ConfigBase):
    """Promote the best merged-data version (trained on a mix of at least two sources, e.g. coco+cuhk) of
    the registered model on one test set: when it beats the current champion there it gets the stage
    Production (the previous holder archived) and the alias champion; the decision table is logged to a
    promote run. Running it again changes nothing."""

    metric: str = setting("AP50", "the metric compared, read from training runs as <test_name>/<metric>; "
                          "higher is better, a tie keeps the older version")
    model_name: str = setting(REGISTERED_MODEL, "the registered model")
    test_name: str = setting("", "the test set compared on; empty: the one most merged-data versions were "
                             "evaluated on")
    test_digest: str = setting("", "that test set's digest; empty: its latest")
    alias: str = setting("champion", "the alias set on the promoted version")
    stage: str = setting("Production", "the stage of the promoted version (the previous holder is archived)")

    def validate(self) -> None:
        require(bool(self.metric), "metric must not be empty")
        require(bool(self.model_name), "model_name must not be empty")


@dataclass(frozen=True)
class ReportConfig(ConfigBase):
    """Rebuild the study's tables and figures from an experiment's finished runs (dataset statistics, time
    per batch by GPU configuration and batch size, AP50 by dataset mix and batch size, coco-only vs merged
    detections side by side) as one static report.html logged to a report run."""

    experiment: str = setting("persondet", "the MLflow experiment read")
    test_name: str = setting("", "the test set whose AP50 is tabulated; empty: the one with the most "
                             "evaluated training runs")
    output_dir: str = setting("", "also write report.html into this folder", log=False)
    examples: int = setting(3, "test images shown side by side (the best coco-only and merged models)")

    def validate(self) -> None:
        require(bool(self.experiment), "experiment must not be empty")
        require(self.examples >= 0, f"examples={self.examples} must be >= 0")


@dataclass(frozen=True)
class MainConfig(ConfigBase):
    """The whole study end to end: prepare each mix, train each at each batch size, evaluate every model on
    the in-house test set, promote, report. Each step is an MLflow project run under the main run; a
    FINISHED run of the step with the same parameters, input data and code version is re-used."""

    coco_root: str = setting("", "COCO 2017 root; empty: the built-in demo data")
    cuhk_root: str = setting("", "CUHK-SYSU root; empty: the built-in demo data")
    citypersons_root: str = setting("", "CityPersons root, for mixes naming citypersons; empty: the built-in "
                                    "demo data")
    crowdhuman_root: str = setting("", "CrowdHuman root, for mixes naming crowdhuman; empty: the built-in demo "
                                   "data")
    test_annotations: str = setting("", "the in-house COCO-format test set; empty: the built-in demo "
                                    "in-house set")
    test_images: str = setting("", "its image folder; empty: the annotation file's folder")
    person_category: str = setting("person", "the test set's person category: its name (case-insensitive) or "
                                   "integer id; the demo in-house set's is pedestrian")
    batch_sizes: tuple[int, ...] = setting((8, 16), "global batch sizes; each mix is trained at each")
    epochs: int | None = setting(None, "training epochs; auto = the demo setting (6, pipeline.DEMO_TRAIN) on "
                                 "the demo data, else train's default")
    model: Literal[MODEL_CHOICES] = setting("auto", f"the detector trained; {_AUTO_MODEL}")
    weights_backbone: str = setting("auto", _WEIGHTS_BACKBONE + "; checked (and downloaded) before the first "
                                    "step, passed to every training resolved")
    init: str = setting("", "every training starts from this detector (a logged model URI or a state-dict file, "
                        "as train's init); empty: from weights_backbone")
    mixes: tuple[str, ...] = setting(DEFAULT_MIXES, "the dataset mixes prepared and trained (each like prepare's "
                                    "mix)")
    experiment: str = setting("persondet", "the MLflow experiment of the study's runs")
    max_iters_per_epoch: int | None = setting(None, "cap on iterations per training epoch; auto = on the "
                                              "demo data 160 images' worth (160 // batch_size), else no cap")
    device: Literal[DEVICES] = setting("auto", "where trainings and evaluations run; auto = cuda when "
                                       "available, else cpu")
    amp: Literal[AMP_MODES] = setting("none", "mixed precision of the trainings (as train's amp)")
    nproc: int = setting(1, "processes (GPUs) per training (as train's nproc); every batch size must be "
                         "divisible by it")
    min_size: int | None = setting(None, "training and evaluation input: shorter side in pixels; auto = the "
                                   "demo setting on the demo data, else the model's default")
    max_size: int | None = setting(None, "longest side in pixels after resizing; auto = the demo setting on the "
                                   "demo data, else the model's default")
    workers: int | None = setting(None, "DataLoader processes per training and evaluation; auto = the demo "
                                  "setting (0) on the demo data, else train's default")

    def validate(self) -> None:
        require(bool(self.mixes), "mixes must name at least one mix")
        for mix in self.mixes:
            require(not mix_problem(mix), f"mixes={self.text('mixes')!r}: {mix!r}: {mix_problem(mix)}")
        require(bool(self.batch_sizes) and all(b >= 1 for b in self.batch_sizes),
                f"batch_sizes={self.text('batch_sizes')!r} must be comma-separated integers >= 1")
        require(self.epochs is None or self.epochs >= 1, f"epochs={self.epochs} must be >= 1")
        require(self.max_iters_per_epoch is None or self.max_iters_per_epoch >= 1,
                f"max_iters_per_epoch={self.max_iters_per_epoch} must be >= 1")
        require(bool(str(self.person_category).strip()), "person_category must be a name or an id")
        require(self.nproc >= 1, f"nproc={self.nproc} must be >= 1")
        require(self.workers is None or self.workers >= 0, f"workers={self.workers} must be >= 0")

    def mix_list(self) -> list[str]:
        return list(self.mixes)

    def batch_size_list(self) -> list[int]:
        return list(self.batch_sizes)
