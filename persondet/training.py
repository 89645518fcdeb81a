"""The `train` step: one tracked training, single process or torch.distributed (torchrun).

``launch(config)`` is what the entry point calls: one process runs ``train`` directly; ``nproc > 1`` or
``nnodes > 1`` starts ``python -m torch.distributed.run ... -m persondet.training`` whose workers run
``train`` too. Exactly one MLflow run per training: the launcher creates it (or ``mlflow run`` did, or
``resume`` names it) and global rank 0 is the only process that talks to MLflow.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from persondet import REGISTERED_MODEL_NAME, tracking
from persondet.config import TrainConfig, parse_source_weights
from persondet.distributed import get_rank, get_world_size, is_distributed, is_main_process
from persondet.errors import PersondetError

ENV_CONFIG = "PERSONDET_TRAIN_CONFIG"  # the config, as JSON, for torchrun's workers
ENV_RESULT = "PERSONDET_TRAIN_RESULT"  # where rank 0 writes its metrics (or its error) for the launcher
CHECKPOINT = "last.pt"
STEP_KEYS = ("loss", "loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg", "lr")
EPOCH_KEYS = ("epoch_loss", "val/AP50", "val/AP")
TIMING_WARMUP_ITERS = 5

EpochCallback = Callable[[int, dict], None]


class StopRequested(Exception):
    """Rank 0's ``on_epoch_end`` stopped the training; the other ranks stop with this."""


def resolve_model(config: TrainConfig, device: torch.device) -> str:
    if config.model != "auto":
        return config.model
    return "fasterrcnn_resnet50_fpn" if device.type == "cuda" else "small"


