"""The one place that talks to MLflow (apart from the pyfunc model wrapper).

Everything here is a no-op on non-zero ranks: ``is_main_process()`` is the one gate.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Callable, Iterator, Mapping

from persondet.distributed import is_main_process

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "persondet"


def ensure_tracking_uri() -> str:
    """Use MLFLOW_TRACKING_URI when set; else the embedded default, a local SQLite store."""
    import mlflow

    if not os.environ.get("MLFLOW_TRACKING_URI"):
        mlflow.set_tracking_uri(DEFAULT_TRACKING_URI)
    return mlflow.get_tracking_uri()


def _set_experiment():
    """Make MLFLOW_EXPERIMENT_NAME (else the default experiment) the active one; returns it."""
    import mlflow

    return mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT)


@contextlib.contextmanager
def start_run(entry_point: str, run_name: str | None = None, tags: Mapping[str, str] | None = None,
              nested: bool = False, run_id: str | None = None) -> Iterator[Any]:
    """Start (or, under ``mlflow run`` / with ``run_id``, resume) a run tagged with its entry point.

    Yields the active mlflow Run on the main process, None elsewhere.
    """
    if not is_main_process():
        yield None
        return
    import mlflow

    ensure_tracking_uri()
    if not os.environ.get("MLFLOW_RUN_ID") and not run_id and not nested:
        _set_experiment()
    # a tracking server accepts only string tag values (SQLite would store an int)
    all_tags = {"persondet.entry_point": entry_point, **{k: str(v) for k, v in (tags or {}).items()}}
    with mlflow.start_run(run_id=run_id, run_name=run_name, nested=nested, tags=all_tags) as run:
        yield run


def log_params(params: Mapping[str, Any]) -> None:
    if is_main_process():
        import mlflow

        mlflow.log_params(_not_yet_logged(params))


def same_logged_param(logged: str | None, value: Any) -> bool:
    """Whether a logged parameter holds ``value``. ``mlflow run`` logs entry-point parameters shell-quoted
    (``''`` for an empty string, ``'/a b'`` for a path with a space)."""
    import shlex

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


def _not_yet_logged(params: Mapping[str, Any]) -> dict[str, Any]:
    """Drop params the active run already holds with the same value (under ``mlflow run`` the project
    has logged every entry-point parameter already; logging it again unquoted would be a "change")."""
    import mlflow

    run = mlflow.active_run()
    logged = mlflow.get_run(run.info.run_id).data.params if run is not None else {}
    return {key: value for key, value in params.items() if not same_logged_param(logged.get(key), value)}


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    if is_main_process():
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def set_tags(tags: Mapping[str, Any]) -> None:
    if is_main_process():
        import mlflow

        mlflow.set_tags({k: str(v) for k, v in tags.items()})


def log_artifact(path: str, artifact_path: str | None = None) -> None:
    if is_main_process():
        import mlflow

        mlflow.log_artifact(path, artifact_path=artifact_path)


def log_artifacts(directory: str, artifact_path: str | None = None) -> None:
    if is_main_process():
        import mlflow

        mlflow.log_artifacts(directory, artifact_path=artifact_path)


# --- evaluation, registry, report and pipeline helpers (issue 4) -------------------------------------

REGISTERED_MODEL = "persondet"


def client():
    from mlflow import MlflowClient

    ensure_tracking_uri()
    return MlflowClient()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def load_pytorch_model(model_uri: str):
    """``mlflow.pytorch.load_model`` with a one-line PersondetError for a URI that does not resolve."""
    import mlflow

    from persondet.errors import PersondetError

    ensure_tracking_uri()
    known_scheme = model_uri.startswith(("runs:/", "models:/")) or "://" in model_uri
    if not known_scheme and not os.path.isdir(model_uri):
        raise PersondetError(f"model_uri={model_uri!r} is not a model URI (runs:/<run_id>/model, "
                             "models:/<name>/<version> or models:/<name>@<alias>)")
    try:
        return mlflow.pytorch.load_model(model_uri, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - MlflowException, OSError...: all mean "no such model"
        raise PersondetError(f"model_uri={model_uri!r} cannot be loaded: {_one_line(exc)}") from None


def training_run_of(model_uri: str) -> str | None:
    """The id of the run that logged the model behind ``model_uri`` (None when unknown)."""
    if model_uri.startswith("runs:/"):
        return model_uri[len("runs:/"):].split("/", 1)[0] or None
    if model_uri.startswith("models:/"):
        rest = model_uri[len("models:/"):].strip("/")
        try:
            if "@" in rest:
                name, alias = rest.split("@", 1)
                version = client().get_model_version_by_alias(name, alias)
            else:
                name, number = rest.split("/", 1)
                version = client().get_model_version(name, number)
        except Exception:  # noqa: BLE001
            return None
        return version.run_id or (version.tags or {}).get("training_run_id")
    return None


def get_run(run_id: str):
    """The mlflow Run, or None when it does not exist."""
    try:
        return client().get_run(run_id)
    except Exception:  # noqa: BLE001
        return None


def download_run_artifact(run_id: str, artifact_path: str, dst_dir: str) -> str | None:
    """Download one artifact of a run; None when the run has no such artifact."""
    import mlflow

    ensure_tracking_uri()
    try:
        return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path,
                                                   dst_path=dst_dir)
    except Exception:  # noqa: BLE001
        return None


def log_to_other_run(run_id: str, metrics: Mapping[str, float] | None = None,
                     tags: Mapping[str, Any] | None = None) -> None:
    """Add metrics and tags to an existing (finished) run, e.g. a training run after its evaluation."""
    update_run(run_id, metrics=metrics, tags=tags)


def search_runs(experiment_name: str, entry_point: str | None = None, status: str | None = None):
    """Runs of an experiment (newest first), optionally only one entry point / status."""
    from mlflow.entities import ViewType

    c = client()
    experiment = c.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    filters = []
    if entry_point:
        filters.append(f"tags.`persondet.entry_point` = '{entry_point}'")
    if status:
        filters.append(f"attributes.status = '{status}'")
    runs, token = [], None
    while True:
        page = c.search_runs([experiment.experiment_id], " and ".join(filters),
                             run_view_type=ViewType.ACTIVE_ONLY, max_results=1000,
                             order_by=["attributes.start_time DESC"], page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def model_versions(name: str = REGISTERED_MODEL) -> list:
    """Every version of a registered model (empty when the model is not registered)."""
    c = client()
    try:
        return list(c.search_model_versions(f"name = '{name}'", max_results=10000))
    except Exception:  # noqa: BLE001
        return []


def version_by_alias(name: str, alias: str):
    try:
        return client().get_model_version_by_alias(name, alias)
    except Exception:  # noqa: BLE001
        return None


def promote_version(name: str, version: str, alias: str, stage: str, tags: Mapping[str, Any]) -> None:
    """Move a version to ``stage`` (archiving the others there), point ``alias`` at it and tag it."""
    import warnings

    c = client()
    with warnings.catch_warnings():  # stages are deprecated in MLflow; the study's users still ask for them
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        c.transition_model_version_stage(name, version, stage, archive_existing_versions=True)
    c.set_registered_model_alias(name, alias, version)
    set_version_tags(name, version, tags)


def set_version_tags(name: str, version: str, tags: Mapping[str, Any]) -> None:
    c = client()
    for key, value in tags.items():
        c.set_model_version_tag(name, version, key, str(value))


# --- training (issue 3) ------------------------------------------------------------------------------

def _unreachable_error(exc: BaseException):
    from persondet.errors import PersondetError

    import mlflow

    retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7 (MLflow's default)")
    return PersondetError(f"cannot reach the MLflow tracking server at {mlflow.get_tracking_uri()} "
                          f"after {retries} retries (MLFLOW_HTTP_REQUEST_MAX_RETRIES / _TIMEOUT set "
                          f"them): {_one_line(exc)[:200]}")


def create_training_run(run_name: str | None = None, tags: Mapping[str, str] | None = None) -> str:
    """Create (not start) a run for a multi-process training; the workers' rank 0 resumes it."""
    try:
        return _create_run("train", run_name, tags)
    except Exception as exc:  # noqa: BLE001 - MlflowException or a requests error: the server is away
        raise _unreachable_error(exc) from None


