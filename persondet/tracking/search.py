"""Finding runs and reading what they logged."""

from __future__ import annotations

from typing import Mapping

from persondet.tracking.runs import ENTRY_POINT_TAG, same_logged_param
from persondet.tracking.store import client, opened_store_uri


def get_run(run_id: str):
    """The mlflow Run, or None when it does not exist."""
    try:
        return client().get_run(run_id)
    except Exception:  # noqa: BLE001
        return None


def download_artifact(run_id: str, artifact_path: str, dst_dir: str) -> str | None:
    """Download one artifact of a run into ``dst_dir``; its local path, or None when there is none."""
    import mlflow

    opened_store_uri()
    try:
        return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path,
                                                   dst_path=dst_dir)
    except Exception:  # noqa: BLE001
        return None


def search_runs(experiment_name: str, entry_point: str | None = None, status: str | None = None) -> list:
    """Runs of an experiment (newest first), optionally only one entry point / status."""
    from mlflow.entities import ViewType

    c = client()
    experiment = c.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    filters = []
    if entry_point:
        filters.append(f"tags.`{ENTRY_POINT_TAG}` = '{entry_point}'")
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


def find_finished(experiment_name: str, tags: Mapping[str, str], params: Mapping[str, str]):
    """The newest FINISHED run of an experiment holding every tag and every parameter given (a parameter
    logged shell-quoted by ``mlflow run`` counts as the same value); None when there is none."""
    c = client()
    experiment = c.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None
    filters = ["attributes.status = 'FINISHED'", *(f"tags.`{k}` = '{v}'" for k, v in tags.items())]
    for run in c.search_runs([experiment.experiment_id], " and ".join(filters),
                             order_by=["attributes.start_time DESC"], max_results=200):
        if all(same_logged_param(run.data.params.get(k), v) for k, v in params.items()):
            return run
    return None
