"""The training loop and the 1x recipe (SGD, linear warm-up, LR steps at 8/12 and 11/12 of training)."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Callable, Mapping

import torch

from persondet.distributed import is_distributed, is_main_process
from persondet.errors import PersondetError


class NonFiniteLossError(PersondetError):
    """The loss became NaN or infinite; the message names the iteration."""


def make_optimizer(model: torch.nn.Module, lr: float, momentum: float = 0.9,
                   weight_decay: float = 1e-4) -> torch.optim.SGD:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def lr_milestones(epochs: int) -> list[int]:
    """The 1x schedule's steps (epochs 8 and 11 of 12), scaled to ``epochs``; epochs at the end dropped."""
    steps = sorted({max(1, round(epochs * 8 / 12)), max(1, round(epochs * 11 / 12))})
    return [s for s in steps if s < epochs]


class OneXSchedule:
    """Per-iteration LR factor: linear warm-up from 0.001, then x0.1 at each milestone epoch."""

    def __init__(self, iters_per_epoch: int, milestones: list[int], warmup_iters: int) -> None:
        self.iters_per_epoch = iters_per_epoch
        self.milestones = milestones
        self.warmup_iters = warmup_iters

    def __call__(self, step: int) -> float:
        factor = 0.1 ** sum(step >= m * self.iters_per_epoch for m in self.milestones)
        if step < self.warmup_iters:
            alpha = step / self.warmup_iters
            factor *= 0.001 * (1 - alpha) + alpha
        return factor


def make_scheduler(optimizer, epochs: int, iters_per_epoch: int, warmup_iters: int):
    """LambdaLR stepped once per iteration; warm-up capped at the first epoch (as torchvision's recipe)."""
    warmup = min(warmup_iters, max(iters_per_epoch - 1, 0))
    schedule = OneXSchedule(iters_per_epoch, lr_milestones(epochs), warmup)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def amp_context(amp: str, device: torch.device):
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_scaler(amp: str, device: torch.device):
    """A GradScaler for fp16 on CUDA; bf16 and fp32 need none."""
    if amp == "fp16" and device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None


def to_device(images, targets, device: torch.device):
    # channels_last is set on the model (training.py); torchvision batches [C, H, W] images itself and
    # cuDNN follows the weights' layout, so single images need no conversion (they are rank 3).
    non_blocking = device.type == "cuda"
    batch = []
    for image in images:
        image = image.to(device, non_blocking=non_blocking).float().div_(255.0)
        batch.append(image)
    moved = [{k: (v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v)
              for k, v in t.items()} for t in targets]
    return batch, moved


def _reduce_losses(loss_dict: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Mean over ranks (every rank gets the same numbers, so every rank stops on a NaN together)."""
    names = sorted(loss_dict)
    values = torch.stack([loss_dict[k].detach().float() for k in names])
    if is_distributed():
        import torch.distributed as dist

        dist.all_reduce(values)
        values /= dist.get_world_size()
    out = dict(zip(names, values.tolist()))
    out["loss"] = float(sum(out.values()))
    return out


@dataclass
class EpochStats:
    iterations: int = 0
    loss_sum: float = 0.0
    timed_seconds: float = 0.0  # iterations after the timing warm-up
    timed_iterations: int = 0

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / max(self.iterations, 1)


def train_one_epoch(model, optimizer, data_loader, device: torch.device, epoch: int, scheduler,
                    scaler=None, amp: str = "none", channels_last: bool = False,
                    max_iters: int | None = None, log_step: Callable[[dict, int], None] | None = None,
                    skip_timing: int = 0, progress: bool = True) -> EpochStats:
    """One pass over ``data_loader``; ``log_step(metrics, global_step)`` gets loss, loss_* and lr.

    The global step is ``epoch * iters_per_epoch + i`` (continuous across epochs and resumes).
    The first ``skip_timing`` iterations are left out of the timing (start-up, cudnn autotuning).
    """
    from tqdm import tqdm

    model.train()
    iters = len(data_loader) if max_iters is None else min(max_iters, len(data_loader))
    stats = EpochStats()
    bar = tqdm(total=iters, desc=f"epoch {epoch}", disable=not (progress and is_main_process()),
               leave=False, mininterval=2.0)
    start = time.perf_counter()
    for i, (images, targets) in enumerate(data_loader):
        if i >= iters:
            break
        step = epoch * iters + i
        images, targets = to_device(images, targets, device)
        with amp_context(amp, device):
            loss_dict = model(images, targets)
        losses = sum(loss_dict.values())
        reduced = _reduce_losses(loss_dict)
        if not math.isfinite(reduced["loss"]):
            bar.close()
            raise NonFiniteLossError(
                f"loss is {reduced['loss']} at iteration {step} (epoch {epoch}, batch {i}): training "
                "stopped; the last good checkpoint is kept (try a lower lr or amp=none)")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(losses).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            losses.backward()
            optimizer.step()
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        now = time.perf_counter()  # .tolist() above synchronised with the device
        if i >= skip_timing:
            stats.timed_seconds += now - start
            stats.timed_iterations += 1
        start = now
        stats.iterations += 1
        stats.loss_sum += reduced["loss"]
        if log_step is not None:
            log_step({**reduced, "lr": lr}, step)
        bar.update(1)
        bar.set_postfix(loss=f"{reduced['loss']:.3f}", refresh=False)
    bar.close()
    return stats


def validate(detector, dataset, device: torch.device, batch_size: int = 4, workers: int = 0) -> dict | None:
    """COCO metrics (AP50 first) of ``detector`` on a ``PersonDataset`` (its person category): every rank
    infers its shard through the one inference path (``inference.run_validation``) and global rank 0
    scores them all; None on the other ranks."""
    from persondet.inference import ImageFiles, run_validation
    from persondet.metrics import coco_metrics

    return run_validation(detector, ImageFiles.of_dataset(dataset), device, batch_size, dataset.category_id,
                          lambda detections: coco_metrics(dataset.dataset, detections, dataset.category_id),
                          workers=workers)
