"""Which tracking store and experiment this process talks to, and the one-line error when it is away.

A fresh SQLite store is created by the first process that opens it; two steps started at once on a new
``mlflow.db`` would both create MLflow's tables, and the second would fail ("table already exists").  So
the first open of a SQLite store in a process (``opened_store_uri``) happens under an exclusive ``flock`` of
the database's folder (the other process waits, then finds the tables), and creating the experiment
tolerates a concurrent creator.
"""

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


def preload() -> None:
    """Import what opening the store and starting a run will need (MLflow, the SQLAlchemy store for a database
    URI, GitPython for the run's source commit tag), without opening it: no store file is created, no run
    started.  ``prepare`` does this while a worker reads."""
    from mlflow.store.db.db_types import DATABASE_ENGINES

    scheme = tracking_uri().split(":", 1)[0].lower()
    if any(scheme.startswith(engine) for engine in DATABASE_ENGINES):
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    try:  # MLflow's git run context imports it in start_run (0.1 s at the end of prepare); optional there
        import git  # noqa: F401
    except ImportError:
        pass


def opened_store_uri() -> str:
    """``tracking_uri()``, with a SQLite store opened (created when new, under the lock: module docstring).
    What every function that reads or writes the store calls first; a bad input refused before that leaves
    no ``mlflow.db`` behind."""
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        open_sqlite_store(uri)
    return uri


_OPENED: set[str] = set()


def open_sqlite_store(uri: str) -> None:
    """Open (and, when new, create) the SQLite store at ``uri`` under a lock of its folder (module docstring);
    once per process and store."""
    if uri in _OPENED:
        return
    import fcntl

    from mlflow import MlflowClient

    folder = os.path.dirname(os.path.abspath(uri[len("sqlite:///"):].split("?", 1)[0])) or "."
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # no such folder: MLflow's own error says it better
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a file system without flock: open unlocked, as MLflow does
            pass
        MlflowClient(uri).search_experiments(max_results=1)  # creates the tables of a new store
        _OPENED.add(uri)
    finally:
        os.close(fd)  # releases the lock


def client():
    """An MlflowClient on ``tracking_uri()``."""
    from mlflow import MlflowClient

    opened_store_uri()
    return MlflowClient()


def experiment_id() -> str:
    """The id of the experiment new runs go to: MLFLOW_EXPERIMENT_NAME, else ``persondet`` (created when
    missing)."""
    import mlflow

    opened_store_uri()
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    try:
        experiment = mlflow.set_experiment(name)
    except Exception:  # noqa: BLE001 - another process created it between MLflow's lookup and its create
        experiment = mlflow.set_experiment(name)
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


def is_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) says the tracking server could not be reached: a connection or
    timeout error of ``requests``, as MLflow's REST client wraps it once its retries are spent."""
    import requests

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            return True
        text = str(seen)
        if "API request to " in text and (" failed with exception " in text or " failed with timeout " in text):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def tracking_error(exc: BaseException) -> PersondetError:
    """The one-line error for a run that could not be started: an unknown run, or a server that is away."""
    import mlflow

    if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
        return PersondetError(f"{mlflow.get_tracking_uri()}: {one_line(exc)[:200]}")
    retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7 (MLflow's default)")
    return PersondetError(f"cannot reach the MLflow tracking server at {mlflow.get_tracking_uri()} "
                          f"after {retries} retries (MLFLOW_HTTP_REQUEST_MAX_RETRIES / _TIMEOUT set "
                          f"them): {one_line(exc)[:200]}")
