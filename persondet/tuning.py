"""The `tune` step: an optuna study over the learning rate, the batch size and the CUHK-SYSU:COCO ratio.

Storage: a SQLite file by default; a PostgreSQL URL lets many workers (processes, machines) share one
study -- each runs ``n_trials`` trials.  Every trial is one training (``training.train``) logged as a
nested MLflow run of this worker's parent ``tune`` run; its per-epoch validation AP50 feeds optuna's
MedianPruner, which stops hopeless trials (their runs end KILLED and are tagged PRUNED).  Trials send
heartbeats; a trial whose worker died goes stale and is re-run with the same parameters
(RetryFailedTrialCallback) by the next worker that starts a trial.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from persondet.config import PrepareConfig, TrainConfig, TuneConfig
from persondet.errors import PersondetError
from persondet.server import database_uri, read_secret, redact
from persondet.tracking import RunHandle, create_run, open_run

DEFAULT_STORAGE = "sqlite:///optuna.db"
ENV_STORAGE = "PERSONDET_TUNE_STORAGE"
# The storage's password, never in the URL (a parameter and a command line are readable by everyone):
# this variable, or the file named by PERSONDET_TUNE_STORAGE_PASSWORD_FILE, or libpq's own PGPASSWORD,
# PGPASSFILE or ~/.pgpass.
ENV_STORAGE_PASSWORD = "PERSONDET_TUNE_STORAGE_PASSWORD"
OBJECTIVE = "val/AP50"


def resolve_storage(storage: str) -> str:
    return database_uri(storage or os.environ.get(ENV_STORAGE) or DEFAULT_STORAGE)


def open_storage(config: TuneConfig):
    """An optuna RDBStorage with heartbeats and retry of stale trials."""
    from optuna import storages

    url = resolve_storage(config.storage)
    engine_kwargs = {} if url.startswith("sqlite") else {"pool_pre_ping": True}
    password = read_secret(os.environ, ENV_STORAGE_PASSWORD)
    if password and not url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"password": password}
    if hasattr(storages, "RetryHeartbeatStaleTrialCallback"):  # optuna >= 4.9
        retry = {"heartbeat_stale_trial_callback": storages.RetryHeartbeatStaleTrialCallback(config.max_retry)}
    else:
        retry = {"failed_trial_callback": storages.RetryFailedTrialCallback(config.max_retry)}
    for attempt in range(3):
        try:
            return storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                       heartbeat_interval=config.heartbeat_interval,
                                       grace_period=config.grace_period, **retry)
        except Exception as exc:  # noqa: BLE001 - bad URL, missing driver, unreachable database
            # Workers starting together on an empty database race to create the schema; the loser's
            # next attempt finds it in place.
            if attempt == 2:
                reason = " ".join(str(exc).split())[:200]
                raise PersondetError(f"storage={redact(url)!r} cannot be opened: {reason}") from None
            time.sleep(1.0 + attempt)
    raise AssertionError("unreachable")


def suggest(trial, config: TuneConfig) -> dict[str, Any]:
    """The search space; returns the TrainConfig settings of this trial."""
    lr = trial.suggest_float("lr", config.lr_min, config.lr_max, log=True)
    batch_size = trial.suggest_categorical("batch_size", config.batch_size_list())
    ratio = trial.suggest_float("cuhk_ratio", config.cuhk_ratio_min, config.cuhk_ratio_max, log=True)
    return {"lr": lr, "batch_size": batch_size, "source_weights": f"coco=1,cuhk={ratio:.4g}"}


def resolve_data(config: TuneConfig) -> tuple[str, str, str]:
    """(data, val_annotations, val_images); empty settings mean the built-in demo data (prepared in a run
    of its own, nested under the tune run open in this process)."""
    data, val_annotations, val_images = config.data, config.val_annotations, config.val_images
    if not data or not val_annotations:
        from persondet.synth import ensure_demo_data

        demo = ensure_demo_data()
        if not val_annotations:
            coco = Path(demo.coco_root)
            val_annotations = str(coco / "annotations" / "instances_val2017.json")
            val_images = str(coco / "val2017")
        if not data:
            from persondet.prepare import prepare

            data = str(prepare(PrepareConfig()).run_id)
    return data, val_annotations, val_images


def retried_trial_number(trial) -> int | None:
    """The number of the stale trial this one re-runs (None for a fresh trial)."""
    from optuna.trial import TrialState

    for frozen in trial.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if frozen.number == trial.number:
            return frozen.system_attrs.get("failed_trial")
    return None


class Objective:
    """One trial: one nested training run, pruned on its per-epoch validation AP50."""

    def __init__(self, config: TuneConfig, parent: RunHandle, data: str, val_annotations: str, val_images: str):
        self.config, self.parent = config, parent
        self.data, self.val_annotations, self.val_images = data, val_annotations, val_images

    def train_config(self, settings: dict[str, Any], seed: int) -> TrainConfig:
        c = self.config
        return TrainConfig(
            data=self.data, val_annotations=self.val_annotations, val_images=self.val_images,
            model=c.model, weights_backbone=c.weights_backbone, epochs=c.epochs,
            max_iters_per_epoch=c.max_iters_per_epoch, workers=c.workers,
            register=False, seed=seed, raw={"lr": f"{settings['lr']:.6g}"}, **settings)

    def __call__(self, trial) -> float:
        import optuna

        from persondet.training import train

        settings = suggest(trial, self.config)
        train_config = self.train_config(settings, seed=trial.number)
        retry_of = retried_trial_number(trial)
        if retry_of is not None:  # the stale trial's worker died: close its run for it
            stale = trial.study.get_trials(deepcopy=False)[retry_of]
            stale_run = RunHandle(stale.user_attrs.get("mlflow_run_id"))
            stale_run.set_tags({"persondet.trial_state": "STALE"})
            stale_run.end_if_running("FAILED")
        run = create_run(
            "train", parent=self.parent, run_name=f"{self.config.study_name} trial {trial.number}",
            tags={"persondet.study": self.config.study_name, "persondet.trial_number": trial.number,
                  **({"persondet.retry_of_trial": retry_of} if retry_of is not None else {})})
        trial.set_user_attr("mlflow_run_id", run.run_id)

        def on_epoch_end(epoch: int, metrics: dict) -> None:
            if OBJECTIVE not in metrics:
                raise PersondetError(f"the training logged no {OBJECTIVE}: tune needs a validation set")
            trial.report(metrics[OBJECTIVE], step=epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"trial {trial.number} pruned after epoch {epoch}: "
                                         f"{OBJECTIVE}={metrics[OBJECTIVE]:.4f} is below the median")

        state = "FAIL"
        try:
            results = train(train_config, on_epoch_end=on_epoch_end, run_id=run.run_id, keep_name=True)
            state = "COMPLETE"
        except optuna.TrialPruned:
            state = "PRUNED"
            raise
        finally:
            run.set_tags({"persondet.trial_state": state})
            if state != "COMPLETE":  # train opened and ended it, unless it failed before that
                run.end_if_running("KILLED" if state == "PRUNED" else "FAILED")
        return float(results[OBJECTIVE])


def _summary(study) -> dict[str, Any]:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): sum(t.state == state for t in trials)
              for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    summary: dict[str, Any] = {"study_name": study.study_name, "trials": len(trials), **counts}
    if counts["complete"]:
        best = study.best_trial
        summary.update(best_value=best.value, best_params=dict(best.params), best_trial=best.number,
                       best_run_id=best.user_attrs.get("mlflow_run_id", ""))
    return summary


def tune(config: TuneConfig) -> dict[str, Any]:
    """Run ``config.n_trials`` trials of the study (joining it when it exists); returns its summary."""
    import optuna
    import torch

    from persondet.model import check_backbone
    from persondet.model_names import resolve_model

    check_backbone(resolve_model(config.model, cuda=torch.cuda.is_available()), config.weights_backbone)
    storage = open_storage(config)
    shown_storage = redact(resolve_storage(config.storage))
    try:
        study = optuna.create_study(
            storage=storage, study_name=config.study_name, direction="maximize",
            load_if_exists=config.load_if_exists, sampler=optuna.samplers.TPESampler(seed=config.seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=config.pruner_startup_trials,
                                               n_warmup_steps=config.pruner_warmup_epochs))
    except optuna.exceptions.DuplicatedStudyError:
        raise PersondetError(f"study_name={config.study_name!r} already exists in "
                             f"{shown_storage}: set load_if_exists=true to join it")

    tags = {"persondet.study": config.study_name, "persondet.worker": f"{socket.gethostname()}:{os.getpid()}",
            "persondet.storage": shown_storage}
    with open_run("tune", run_name=f"tune {config.study_name}", tags=tags) as parent:
        data, val_annotations, val_images = resolve_data(config)
        parent.log_params({**config.to_params(), "data": data, "val_annotations": val_annotations,
                           "val_images": val_images})
        objective = Objective(config, parent, data, val_annotations, val_images)
        try:
            study.optimize(objective, n_trials=config.n_trials, gc_after_trial=True, show_progress_bar=True)
        finally:
            summary = _summary(study)
            parent.log_metrics({f"trials_{k}": summary[k] for k in ("complete", "pruned", "fail")})
            if "best_value" in summary:
                parent.log_metrics({"best_val_AP50": summary["best_value"]})
                parent.log_params({f"best_{k}": v for k, v in summary["best_params"].items()})
                parent.set_tags({"persondet.best_trial": summary["best_trial"],
                                 "persondet.best_run_id": summary["best_run_id"]})
    summary["parent_run_id"] = parent.run_id
    return summary
