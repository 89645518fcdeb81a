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
from persondet.distributed import get_rank, get_world_size
from persondet.errors import PersondetError
from persondet.model import build_detector
from persondet.training.checkpoint import seed_everything


def resolve_device(config: TrainConfig) -> torch.device:
    """``device`` as configured (auto: CUDA when visible); this process's GPU is LOCAL_RANK's."""
    want = config.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda":
        if not torch.cuda.is_available():
            raise PersondetError("device=cuda but no CUDA device is visible (torch.cuda.is_available() is False)")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


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
class Recipe:
    """The detector and what trains it: SGD, the 1x schedule, the AMP scaler (fp16 on CUDA only)."""

    detector: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None


def build_recipe(config: TrainConfig, model_name: str, device: torch.device, iters_per_epoch: int) -> Recipe:
    """The detector (the same initial weights on every rank) on ``device`` and its recipe; afterwards each
    rank's RNG is seeded apart (``seed + rank``) for its data order and augmentation."""
    seed_everything(config.seed)
    detector = build_detector(model_name, 2, config.weights_backbone, config.min_size, config.max_size)
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