# Never set: deleting it changes nothing, and the server checks the same grant as for a real write.
PREFLIGHT_TAG = "persondet.preflight-probe"


def check_may_train(registered_name: str | None) -> None:
    """Before a training on a tracking server: a one-line PersondetError now, not a 403 after the last
    epoch, when this user may not log runs to the experiment or register versions of ``registered_name``
    (None: not registering). Each probe deletes a never-set tag, a write needing EDIT, like logging a run
    or creating a model version. A no-op on local stores, on ranks > 0 and for names not created yet."""
    if not is_main_process():
        return
    uri = ensure_tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return
    from mlflow.exceptions import MlflowException

    c = client()
    probes = []
    if not os.environ.get("MLFLOW_RUN_ID"):  # else the run exists: mlflow run created it
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        probes.append((f"log runs to the experiment {name!r}", lambda: c.get_experiment_by_name(name),
                       lambda e: c.delete_experiment_tag(e.experiment_id, PREFLIGHT_TAG)))
    if registered_name:
        probes.append((f"register versions of the model {registered_name!r}", lambda: registered_name,
                       lambda n: c.delete_registered_model_tag(n, PREFLIGHT_TAG)))
    user = os.environ.get("MLFLOW_TRACKING_USERNAME") or "this user"
    for what, find, probe in probes:
        try:
            target = find()
            if target is not None:
                probe(target)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":  # the tag (allowed) or the name (created later)
                continue
            from persondet.errors import PersondetError

            status = exc.get_http_status_code()
            if status == 401 or exc.error_code == "UNAUTHENTICATED":
                raise PersondetError(f"the tracking server {uri} refused the credentials of {user} "
                                     "(MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD)") from None
            if status == 403 or exc.error_code == "PERMISSION_DENIED":
                raise PersondetError(
                    f"{user} may not {what} on {uri} (needs EDIT; nothing was trained): ask the server's admin "
                    "to add the account to the team (docs/SERVER.md)"
                    + (" or train with register=false" if "model" in what else "")) from None
            raise _unreachable_error(exc) from None
        except Exception as exc:  # noqa: BLE001 - a requests error: the server is away
            raise _unreachable_error(exc) from None


