"""The end of a study as a person reads it: AP50 table, the champion and why, the report, the compare link."""

from __future__ import annotations

import json
import urllib.parse

from persondet.config import PromoteConfig
from persondet.promotion import promote
from persondet.summary import compare_runs_url, study_summary, ui_url
import test_promote
from test_promote import add_version

client = test_promote.client  # the registry fixture of the promote tests


def _trained(client, mix: str, batch_size: int, ap50: float):
    """A training run as train and evaluate leave it, registered as a version."""
    version = add_version(client, mix, ap50, batch_size=batch_size)
    return client.get_run(client.get_model_version("persondet", version).run_id)


def _compare_query(url: str) -> tuple[str, list, list]:
    base, fragment = url.split("#", 1)
    path, query = fragment.split("?", 1)
    values = urllib.parse.parse_qs(query)
    return base + "#" + path, json.loads(values["runs"][0]), json.loads(values["experiments"][0])


def _promote_run(client):
    (run,) = client.search_runs([client.get_experiment_by_name("persondet").experiment_id],
                                "tags.`persondet.entry_point` = 'promote'", order_by=["start_time DESC"],
                                max_results=1)
    return run


def test_the_summary_gives_the_table_the_champion_and_why_and_the_compare_link(client):
    runs = [_trained(client, "coco", 8, 0.72), _trained(client, "coco+cuhk", 8, 0.55),
            _trained(client, "coco+cuhk", 16, 0.61)]
    promote(PromoteConfig())
    text = study_summary(runs, "inhouse", _promote_run(client))
    lines = text.splitlines()
    assert lines[0] == "AP50 on inhouse (dataset_mix x batch_size):"
    assert "| dataset_mix \\ batch_size | 8 | 16 |" in lines
    assert "| coco | 0.7200 | - |" in lines and "| coco+cuhk | 0.5500 | 0.6100 |" in lines
    assert ("champion: persondet v3 (dataset_mix coco+cuhk, batch_size 16), AP50 0.6100 on inhouse; "
            "why: v3 is the first champion") in lines
    experiment = runs[0].info.experiment_id
    assert lines[-3].startswith("in the MLflow UI (after `mlflow ui --backend-store-uri sqlite:///")
    assert lines[-3].endswith(f": the experiment's runs http://127.0.0.1:5000/#/experiments/{experiment}/runs"
                              "?workflowType=machine_learning")
    assert lines[-2] == "compare the 3 training runs:"
    page, run_ids, experiments = _compare_query(lines[-1])
    assert page == "http://127.0.0.1:5000/#/compare-runs" and lines[-1].endswith("&workflowType=machine_learning")
    assert run_ids == [r.info.run_id for r in runs] and experiments == [runs[0].info.experiment_id]

    # a later promote that keeps the champion says why it stays
    better_coco = _trained(client, "coco", 16, 0.99)
    promote(PromoteConfig())
    text = study_summary(runs + [better_coco], "inhouse", _promote_run(client))
    assert "champion: persondet v3" in text and "why: v3 is already champion and the best" in text


def test_no_champion_and_no_evaluated_run_are_said_so(client):
    text = study_summary([], "inhouse")
    assert "(no training run was evaluated)" in text and "no champion yet" in text and "compare" not in text


def test_the_compare_link_opens_on_the_tracking_server_it_logged_to(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example.org:8443/")
    assert ui_url() == "https://mlflow.example.org:8443"
    page, run_ids, experiments = _compare_query(compare_runs_url(["a1", "b2"], ["7", "3", "7"]))
    assert page == "https://mlflow.example.org:8443/#/compare-runs"
    assert run_ids == ["a1", "b2"] and experiments == ["3", "7"]
