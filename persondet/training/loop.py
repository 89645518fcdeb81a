"""The epoch loop: train, validate, log, checkpoint, then let rank 0's callback decide whether to go on.

Each epoch, in this order: one pass over the data (per-step metrics batched to the run); rank 0's BatchNorm
statistics to every rank; the validation AP (every rank infers its shard of the validation set, rank 0
scores the gathered detections); the epoch's metrics and a synchronous flush, so
the run holds everything up to the checkpoint; the checkpoint (every rank's RNG state gathered, written by
rank 0); last the callback, so a stopped training keeps the checkpoint of its last epoch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from persondet import data as data_mod
from persondet import engine
from persondet.config import TrainConfig
from persondet.distributed import is_distributed, is_main_process
from persondet.tracking import RunHandle
from persondet.training.build import Recipe, TrainingData
from persondet.training.checkpoint import Resumed, checkpoint_state, gather, rng_state, save_checkpoint

STEP_KEYS = ("loss", "loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg", "lr")
EPOCH_KEYS = ("epoch_loss", "val/AP50", "val/AP")
TIMING_WARMUP_ITERS = 5  # iterations of the first epoch (of a run or a resume) left out of the timing

EpochCallback = Callable[[int, dict], None]


class StopRequested(Exception):
    """Rank 0's ``on_epoch_end`` stopped the training; the other ranks stop with this."""


@dataclass
class Progress:
    """Timing summed over the epochs run so far (a resumed training starts from the checkpoint's)."""

    train_time_s: float = 0.0
    timed_seconds: float = 0.0  # iterations after the timing warm-up
    timed_iterations: int = 0
    epoch_metrics: dict[str, float] = field(default_factory=dict)  # the last epoch's

    def timing(self) -> dict[str, float]:
        """What a checkpoint keeps of it."""
        return {"train_time_s": self.train_time_s, "timed_seconds": self.timed_seconds,
                "timed_iterations": self.timed_iterations}


def fit(run: RunHandle, config: TrainConfig, model: torch.nn.Module, recipe: Recipe, data: TrainingData,
        device: torch.device, model_name: str, resumed: Resumed, on_epoch_end: EpochCallback | None,
        stopped: list[BaseException]) -> Progress:
    """Train from ``resumed.start_epoch`` to ``config.epochs`` (see the module docstring for each epoch).

    A callback's exception is appended to ``stopped`` (so the run can end KILLED) and re-raised.
    """
    timing = resumed.timing
    progress = Progress(float(timing.get("train_time_s", 0.0)), float(timing.get("timed_seconds", 0.0)),
                        int(timing.get("timed_iterations", 0)))
    skip = run.last_steps(STEP_KEYS + EPOCH_KEYS) if config.resume else {}
    logger = run.metric_logger(skip=skip)
    try:
        for epoch in range(resumed.start_epoch, config.epochs):
            data_mod.set_epoch(data.loader, epoch)
            started = time.perf_counter()
            stats = engine.train_one_epoch(
                model, recipe.optimizer, data.loader, device, epoch, recipe.scheduler, recipe.scaler,
                amp=config.amp, channels_last=config.channels_last, max_iters=data.iters_per_epoch,
                log_step=logger.log, skip_timing=TIMING_WARMUP_ITERS if epoch == resumed.start_epoch else 0)
            progress.train_time_s += time.perf_counter() - started
            progress.timed_seconds += stats.timed_seconds
            progress.timed_iterations += stats.timed_iterations
            progress.epoch_metrics = {"epoch_loss": stats.mean_loss}
            _sync_buffers(recipe.detector)  # first: every rank validates rank 0's weights
            if data.val_set is not None:
                ap = engine.validate(recipe.detector, data.val_set, device, batch_size=max(data.per_device, 1),
                                     workers=0 if config.decode == "torchvision-cuda" else
                                     data_mod.worker_count(config.workers))
                if ap is not None:  # rank 0
                    progress.epoch_metrics.update({"val/AP50": ap["AP50"], "val/AP": ap["AP"]})
            logger.log(progress.epoch_metrics, step=epoch)
            logger.flush(synchronous=True)  # everything up to this checkpoint is in the run
            rng = gather(rng_state())
            if is_main_process():
                save_checkpoint(checkpoint_state(run, epoch, model_name, data.iters_per_epoch, recipe.detector,
                                                 recipe.optimizer, recipe.scheduler, recipe.scaler, rng,
                                                 progress.timing()), run, config.checkpoint_dir)
            _epoch_callback(on_epoch_end, epoch, progress.epoch_metrics, stopped)
    finally:
        logger.flush(synchronous=True)
    return progress


def _sync_buffers(detector: torch.nn.Module) -> None:
    """Rank 0's BatchNorm statistics to every rank: DDP broadcasts buffers before each forward, so after
    the last step of an epoch each rank still holds statistics of its own last batch."""
    import torch.distributed as dist

    if is_distributed():
        for buffer in detector.buffers():
            dist.broadcast(buffer, src=0)


def _epoch_callback(callback: EpochCallback | None, epoch: int, metrics: dict, stopped: list) -> None:
    """Rank 0 runs the callback; if it raises, every rank stops (the flag is broadcast)."""
    import torch.distributed as dist

    error = None
    if callback is not None and is_main_process():
        try:
            callback(epoch, dict(metrics))
        except BaseException as exc:  # noqa: BLE001 - re-raised below, after telling the other ranks
            error = exc
    if is_distributed():
        flag = [error is not None]
        dist.broadcast_object_list(flag, src=0)
        if flag[0] and error is None:
            raise StopRequested(f"rank 0 stopped the training after epoch {epoch}")
    if error is not None:
        stopped.append(error)
        raise error
