"""``train(config) -> metrics``: one tracked training, read top to bottom as its steps."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
from pathlib import Path
from typing import Iterator

import torch

from persondet.config import TrainConfig
from persondet.distributed import get_rank, get_world_size, is_main_process
from persondet.model_names import REGISTERED_MODEL
from persondet.tracking import RunHandle, hardware_label, open_run, run_name
from persondet.tracking.lease import Lease
from persondet.tracking.models import log_detector
from persondet.training import checkpoint
from persondet.training.build import (Start, TrainingData, build_recipe, distributed_model, hardware, load_data,
                                      process_group, setup_device, starting_point)
from persondet.training.loop import EpochCallback, Progress, StopRequested, fit

LOCAL_ONLY = ("resume", "checkpoint_dir", "device")  # settings of this machine, not of the training


def train(config: TrainConfig, on_epoch_end: EpochCallback | None = None,
          run_id: str | None = None, keep_name: bool = False) -> dict[str, float]:
    """Train one detector as configured; returns the final metrics (rank 0's view).

    The run: the checkpoint's when resuming, else ``run_id`` (a torchrun launcher's or a tune trial's),
    else ``mlflow run``'s or a new one (``tracking.open_run``).  Under torchrun it joins the process group
    first.  The run is named for what it trains (``train coco+cuhk b16 a100x8``), a run given by ``run_id``
    too unless ``keep_name`` (a tune trial); a resumed run keeps its name.  ``on_epoch_end(epoch, metrics)``
    runs on rank 0 after each epoch's checkpoint; an exception from
    it (e.g. optuna.TrialPruned) stops the training, ends the run KILLED and propagates.
    """
    with process_group(config):
        device = setup_device(config)
        start = starting_point(config, device)  # before the data: a backbone download that fails, fails first
        model_name = start.model_name
        data = load_data(config, device)
        recipe = build_recipe(config, start, device, data.iters_per_epoch)
        params = training_params(config, data, start, recipe.detector, device)
        resumed = checkpoint.Resumed()
        if config.resume:
            state = checkpoint.load_checkpoint(config.resume)
            if is_main_process():  # the same training as logged, before anything is loaded or touched
                checkpoint.check_same_training(state["run_id"], params, config.resume)
            resumed = checkpoint.restore(state, config.resume, model_name, data.iters_per_epoch, recipe.detector,
                                         recipe.optimizer, recipe.scheduler, recipe.scaler)
            del state
        model = distributed_model(recipe.detector, device)

        stopped: list[BaseException] = []
        name = run_name("train", mix=data.mix, batch_size=config.batch_size,
                        hardware=hardware_label(*hardware(device)))
        with _training_run(config, resumed, run_id, name, stopped) as run:
            if not config.resume:
                if run_id and not keep_name:
                    run.rename(name)
                run.log_params(params)
            progress = fit(run, config, model, recipe, data, device, model_name, resumed, on_epoch_end, stopped)
            _write_weights_digest(recipe.detector)
            results = final_metrics(progress, config, device)
            run.log_metrics({k: v for k, v in results.items() if k not in progress.epoch_metrics})
            log_model(run, recipe.detector, config, data, device, start)
        return results


@contextlib.contextmanager
def _training_run(config: TrainConfig, resumed: checkpoint.Resumed, run_id: str | None, run_name: str,
                  stopped: list[BaseException]) -> Iterator[RunHandle]:
    """The training's open run, leased to this process for as long as it trains (``tracking.lease``).

    A resume takes the lease before its run is touched: no other training may hold it (its settings were
    checked against the run's before).  Ends KILLED when the epoch callback stopped the training.
    """
    lease = None
    if resumed.run_id and is_main_process():
        lease = Lease(resumed.run_id, f"resume={config.resume!r}").take()
    handle = None
    try:
        with open_run("train", run_id=resumed.run_id or run_id, system_metrics=True, run_name=run_name,
                      stopped=lambda exc: exc in stopped or isinstance(exc, StopRequested)) as handle:
            if handle.run_id is not None:
                lease = lease or Lease(handle.run_id, "train").take(contended=False)
                lease.start()
            yield handle
    finally:
        if lease is not None:
            lease.release(ended=handle is None or handle.ended)


def training_params(config: TrainConfig, data: TrainingData, start: Start, detector: torch.nn.Module,
                    device: torch.device) -> dict:
    """The run's parameters: the config as typed (``model`` stays ``auto``: ``mlflow run`` has logged it
    already) and what the training derived from it, resolved values as ``<name>_resolved`` (the model
    built, its backbone initialisation, its input size)."""
    gpu_type, gpu_count = hardware(device)
    params = {**config.to_params(), "model_resolved": start.model_name,
              "weights_backbone_resolved": start.weights_backbone, **input_size(detector),
              "gpu_type": gpu_type, "gpu_count": gpu_count,
              "batch_size_per_device": data.per_device, "dataset_mix": data.mix, "world_size": get_world_size(),
              "train_images": len(data.train_set), "iters_per_epoch": data.iters_per_epoch}
    for local_only in LOCAL_ONLY:
        params.pop(local_only, None)
    return params


def final_metrics(progress: Progress, config: TrainConfig, device: torch.device) -> dict[str, float]:
    """Training time, time per iteration (after the timing warm-up), images/s, peak GPU memory, and the
    last epoch's metrics."""
    timed_n = progress.timed_iterations
    time_per_iter = progress.timed_seconds / timed_n if timed_n else float("nan")
    results = {"train_time_s": progress.train_time_s, "time_per_iter_s": time_per_iter,
               "images_per_s": config.batch_size / time_per_iter if timed_n else float("nan"),
               **progress.epoch_metrics}
    if device.type == "cuda":
        results["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return results


def input_size(detector: torch.nn.Module) -> dict[str, int]:
    """The resize the detector applies (``min_size`` / ``max_size`` resolved): ``min_size_resolved``, ..."""
    transform = detector.transform
    return {"min_size_resolved": int(transform.min_size[-1]), "max_size_resolved": int(transform.max_size)}


def log_model(run: RunHandle, detector: torch.nn.Module, config: TrainConfig, data: TrainingData,
              device: torch.device, start: Start) -> None:
    """Log the serving module (``PersonDetector``, on CPU) as the run's ``model`` (weights and a description:
    ``tracking.models``); with ``register``, as a new version of the registered model, tagged with what the
    study compares (rank 0 only)."""
    if run.run_id is None:
        return
    from persondet.model import PersonDetector

    gpu_type, gpu_count = hardware(device)
    serving = PersonDetector(copy.deepcopy(detector).cpu().to(memory_format=torch.contiguous_format))
    version = log_detector(run, serving, start.model_name, REGISTERED_MODEL if config.register else None,
                           {"dataset_mix": data.mix, "batch_size": config.batch_size, "gpu_type": gpu_type,
                            "gpu_count": gpu_count, "training_run_id": run.run_id}, start.weights_backbone)
    if version is not None:
        run.set_tags({"persondet.model_version": version})


def _write_weights_digest(detector: torch.nn.Module) -> None:
    """With PERSONDET_WEIGHTS_DIGEST_DIR set, every rank writes a hash of its final weights there
    (rank<r>.sha256): a check that DDP replicas stayed identical."""
    folder = os.environ.get("PERSONDET_WEIGHTS_DIGEST_DIR")
    if not folder:
        return
    digest = hashlib.sha256()
    for name, tensor in sorted(detector.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    Path(folder, f"rank{get_rank()}.sha256").write_text(digest.hexdigest())
