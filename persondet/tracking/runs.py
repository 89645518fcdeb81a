"""The run a step logs to: one explicit handle, opened new, resumed or nested, ended with its status.

A step opens its run with ``open_run`` and passes the ``RunHandle`` to the library functions that log.
Which run is opened:

1. ``run_id`` when the caller gives one: a training resumed from its checkpoint, the run a torchrun
   launcher created for its workers, a trial run its ``tune`` parent created (``create_run``);
2. else the run ``mlflow run`` created for this process (``MLFLOW_RUN_ID``).  ``launcher_run_id`` is the
   one place that reads it, and it consumes it (as MLflow's own ``start_run`` does), so a second step
   opened by the same process (``tune`` preparing its demo data) gets a run of its own;
3. else a new run in the experiment (MLFLOW_EXPERIMENT_NAME, else ``persondet``).  A new run opened while
   another run of this process is open is nested under it.

While open, the handle's run is also MLflow's active run, so MLflow's run-scoped APIs (system metrics,
``mlflow.pyfunc.log_model``, ``mlflow.projects.run``'s child runs) see the same run; the handle itself logs
through the client with its explicit run id.  The run ends FINISHED, FAILED on an error, or KILLED when
``stopped(exc)`` says the error was a requested stop (a pruned optuna trial).  A tracking server that stays
away longer than MLflow's retries is one ``tracking_error`` line, wherever the step met it; a run it could
not end is ended later by the run guard of a training (``tracking.lease``).

``is_main_process()`` is the one gate: on every other rank a handle has no run and does nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import time
from typing import Any, Callable, Iterable, Iterator, Mapping

from persondet.distributed import is_main_process
from persondet.errors import PersondetError
from persondet.tracking.store import (client, experiment_id, is_unreachable, mark_experiment, opened_store_uri,
                                      tracking_error)

ENTRY_POINT_TAG = "persondet.entry_point"
DATASET_DIGEST_CHARS = 32  # the tracking store keeps at most 36 characters of a dataset digest


def launcher_run_id() -> str | None:
    """The run ``mlflow run`` created for this process (MLFLOW_RUN_ID), removed from the environment."""
    return os.environ.pop("MLFLOW_RUN_ID", None) or None


def launcher_run_pending() -> bool:
    """Whether ``mlflow run`` created a run for this process that no step has opened yet."""
    return bool(os.environ.get("MLFLOW_RUN_ID"))


def same_logged_param(logged: str | None, value: Any) -> bool:
    """Whether a logged parameter holds ``value``. ``mlflow run`` logs entry-point parameters shell-quoted
    (``''`` for an empty string, ``'/a b'`` for a path with a space)."""
    if logged is None:
        return False
    value = str(value)
    if logged == value:
        return True
    try:
        unquoted = shlex.split(logged)
    except ValueError:
        return False
    return unquoted == [value] or (value == "" and unquoted == [])


VENDOR_WORDS = ("nvidia", "tesla", "geforce", "quadro")


def hardware_label(gpu_type: str, gpu_count: int) -> str:
    """What a training ran on, short: ``cpu``, or the GPU model and count (``NVIDIA A100-SXM4-80GB`` x 8:
    ``a100x8``; ``NVIDIA GeForce RTX 4090`` x 1: ``rtx4090x1``)."""
    if gpu_count <= 0 or gpu_type.lower() == "cpu":
        return "cpu"
    words = [w for w in gpu_type.lower().replace("-", " ").split() if w not in VENDOR_WORDS]
    model = []
    for word in words:  # up to the first word with a digit: the model number
        model.append(word)
        if any(ch.isdigit() for ch in word):
            break
    return f"{''.join(model) or 'gpu'}x{gpu_count}"


def run_name(entry_point: str, *, mix: str = "", batch_size: int | None = None, hardware: str = "",
             model: str = "", test_name: str = "") -> str:
    """The name a step's run shows in the MLflow UI, saying what it is: ``train coco+cuhk b16 a100x8``,
    ``evaluate <training run name> on inhouse``, ``prepare coco+cuhk``, else the entry point."""
    if entry_point == "train":
        return f"train {mix} b{batch_size} {hardware}"
    if entry_point == "evaluate":
        return f"evaluate {model} on {test_name}"
    if entry_point == "prepare":
        return f"prepare {mix}"
    return entry_point


def _text(values: Mapping[str, Any] | None) -> dict[str, str]:
    return {key: str(value) for key, value in (values or {}).items()}


class RunHandle:
    """One MLflow run, by id; every method does nothing when there is no run (a rank other than 0)."""

    def __init__(self, run_id: str | None) -> None:
        self.run_id = run_id if run_id and is_main_process() else None
        self.ended = False  # set by open_run once the run's status is stored

    def __repr__(self) -> str:
        return f"RunHandle({self.run_id!r})"

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log ``params``, leaving out those the run already holds with the same value (under ``mlflow
        run`` the project logged every entry-point parameter already, quoted)."""
        if self.run_id is None:
            return
        from mlflow.entities import Param

        logged = client().get_run(self.run_id).data.params
        new = [Param(key, str(value)) for key, value in params.items()
               if not same_logged_param(logged.get(key), value)]
        if new:
            client().log_batch(self.run_id, params=new)

    def rename(self, name: str) -> None:
        """Give the run the name the UI shows."""
        if self.run_id is not None:
            client().update_run(self.run_id, name=name)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log ``metrics`` at ``step`` (0 when None), synchronously."""
        if self.run_id is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        client().log_batch(self.run_id, metrics=[Metric(key, float(value), now, step or 0)
                                                 for key, value in metrics.items()])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set ``tags`` (values as strings: a tracking server accepts no other)."""
        if self.run_id is None:
            return
        from mlflow.entities import RunTag

        client().log_batch(self.run_id, tags=[RunTag(k, v) for k, v in _text(tags).items()])

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        """Upload one file under ``artifact_path``."""
        if self.run_id is not None:
            client().log_artifact(self.run_id, path, artifact_path)

    def log_artifacts(self, directory: str, artifact_path: str | None = None) -> None:
        """Upload a folder's contents under ``artifact_path``."""
        if self.run_id is not None:
            client().log_artifacts(self.run_id, directory, artifact_path)

    def log_dataset_input(self, name: str, digest: str, source_uri: str, context: str) -> None:
        """Record a dataset as a run input: name, where it came from, and its digest.

        The store keeps a 32-character prefix of the sha256 as the dataset digest; the full digest is the
        input tag ``persondet.digest``.
        """
        if self.run_id is None:
            return
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        dataset = Dataset(name=name, digest=digest[:DATASET_DIGEST_CHARS], source_type="local",
                          source=json.dumps({"uri": source_uri}))
        tags = [InputTag(MLFLOW_DATASET_CONTEXT, context), InputTag("persondet.digest", digest)]
        client().log_inputs(self.run_id, datasets=[DatasetInput(dataset, tags)])

    def metric_logger(self, skip: Mapping[str, int] | None = None) -> "MetricLogger":
        """A batching, asynchronous logger of per-step metrics to this run."""
        return MetricLogger(self.run_id, skip=skip)

    def last_steps(self, keys: Iterable[str]) -> dict[str, int]:
        """The highest step already logged for each key (a resumed training skips those steps)."""
        if self.run_id is None:
            return {}
        last = {}
        for key in keys:
            history = client().get_metric_history(self.run_id, key)
            if history:
                last[key] = max(m.step for m in history)
        return last

    def end_if_running(self, status: str) -> None:
        """Mark the run ended with ``status`` unless it already is: a run whose process died (torchrun
        workers, a crashed tune worker) and that no ``open_run`` will end."""
        if self.run_id is None:
            return
        c = client()
        try:
            running = c.get_run(self.run_id).info.status == "RUNNING"
        except Exception:  # noqa: BLE001 - a run that does not exist needs no ending
            return
        if running:
            c.set_terminated(self.run_id, status)


