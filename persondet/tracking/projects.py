"""Entry points of this project run as MLflow project runs: how ``main`` runs each step.

This is the one place that calls ``mlflow.projects.run``: MLflow's own project runner is the point here
(each step is the same entry point a user runs by hand, with its parameters logged by MLflow).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Mapping

from persondet.errors import PersondetError
from persondet.tracking.store import one_line, tracking_uri


def export_step_environment(experiment: str) -> str:
    """Make the steps ``mlflow.projects.run`` starts log where this process does: the experiment, an
    absolute SQLite path (the steps run in the repository folder) and this interpreter's ``bin`` first on
    PATH (``--env-manager local`` starts ``python`` by name).  Returns the tracking URI."""
    import mlflow

    os.environ["MLFLOW_EXPERIMENT_NAME"] = experiment
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    uri = tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + os.path.abspath(uri[len("sqlite:///"):])
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)  # what mlflow.projects hands to the steps
    return uri


def run_project(project_dir: Path, entry_point: str, parameters: Mapping[str, str], experiment: str) -> str:
    """Run ``entry_point`` of the project in ``project_dir`` in this environment and wait; its run id.

    The step's run is a child of the run open in this process (``main``'s).
    """
    import mlflow
    from mlflow.exceptions import ExecutionException

    try:
        submitted = mlflow.projects.run(str(project_dir), entry_point=entry_point, parameters=dict(parameters),
                                        experiment_name=experiment, env_manager="local", synchronous=True)
    except ExecutionException as exc:
        raise PersondetError(f"step {entry_point} {dict(parameters)} failed ({one_line(exc)}); "
                             "see its output above") from None
    return submitted.run_id