def resolve_device(config: TrainConfig) -> torch.device:
    want = config.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda":
        if not torch.cuda.is_available():
            raise PersondetError("device=cuda but no CUDA device is visible (torch.cuda.is_available() is False)")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def _seed_everything(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    import numpy as np

    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np

    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _gather(obj: Any) -> list[Any]:
    import torch.distributed as dist

    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def load_checkpoint(resume: str) -> dict[str, Any]:
    """``resume`` is a checkpoint file or a training run id (its artifact ``checkpoints/last.pt``)."""
    path = Path(resume).expanduser()
    if not path.is_file():
        fetched = tracking.download_run_artifact(resume, f"checkpoints/{CHECKPOINT}", tempfile.mkdtemp())
        if fetched is None:
            raise PersondetError(f"resume={resume!r} is neither a checkpoint file nor a training run "
                                 f"with an artifact checkpoints/{CHECKPOINT}")
        path = Path(fetched)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - a damaged file is the user's input
        raise PersondetError(f"resume: {path} is not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != 1:
        raise PersondetError(f"resume: {path} is not a persondet training checkpoint")
    return checkpoint


def _save_checkpoint(state: dict[str, Any], checkpoint_dir: str) -> None:
    """Write, log as ``checkpoints/last.pt``, then (atomically) place in ``checkpoint_dir``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / CHECKPOINT
        torch.save(state, path)
        tracking.log_checkpoint(str(path))
        if checkpoint_dir:
            target = Path(checkpoint_dir)
            target.mkdir(parents=True, exist_ok=True)
            partial = target / f".{CHECKPOINT}.partial"
            shutil.copyfile(path, partial)
            os.replace(partial, target / CHECKPOINT)


def _hardware(device: torch.device, world_size: int) -> tuple[str, int]:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device), world_size
    return "cpu", 0


def train(config: TrainConfig, on_epoch_end: EpochCallback | None = None) -> dict[str, float]:
    """Train one detector as configured; returns the final metrics (rank 0's view).

    Under torchrun (WORLD_SIZE > 1 in the environment) it joins the process group (nccl on GPU, gloo
    on CPU). ``on_epoch_end(epoch, metrics)`` runs on rank 0 after each epoch's checkpoint; an
    exception from it (e.g. optuna.TrialPruned) stops training, ends the run KILLED and propagates.
    """
    import torch.distributed as dist

    created_group = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        device = resolve_device(config)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        created_group = True
    try:
        return _train(config, on_epoch_end)
    finally:
        if created_group:
            dist.destroy_process_group()


def _train(config: TrainConfig, on_epoch_end: EpochCallback | None) -> dict[str, float]:
    from persondet import data as data_mod
    from persondet import engine
    from persondet.model import PersonDetector, build_detector

    rank, world = get_rank(), get_world_size()
    device = resolve_device(config)
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    dataset, json_path = data_mod.load_prepared(config.data)
    meta = dataset.get("persondet") or {}
    dataset_mix = str(meta.get("mix") or "custom")
    train_set = data_mod.PersonDataset(dataset, json_path.parent, train=True, seed=config.seed,
                                       decode=config.decode, where=str(json_path))
    if len(train_set) == 0:
        raise PersondetError(f"data={config.data!r}: the training set has no images")
    per_device = config.batch_size // world
    loader = data_mod.make_loader(
        train_set, per_device, world, rank, seed=config.seed,
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

    model_name = resolve_model(config, device)
    _seed_everything(config.seed)  # the same initial weights on every rank
    detector = build_detector(model_name, 2, config.weights_backbone, config.min_size, config.max_size)
    detector.to(device)
    if config.channels_last:
        detector = detector.to(memory_format=torch.channels_last)
    optimizer = engine.make_optimizer(detector, config.learning_rate, config.momentum, config.weight_decay)
    scheduler = engine.make_scheduler(optimizer, config.epochs, iters_per_epoch, config.warmup_iters)
    scaler = engine.make_scaler(config.amp, device)
    _seed_everything(config.seed + rank)

    start_epoch, run_id, timing = 0, os.environ.get("MLFLOW_RUN_ID") or None, {}
    if config.resume:
        checkpoint = load_checkpoint(config.resume)
        if checkpoint["model_name"] != model_name or checkpoint["iters_per_epoch"] != iters_per_epoch:
            raise PersondetError(
                f"resume={config.resume!r}: the checkpoint is of model={checkpoint['model_name']} with "
                f"{checkpoint['iters_per_epoch']} iterations per epoch; this training has "
                f"model={model_name} with {iters_per_epoch}: resume with the same settings")
        detector.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        if scaler is not None and checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        if len(checkpoint["rng"]) == world:
            _set_rng_state(checkpoint["rng"][rank])
        start_epoch, run_id, timing = checkpoint["epoch"] + 1, checkpoint["run_id"], checkpoint["timing"]

    model = detector
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            detector, device_ids=[device.index] if device.type == "cuda" else None)

    gpu_type, gpu_count = _hardware(device, world)
    # `model` stays as typed (mlflow run has logged it already); "auto" is resolved in model_resolved.
    params = {**config.to_params(), "model_resolved": model_name, "gpu_type": gpu_type, "gpu_count": gpu_count,
              "batch_size_per_device": per_device, "dataset_mix": dataset_mix, "world_size": world,
              "train_images": len(train_set), "iters_per_epoch": iters_per_epoch}
    for local_only in ("resume", "checkpoint_dir", "device"):
        params.pop(local_only, None)
    run_name = f"train-{model_name}-{dataset_mix}-bs{config.batch_size}"
    stopped: list[BaseException] = []

    with tracking.training_run(run_id=run_id, run_name=run_name,
                               is_stop=lambda exc: exc in stopped or isinstance(exc, StopRequested)) as run:
        this_run = run.info.run_id if run is not None else None
        if this_run and not config.resume:
            tracking.log_params(params)
        skip = tracking.metric_last_steps(this_run, STEP_KEYS + EPOCH_KEYS) if (this_run and config.resume) else {}
        logger = tracking.MetricLogger(this_run, skip=skip)
        train_time = float(timing.get("train_time_s", 0.0))
        timed_s = float(timing.get("timed_seconds", 0.0))
        timed_n = int(timing.get("timed_iterations", 0))
        epoch_metrics: dict[str, float] = {}
        try:
            for epoch in range(start_epoch, config.epochs):
                data_mod.set_epoch(loader, epoch)
                started = time.perf_counter()
                stats = engine.train_one_epoch(
                    model, optimizer, loader, device, epoch, scheduler, scaler, amp=config.amp,
                    channels_last=config.channels_last, max_iters=iters_per_epoch, log_step=logger.log,
                    skip_timing=TIMING_WARMUP_ITERS if epoch == start_epoch else 0)
                train_time += time.perf_counter() - started
                timed_s, timed_n = timed_s + stats.timed_seconds, timed_n + stats.timed_iterations
                epoch_metrics = {"epoch_loss": stats.mean_loss}
                if val_set is not None and is_main_process():
                    ap = engine.evaluate_ap(detector, val_set, device, batch_size=max(per_device, 1))
                    epoch_metrics.update({"val/AP50": ap["AP50"], "val/AP": ap["AP"]})
                _sync_buffers(detector)
                logger.log(epoch_metrics, step=epoch)
                logger.flush(synchronous=True)  # everything up to this checkpoint is in the run
                rng = _gather(_rng_state())
                timing = {"train_time_s": train_time, "timed_seconds": timed_s, "timed_iterations": timed_n}
                if is_main_process():
                    _save_checkpoint({
                        "format": 1, "run_id": this_run, "epoch": epoch, "model_name": model_name,
                        "iters_per_epoch": iters_per_epoch, "world_size": world,
                        "model": detector.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict() if scaler is not None else None,
                        "rng": rng, "timing": timing}, config.checkpoint_dir)
                _epoch_callback(on_epoch_end, epoch, epoch_metrics, stopped)
        finally:
            logger.flush(synchronous=True)

        _write_weights_digest(detector)
        time_per_iter = timed_s / timed_n if timed_n else float("nan")
        results = {"train_time_s": train_time, "time_per_iter_s": time_per_iter,
                   "images_per_s": config.batch_size / time_per_iter if timed_n else float("nan"),
                   **epoch_metrics}
        if device.type == "cuda":
            results["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        tracking.log_metrics({k: v for k, v in results.items() if k not in epoch_metrics})
        if is_main_process():
            serving = PersonDetector(copy.deepcopy(detector).cpu().to(memory_format=torch.contiguous_format))
            example = torch.zeros((1, 64, 64, 3), dtype=torch.uint8)
            version = tracking.log_detector(
                serving, example.numpy(), serving(example).numpy(),
                REGISTERED_MODEL_NAME if config.register else None,
                {"dataset_mix": dataset_mix, "batch_size": config.batch_size, "gpu_type": gpu_type,
                 "gpu_count": gpu_count, "training_run_id": this_run})
            if version is not None:
                tracking.set_tags({"persondet.model_version": version})
    return results


def _sync_buffers(detector: torch.nn.Module) -> None:
    """Rank 0's BatchNorm statistics to every rank: DDP broadcasts buffers before each forward, so after
    the last step of an epoch each rank still holds statistics of its own last batch."""
    import torch.distributed as dist

    if is_distributed():
        for buffer in detector.buffers():
            dist.broadcast(buffer, src=0)


def _write_weights_digest(detector: torch.nn.Module) -> None:
    """With PERSONDET_WEIGHTS_DIGEST_DIR set, every rank writes a hash of its final weights there
    (rank<r>.sha256): a check that DDP replicas stayed identical."""
    import hashlib

    folder = os.environ.get("PERSONDET_WEIGHTS_DIGEST_DIR")
    if not folder:
        return
    digest = hashlib.sha256()
    for name, tensor in sorted(detector.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    Path(folder, f"rank{get_rank()}.sha256").write_text(digest.hexdigest())


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config_json(config: TrainConfig) -> str:
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "raw"}
    return json.dumps({"values": values, "raw": dict(config.raw)})


def _config_from_json(text: str) -> TrainConfig:
    payload = json.loads(text)
    return TrainConfig(raw=payload["raw"], **payload["values"])


def launch(config: TrainConfig) -> dict[str, Any]:
    """Run the training: in this process, or through torchrun when nproc * nnodes > 1."""
    tracking.check_may_train(REGISTERED_MODEL_NAME if config.register else None)
    if config.nproc * config.nnodes == 1:
        return train(config)
    port = config.master_port or (_free_port() if config.nnodes == 1 else 29500)
    env = dict(os.environ)
    run_id = None
    if config.node_rank == 0 and not config.resume:
        run_id = os.environ.get("MLFLOW_RUN_ID") or tracking.create_training_run()
        env["MLFLOW_RUN_ID"] = run_id
    with tempfile.TemporaryDirectory() as tmp:
        result_file = Path(tmp) / "result.json"
        env[ENV_CONFIG] = _config_json(config)
        env[ENV_RESULT] = str(result_file)
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={config.nproc}",
                   f"--nnodes={config.nnodes}", f"--node-rank={config.node_rank}",
                   f"--master-addr={config.master_addr}", f"--master-port={port}",
                   "-m", "persondet.training"]
        code = subprocess.run(command, env=env).returncode
        result = json.loads(result_file.read_text()) if result_file.exists() else {}
    if code != 0 or "error" in result:
        if run_id:
            tracking.end_run_if_running(run_id, "FAILED")
        if result.get("error"):
            raise PersondetError(result["error"])
        raise PersondetError(f"the training processes failed (torchrun exit status {code}); "
                             "the first error is printed above")
    return result.get("metrics", {})


def _worker_main() -> int:
    """A torchrun worker: the config comes from the launcher's environment."""
    result_path = os.environ.get(ENV_RESULT)
    try:
        metrics = train(_config_from_json(os.environ[ENV_CONFIG]))
    except PersondetError as exc:
        message = " ".join(str(exc).split())
        if is_main_process():
            print(f"persondet: error: {message}", file=sys.stderr)
            if result_path:
                Path(result_path).write_text(json.dumps({"error": message}))
        return 2
    if result_path and is_main_process():
        Path(result_path).write_text(json.dumps({"metrics": metrics}))
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main())