@contextlib.contextmanager
def open_run(entry_point: str, *, run_id: str | None = None, run_name: str | None = None,
             tags: Mapping[str, Any] | None = None, system_metrics: bool = False,
             stopped: Callable[[BaseException], bool] = lambda exc: False) -> Iterator[RunHandle]:
    """Open this step's run (see the module docstring for which one), tagged with its entry point.

    ``run_name`` names a new run or ``mlflow run``'s; a run given by ``run_id`` keeps its name.
    ``system_metrics`` samples CPU, memory and GPU (nvidia-ml-py) while the run is open.
    """
    if not is_main_process():
        yield RunHandle(None)
        return
    import mlflow

    opened_store_uri()
    all_tags = {ENTRY_POINT_TAG: entry_point, **_text(tags)}
    sample = True if system_metrics else None  # None: MLflow's default (MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING)
    try:
        nested = mlflow.active_run() is not None
        existing = run_id
        if existing is None:
            existing = launcher_run_id()
        else:
            run_name = None
        if existing:  # created by `mlflow run` (or a launcher) in an experiment persondet may not have made
            mark_experiment(client().get_experiment(client().get_run(existing).info.experiment_id))
            run = mlflow.start_run(run_id=existing, run_name=run_name, tags=all_tags, nested=nested,
                                   log_system_metrics=sample)
        else:
            parent = mlflow.active_run()
            experiment = parent.info.experiment_id if parent is not None else experiment_id()
            run = mlflow.start_run(experiment_id=experiment, run_name=run_name, tags=all_tags, nested=nested,
                                   log_system_metrics=sample)
    except Exception as exc:  # noqa: BLE001 - MlflowException or a requests error: name the store
        raise tracking_error(exc) from None
    status, handle, failed = "FAILED", RunHandle(run.info.run_id), False
    try:
        yield handle
        status = "FINISHED"
    except BaseException as exc:
        status, failed = ("KILLED" if stopped(exc) else "FAILED"), True
        _end(handle, status, failed)
        if not isinstance(exc, PersondetError) and is_unreachable(exc):
            raise tracking_error(exc) from None
        raise
    _end(handle, status, failed)


