"""Which tracking store and experiment this process talks to, and the one-line error when it is away."""

from __future__ import annotations

import os

from persondet.errors import PersondetError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "persondet"
# MLflow 3's UI opens an experiment by its kind: model training opens on the runs table, not on the GenAI
# overview (traces) it shows for an experiment without one.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


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
    experiment = mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT)
    mark_experiment(experiment)
    return experiment.experiment_id


def mark_experiment(experiment) -> None:
    """Tag an experiment (an mlflow Experiment) as model training (``mlflow.experimentKind``) unless it has a
    kind already: a kind someone chose stays.  A user who may not edit the experiment leaves it as it is."""
    from mlflow.exceptions import MlflowException

    if EXPERIMENT_KIND_TAG in experiment.tags:
        return
    try:
        client().set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    except MlflowException:
        pass


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