def end_run_if_running(run_id: str, status: str) -> None:
    """Mark a run ended (e.g. FAILED after its worker processes died) unless it already is."""
    run = get_run(run_id)
    if run is not None and run.info.status == "RUNNING":
        client().set_terminated(run_id, status)


@contextlib.contextmanager
def training_run(run_id: str | None = None, run_name: str | None = None,
                 tags: Mapping[str, str] | None = None,
                 is_stop: Callable[[BaseException], bool] = lambda exc: False) -> Iterator[Any]:
    """The training's one run (rank 0 only): new, the launcher's, ``mlflow run``'s, or a resumed one.

    Ends FINISHED, FAILED on an error, KILLED when ``is_stop(exc)`` says it was stopped (e.g. a pruned
    optuna trial). System metrics (CPU, memory, GPU via nvidia-ml-py) are sampled while it runs.
    """
    if not is_main_process():
        yield None
        return
    import mlflow

    ensure_tracking_uri()
    try:
        if not run_id and not os.environ.get("MLFLOW_RUN_ID"):
            _set_experiment()
        # Inside another active run (an optuna study's parent run) a new training run is nested.
        nested = not run_id and mlflow.active_run() is not None
        run = mlflow.start_run(run_id=run_id or None, run_name=None if run_id else run_name,
                               tags={"persondet.entry_point": "train", **(tags or {})},
                               nested=nested, log_system_metrics=True)
    except Exception as exc:  # noqa: BLE001
        raise _unreachable_error(exc) from None
    status = "FAILED"
    try:
        yield run
        status = "FINISHED"
    except BaseException as exc:
        status = "KILLED" if is_stop(exc) else "FAILED"
        raise
    finally:
        try:
            mlflow.flush_async_logging()
        finally:
            mlflow.end_run(status)


def metric_last_steps(run_id: str, keys) -> dict[str, int]:
    """The highest step already logged for each key (a resumed training skips those steps)."""
    c = client()
    last = {}
    for key in keys:
        history = c.get_metric_history(run_id, key)
        if history:
            last[key] = max(m.step for m in history)
    return last