def _end(handle: RunHandle, status: str, failed: bool) -> None:
    """End the active run with ``status``.  When the tracking server is away (its retries spent), the run
    stays as the server has it (the run guard ends it later, ``tracking.lease``) and, unless the step already
    failed with an error of its own, the step fails with the one-line tracking error."""
    import mlflow

    try:
        mlflow.flush_async_logging()
        mlflow.end_run(status)
        handle.ended = True
    except Exception as exc:  # noqa: BLE001 - requests / MlflowException: the server, by now
        _stop_system_metrics(handle.run_id)
        if not failed:
            raise tracking_error(exc) from None


def _stop_system_metrics(run_id: str | None) -> None:
    """Stop the system-metrics sampler of a run ``end_run`` could not end (it would keep sending)."""
    from mlflow.tracking import fluent

    monitor = getattr(fluent, "run_id_to_system_metrics_monitor", {}).pop(run_id, None)
    if monitor is not None:
        monitor.finish()


def create_run(entry_point: str, *, parent: RunHandle | None = None, run_name: str | None = None,
               tags: Mapping[str, Any] | None = None) -> RunHandle:
    """Create (not open) a RUNNING run that another process or function opens by its id: the run of a
    multi-process training, or a trial's run nested under its ``tune`` parent (in the parent's experiment)."""
    if not is_main_process():
        return RunHandle(None)
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    all_tags = {ENTRY_POINT_TAG: entry_point, **_text(tags)}
    try:
        c = client()
        if parent is not None and parent.run_id:
            experiment = c.get_run(parent.run_id).info.experiment_id
            all_tags[MLFLOW_PARENT_RUN_ID] = parent.run_id
        else:
            experiment = experiment_id()
        return RunHandle(c.create_run(experiment, run_name=run_name, tags=all_tags).info.run_id)
    except Exception as exc:  # noqa: BLE001
        raise tracking_error(exc) from None


class MetricLogger:
    """Buffers per-step metrics and sends them in batches, asynchronously (low overhead per step).

    ``skip`` maps a key to the last step already in the run: those steps are not logged again, so a
    resumed training holds each step's metrics exactly once.
    """

    def __init__(self, run_id: str | None, flush_every: int = 200, skip: Mapping[str, int] | None = None):
        self.run_id = run_id
        self.flush_every = flush_every
        self.skip = dict(skip or {})
        self.pending: list = []
        self.sent: list = []  # the asynchronous sends not yet known to be stored
        if self.run_id is not None:  # imported once here, not on every training step
            from mlflow.entities import Metric

            self._metric = Metric

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        """Queue ``metrics`` at ``step``; a full buffer is sent in the background."""
        if self.run_id is None:
            return
        now = int(time.time() * 1000)
        for key, value in metrics.items():
            if step > self.skip.get(key, -1):
                self.pending.append(self._metric(key, float(value), now, int(step)))
        if len(self.pending) >= self.flush_every:
            self.flush()

    def flush(self, synchronous: bool = False) -> None:
        """Send what is queued; ``synchronous``: and wait until everything sent so far is stored."""
        if self.run_id is None:
            return
        if self.pending:
            operation = client().log_batch(self.run_id, metrics=self.pending, synchronous=synchronous)
            if operation is not None:
                self.sent.append(operation)
            self.pending = []
        if synchronous:
            import mlflow

            mlflow.flush_async_logging()
            sent, self.sent = self.sent, []
            for operation in sent:  # a batch the server never stored is an error here, not a silent gap
                operation.wait()
