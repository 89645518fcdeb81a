"""Which tracking store and experiment this process talks to, and the one-line error when it is away."""

from __future__ import annotations

import os

from persondet.errors import PersondetError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "persondet"


def tracking_uri() -> str:
    """The store this process logs to: MLFLOW_TRACKING_URI when set, else the embedded default (a local
    SQLite file), which is then set for this process."""
    import mlflow

    if not os.environ.get("MLFLOW_TRACKING_URI"):
        mlflow.set_tracking_uri(DEFAULT_TRACKING_URI)
    return mlflow.get_tracking_uri()


def client():
    """An MlflowClient on ``tracking_uri()``."""
    from mlflow import MlflowClient

    tracking_uri()
    return MlflowClient()


def experiment_id() -> str:
    """The id of the experiment new runs go to: MLFLOW_EXPERIMENT_NAME, else ``persondet`` (created when
    missing)."""
    import mlflow

    tracking_uri()
    return mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT).experiment_id


def one_line(exc: BaseException) -> str:
    """An exception's message on one line, at most 300 characters."""
    return " ".join(str(exc).split())[:300]


def tracking_error(exc: BaseException) -> PersondetError:
    """The one-line error for a run that could not be started: an unknown run, or a server that is away."""
    import mlflow

    if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
        return PersondetError(f"{mlflow.get_tracking_uri()}: {one_line(exc)[:200]}")
    retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7 (MLflow's default)")
    return PersondetError(f"cannot reach the MLflow tracking server at {mlflow.get_tracking_uri()} "
                          f"after {retries} retries (MLFLOW_HTTP_REQUEST_MAX_RETRIES / _TIMEOUT set "
                          f"them): {one_line(exc)[:200]}")
