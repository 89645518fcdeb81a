"""What a study produced, as its end says it (``main`` prints it, ``report``'s page shows it): the AP50 table
(dataset mix x batch size), the champion and why, where the report is, and a link that opens the MLflow
UI's comparison of the training runs."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from persondet.datasets import mix_sort_key
from persondet.model_names import REGISTERED_MODEL
from persondet.tracking.registry import version_by_alias
from persondet.tracking.store import tracking_uri

DEFAULT_UI_URL = "http://127.0.0.1:5000"  # where `mlflow ui` and `mlflow server` listen by default
CHAMPION_ALIAS = "champion"
REASON_TAG = "persondet.reason"  # on a promote run: why it promoted or kept the champion


def as_number(text: Any) -> float | None:
    """A logged value as a float, or None when it is not a number."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _size_key(value: str):
    number = as_number(value)
    return (0, number, "") if number is not None else (1, 0.0, value)


def ap50_cells(train_runs, test_name: str) -> dict[tuple[str, str], Any]:
    """The training run behind each (dataset mix, batch size) that holds ``<test_name>/AP50`` (the first
    given, i.e. the newest of a newest-first list)."""
    cells: dict[tuple[str, str], Any] = {}
    for run in train_runs:
        if f"{test_name}/AP50" in run.data.metrics:
            key = (run.data.params.get("dataset_mix", "?"), run.data.params.get("batch_size", "?"))
            cells.setdefault(key, run)
    return cells


def ap50_table(train_runs, test_name: str) -> list[list[str]]:
    """AP50 on ``test_name``: dataset mix as rows, batch size as columns (the newest run per cell)."""
    cells = {key: run.data.metrics[f"{test_name}/AP50"] for key, run in ap50_cells(train_runs, test_name).items()}
    mixes = sorted({m for m, _ in cells}, key=mix_sort_key)
    sizes = sorted({b for _, b in cells}, key=_size_key)
    table = [["dataset_mix \\ batch_size", *sizes]]
    for m in mixes:
        table.append([m, *[f"{cells[(m, b)]:.4f}" if (m, b) in cells else "-" for b in sizes]])
    return table


def markdown_table(rows: list[list[str]]) -> str:
    """Rows (the first one the header) as a Markdown table."""
    if not rows:
        return ""
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines) + "\n"


def ui_url() -> str:
    """The MLflow UI of this tracking store: the server itself, else where ``mlflow ui`` serves a local store."""
    uri = tracking_uri()
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else DEFAULT_UI_URL


def ui_hint() -> str:
    """How to get the UI of ``ui_url()`` up: nothing for a server, the ``mlflow ui`` command for a local store."""
    uri = tracking_uri()
    return "" if uri.startswith(("http://", "https://")) else f"mlflow ui --backend-store-uri {uri}"


# MLflow 3.17's UI opens every experiment in its GenAI view (overview, traces) until the browser switched
# to "Model training" once, whatever the experiment's kind; this query parameter opens that view.
MODEL_TRAINING_VIEW = ("workflowType", "machine_learning")


def experiment_url(experiment_id: str) -> str:
    """The MLflow UI page of an experiment's runs table."""
    return f"{ui_url()}/#/experiments/{experiment_id}/runs?{urllib.parse.urlencode([MODEL_TRAINING_VIEW])}"


def compare_runs_url(run_ids: list[str], experiment_ids: list[str]) -> str:
    """The MLflow UI page comparing ``run_ids`` side by side (MLflow 3's route, from its UI bundle:
    ``#/compare-runs?runs=<JSON list>&experiments=<JSON list>``)."""
    query = urllib.parse.urlencode([("runs", json.dumps(list(run_ids))),
                                    ("experiments", json.dumps(sorted(set(experiment_ids)))), MODEL_TRAINING_VIEW])
    return f"{ui_url()}/#/compare-runs?{query}"


def champion_text(promote_run=None, model_name: str = REGISTERED_MODEL) -> str:
    """The champion version, what it was trained on, its score and why it is the champion (the reason
    ``promote_run`` gave, else the one recorded when it was promoted)."""
    version = version_by_alias(model_name, CHAMPION_ALIAS)
    if version is None:
        return f"no {CHAMPION_ALIAS} yet: promote picks one among the models trained on merged data"
    tags = version.tags
    metric = tags.get("promote.metric", "AP50")
    score = as_number(tags.get(f"promote.{metric}"))
    scored = f"{metric} {score:.4f} on {tags.get('promote.test_name', '?')}" if score is not None else "not scored"
    reason = (promote_run.data.tags.get(REASON_TAG) if promote_run is not None else None) \
        or tags.get("promote.decision", "")
    return (f"{CHAMPION_ALIAS}: {model_name} v{version.version} (dataset_mix {tags.get('dataset_mix', '?')}, "
            f"batch_size {tags.get('batch_size', '?')}), {scored}" + (f"; why: {reason}" if reason else ""))


def report_location(report_run) -> str:
    """Where the report run's page is stored (its artifact URI)."""
    return f"{report_run.info.artifact_uri.rstrip('/')}/report/report.html"


def study_summary(train_runs, test_name: str, promote_run=None, report_run=None) -> str:
    """The lines ``main`` ends with: AP50 table, champion and why, report location, compare-runs link."""
    table = ap50_table(train_runs, test_name)
    lines = [f"AP50 on {test_name} (dataset_mix x batch_size):",
             markdown_table(table).rstrip() if len(table) > 1 else "(no training run was evaluated)",
             champion_text(promote_run)]
    if report_run is not None:
        lines.append(f"report: {report_location(report_run)}")
    if train_runs:
        hint = ui_hint()
        lines.append("in the MLflow UI" + (f" (after `{hint}`)" if hint else "") + ": the experiment's runs "
                     + experiment_url(train_runs[0].info.experiment_id))
        lines.append(f"compare the {len(train_runs)} training runs:")
        lines.append(compare_runs_url([r.info.run_id for r in train_runs],
                                      [r.info.experiment_id for r in train_runs]))
    return "\n".join(lines)
