"""The one place that talks to MLflow (apart from the pyfunc model wrapper).

Everything here is a no-op on non-zero ranks: ``is_main_process()`` is the one gate.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, Mapping

from persondet.distributed import is_main_process

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "persondet"


def ensure_tracking_uri() -> str:
    """Use MLFLOW_TRACKING_URI when set; else the embedded default, a local SQLite store."""
    import mlflow

    if not os.environ.get("MLFLOW_TRACKING_URI"):
        mlflow.set_tracking_uri(DEFAULT_TRACKING_URI)
    return mlflow.get_tracking_uri()


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
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT)
    all_tags = {"persondet.entry_point": entry_point, **(tags or {})}
    with mlflow.start_run(run_id=run_id, run_name=run_name, nested=nested, tags=all_tags) as run:
        yield run


def log_params(params: Mapping[str, Any]) -> None:
    if is_main_process():
        import mlflow

        mlflow.log_params({k: v for k, v in params.items()})


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
