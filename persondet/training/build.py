"""What a training is made of, built from its config: the device, the data, the detector and its recipe."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from persondet import data as data_mod
from persondet import engine
from persondet.config import TrainConfig, parse_source_weights
from persondet.distributed import device_for, get_rank, get_world_size
from persondet.errors import PersondetError
from persondet.model import as_backbone_state, backbone_state, build_detector, load_detector_state
from persondet.model_names import resolve_model, resolve_weights_backbone
from persondet.training.checkpoint import seed_everything


def resolve_device(config: TrainConfig) -> torch.device:
    """``device`` as configured (auto: CUDA when visible); this process's GPU is LOCAL_RANK's."""
    return device_for(config.device)


@contextlib.contextmanager
def process_group(config: TrainConfig) -> Iterator[None]:
    """Under torchrun (WORLD_SIZE > 1 in the environment) join the process group (nccl on GPU, gloo on
    CPU) for the duration, unless one is already joined."""
    import torch.distributed as dist

    created = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        device = resolve_device(config)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        created = True
    try:
        yield
    finally:
        if created:
            dist.destroy_process_group()


def setup_device(config: TrainConfig) -> torch.device:
    """The device, with cuDNN set for determinism (``deterministic``) or for speed."""
    device = resolve_device(config)
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return device


def hardware(device: torch.device) -> tuple[str, int]:
    """(gpu_type, gpu_count) as logged: the GPU's name and the world size, or ("cpu", 0)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device), get_world_size()
    return "cpu", 0


@dataclass
class TrainingData:
    """The training loader (this rank's share) and the optional validation set."""

    loader: torch.utils.data.DataLoader
    train_set: data_mod.PersonDataset
    val_set: data_mod.PersonDataset | None
    mix: str  # the prepared set's dataset mix; "custom" for a plain COCO file
    per_device: int  # batch size per process
    iters_per_epoch: int


def load_data(config: TrainConfig, device: torch.device) -> TrainingData:
    """The prepared set (``data``: a prepare run id or a json) as this rank's loader; the validation set."""
    dataset, json_path = data_mod.load_prepared(config.data)
    train_set = data_mod.PersonDataset(dataset, json_path.parent, train=True, seed=config.seed,
                                       decode=config.decode, where=str(json_path))
    if len(train_set) == 0:
        raise PersondetError(f"data={config.data!r}: the training set has no images")
    world = get_world_size()
    per_device = config.batch_size // world
    loader = data_mod.make_loader(
        train_set, per_device, world, get_rank(), seed=config.seed,
        source_weights=parse_source_weights(config.source_weights),
        workers=data_mod.worker_count(config.workers),
        # images decoded on the GPU are already there: nothing to pin
        pin_memory=config.pin_memory and device.type == "cuda" and config.decode != "torchvision-cuda")
    iters_per_epoch = len(loader) if config.max_iters_per_epoch is None else min(
        len(loader), config.max_iters_per_epoch)
    val_set = None
    if config.val_annotations:
        val_dict, val_path = data_mod.load_prepared(config.val_annotations)
        val_set = data_mod.PersonDataset(val_dict, Path(config.val_images), train=False,
                                         decode=config.decode, where=str(val_path))
    mix = str((dataset.get("persondet") or {}).get("mix") or "custom")
    return TrainingData(loader, train_set, val_set, mix, per_device, iters_per_epoch)


@dataclass
class Start:
    """What the detector starts from, settled before any data is read (a download that fails, fails first)."""

    model_name: str
    weights_backbone: str  # resolved: none, imagenet or a file (with init: the layout of init's network)
    backbone: dict | None  # the backbone's initial weights (a classifier state dict), None: random
    init: dict | None  # a whole detector's weights (``init``), loaded over the built network
    min_size: int | None
    max_size: int | None


def starting_point(config: TrainConfig, device: torch.device) -> Start:
    """The model (``auto`` resolved; with ``init``, init's own), the backbone weights (downloaded into torch's
    hub cache when needed) or the detector given by ``init`` (read as weights only), and the input size.

    With ``init``, the network is built in the layout init was trained in (its ``weights_backbone``, unless
    given here) from init's own backbone tensors, so nothing is downloaded; then init's weights are loaded."""
    from persondet.tracking.models import load_detector_weights

    model_name = resolve_model(config.model, cuda=device.type == "cuda")
    if not config.init:
        return Start(model_name, resolve_weights_backbone(config.weights_backbone, model_name),
                     backbone_state(model_name, config.weights_backbone), None, config.min_size, config.max_size)
    where = f"init={config.init!r}"
    info, state = load_detector_weights(config.init)
    trained_as = info.get("model")
    if config.model == "auto" and trained_as:
        model_name = trained_as
    elif trained_as and trained_as != model_name:
        raise PersondetError(f"{where} is a model={trained_as}, this training's is model={model_name}: set "
                             f"model={trained_as} (or auto)")
    given = config.weights_backbone if config.weights_backbone not in ("", "auto") else ""
    layout = resolve_weights_backbone(given or info.get("weights_backbone") or "auto", model_name)
    backbone = None if layout == "none" or model_name == "small" else as_backbone_state(model_name, state, where)
    return Start(model_name, layout, backbone, state, config.min_size or info.get("min_size"),
                 config.max_size or info.get("max_size"))


@dataclass
class Recipe:
    """The detector and what trains it: SGD, the 1x schedule, the AMP scaler (fp16 on CUDA only)."""

    detector: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None


def build_recipe(config: TrainConfig, start: Start, device: torch.device, iters_per_epoch: int) -> Recipe:
    """The detector (the same initial weights on every rank) on ``device`` and its recipe; afterwards each
    rank's RNG is seeded apart (``seed + rank``) for its data order and augmentation."""
    seed_everything(config.seed)
    detector = build_detector(start.model_name, 2, min_size=start.min_size, max_size=start.max_size,
                              backbone=start.backbone)
    if start.init is not None:
        load_detector_state(detector, start.init, f"init={config.init!r}")
    detector.to(device)
    if config.channels_last:
        detector = detector.to(memory_format=torch.channels_last)
    optimizer = engine.make_optimizer(detector, config.learning_rate, config.momentum, config.weight_decay)
    scheduler = engine.make_scheduler(optimizer, config.epochs, iters_per_epoch, config.warmup_iters)
    scaler = engine.make_scaler(config.amp, device)
    seed_everything(config.seed + get_rank())
    return Recipe(detector, optimizer, scheduler, scaler)


def distributed_model(detector: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The module the loop trains: DistributedDataParallel around the detector with several processes."""
    if get_world_size() == 1:
        return detector
    return torch.nn.parallel.DistributedDataParallel(
        detector, device_ids=[device.index] if device.type == "cuda" else None)