class MetricLogger:
    """Buffers per-step metrics and sends them in batches, asynchronously (low overhead per step).

    ``skip`` maps a key to the last step already in the run: those steps are not logged again, so a
    resumed training holds each step's metrics exactly once.
    """

    def __init__(self, run_id: str | None, flush_every: int = 200, skip: Mapping[str, int] | None = None):
        self.run_id = run_id if is_main_process() else None
        self.flush_every = flush_every
        self.skip = dict(skip or {})
        self.pending: list = []
        if self.run_id is not None:  # imported once here, not on every training step
            from mlflow.entities import Metric

            self._metric = Metric

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        if self.run_id is None:
            return
        now = int(time.time() * 1000)
        for key, value in metrics.items():
            if step > self.skip.get(key, -1):
                self.pending.append(self._metric(key, float(value), now, int(step)))
        if len(self.pending) >= self.flush_every:
            self.flush()

    def flush(self, synchronous: bool = False) -> None:
        if self.run_id is None:
            return
        if self.pending:
            client().log_batch(self.run_id, metrics=self.pending, synchronous=synchronous)
            self.pending = []
        if synchronous:
            import mlflow

            mlflow.flush_async_logging()


def log_checkpoint(path: str) -> None:
    """The latest checkpoint as the run artifact ``checkpoints/<name>`` (overwritten each epoch)."""
    log_artifact(path, artifact_path="checkpoints")


def log_detector(module, input_example, output_example, registered_name: str | None,
                 version_tags: Mapping[str, Any]) -> str | None:
    """Log the serving module as ``model`` (signature, input example); register it and tag the version.

    Returns the registered version (None when not registered or not rank 0).
    """
    if not is_main_process():
        return None
    import mlflow
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    # Any batch size and image size: only the channel count and the output row layout are fixed.
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1,) + tuple(output_example.shape[1:]))]))
    info = mlflow.pytorch.log_model(module, name="model", signature=signature,
                                    input_example=input_example, registered_model_name=registered_name,
                                    serialization_format="pickle")
    version = getattr(info, "registered_model_version", None)
    if registered_name and version is not None:
        set_version_tags(registered_name, str(version), version_tags)
    return None if version is None else str(version)


# --- tuning (issue 5) ----------------------------------------------------------------------------------

def create_run(entry_point: str, run_name: str | None = None, tags: Mapping[str, Any] | None = None,
               parent_run_id: str | None = None) -> str | None:
    """Create (not start) a run; a nested run of ``parent_run_id`` (in its experiment) when given."""
    if not is_main_process():
        return None
    return _create_run(entry_point, run_name, tags, parent_run_id)


def _create_run(entry_point: str, run_name: str | None, tags: Mapping[str, Any] | None,
                parent_run_id: str | None = None) -> str:
    ensure_tracking_uri()
    all_tags = {"persondet.entry_point": entry_point, **{k: str(v) for k, v in (tags or {}).items()}}
    if parent_run_id:
        experiment_id = client().get_run(parent_run_id).info.experiment_id
        all_tags["mlflow.parentRunId"] = parent_run_id
    else:
        experiment_id = _set_experiment().experiment_id
    return client().create_run(experiment_id, run_name=run_name, tags=all_tags).info.run_id


def update_run(run_id: str, params: Mapping[str, Any] | None = None,
               metrics: Mapping[str, float] | None = None, tags: Mapping[str, Any] | None = None) -> None:
    """Log params, metrics (step 0) and tags to a run that is not the active one."""
    if not is_main_process() or not run_id:
        return
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    client().log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()],
                       params=[Param(k, str(v)) for k, v in (params or {}).items()],
                       tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()])


def terminate_run(run_id: str, status: str = "FINISHED") -> None:
    if is_main_process() and run_id:
        client().set_terminated(run_id, status)


# ---- prepare (datasets as run inputs) ----
DATASET_DIGEST_CHARS = 32  # the tracking store keeps at most 36 characters of a dataset digest


def log_dataset_input(name: str, digest: str, source_uri: str, context: str = "prepare") -> None:
    """Record a dataset as a run input (``mlflow.log_input``): name, digest, where it came from.

    The store keeps a 32-character prefix of the sha256 as the dataset digest; the full digest is the
    input tag ``persondet.digest``.
    """
    if not is_main_process():
        return
    import mlflow
    from mlflow.data.sources import LocalArtifactDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    dataset = MetaDataset(source=LocalArtifactDatasetSource(source_uri), name=name,
                          digest=digest[:DATASET_DIGEST_CHARS])
    mlflow.log_input(dataset, context=context, tags={"persondet.digest": digest})
