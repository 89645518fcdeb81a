"""promote: the best merged-data version becomes Production + alias champion (real MLflow registry)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from persondet.config import PromoteConfig
from persondet.errors import PersondetError
from persondet.promotion import promote

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def client(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.chdir(tmp_path)
    import mlflow

    mlflow.set_experiment("persondet")
    c = mlflow.MlflowClient()
    c.create_registered_model("persondet")
    return c


def add_version(client, mix: str, ap50: float | None, digest: str = "d1", test: str = "inhouse",
                batch_size: int = 8) -> str:
    """A training run evaluated as `evaluate` leaves it, and its registered version tagged as `train` does."""
    import mlflow

    with mlflow.start_run(tags={"persondet.entry_point": "train"}) as run:
        mlflow.log_params({"dataset_mix": mix, "batch_size": batch_size})
        if ap50 is not None:
            mlflow.log_metrics({f"{test}/AP50": ap50, f"{test}/AP": ap50 / 2})
            mlflow.set_tag(f"{test}/digest", digest)
    mv = client.create_model_version("persondet", f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
                                     tags={"dataset_mix": mix, "batch_size": str(batch_size), "gpu_type": "cpu",
                                           "gpu_count": "0", "training_run_id": run.info.run_id})
    return str(mv.version)


def state(client):
    versions = client.search_model_versions("name = 'persondet'")
    champion = str(client.get_model_version_by_alias("persondet", "champion").version)
    return champion, {str(v.version): (v.current_stage, dict(v.tags)) for v in versions}


def test_best_merged_version_promoted_and_better_coco_only_never(client, capsys):
    add_version(client, "coco", 0.90)  # v1: better, but coco only
    add_version(client, "coco+cuhk", 0.55)  # v2
    add_version(client, "coco+cuhk", 0.61, batch_size=16)  # v3: the best merged
    add_version(client, "cuhk", 0.95)  # v4: cuhk only
    add_version(client, "coco+cuhk", 0.99, digest="other")  # v5: another version of the test set
    result = promote(PromoteConfig())
    assert (result.decision, result.champion, result.test_digest) == ("promoted", "3", "d1")
    out = capsys.readouterr().out
    assert "version" in out and "decision: promoted" in out and "not merged data" in out
    champion, versions = state(client)
    assert champion == "3"
    assert versions["3"][0] == "Production"
    assert versions["3"][1]["promote.AP50"].startswith("0.61") and versions["3"][1]["promote.test_digest"] == "d1"
    assert all(versions[v][0] == "None" for v in ("1", "2", "4", "5"))


def test_merged_data_is_any_two_sources_and_one_source_never(client):
    add_version(client, "crowdhuman", 0.95)  # v1: one source, the best score: not merged data
    add_version(client, "citypersons", 0.93)  # v2: one source
    add_version(client, "coco+citypersons", 0.60)  # v3: merged
    add_version(client, "coco+cuhk", 0.55)  # v4: the seed's mix, still merged data
    result = promote(PromoteConfig())
    assert (result.decision, result.champion) == ("promoted", "3")
    champion, versions = state(client)
    assert versions["3"][0] == "Production" and versions["1"][0] == versions["2"][0] == "None"
    add_version(client, "crowdhuman+coco+cuhk+citypersons", 0.70)  # v5: all four, any order
    assert (promote(PromoteConfig()).champion, state(client)[0]) == ("5", "5")


def test_second_run_changes_nothing_then_a_better_one_replaces(client):
    add_version(client, "coco+cuhk", 0.40)
    add_version(client, "coco+cuhk", 0.50)
    assert promote(PromoteConfig()).champion == "2"
    before = state(client)
    again = promote(PromoteConfig())
    assert again.decision == "kept" and state(client) == before
    add_version(client, "coco+cuhk", 0.45)  # worse: nothing changes
    assert promote(PromoteConfig()).decision == "kept"
    add_version(client, "cuhk+coco", 0.70)  # better (mix named the other way round)
    result = promote(PromoteConfig())
    assert (result.decision, result.champion) == ("promoted", "4")
    champion, versions = state(client)
    assert champion == "4" and versions["4"][0] == "Production" and versions["2"][0] == "Archived"
    assert versions["2"][1]["promote.decision"] == "archived: replaced by v4"


def test_tie_keeps_the_lower_version(client):
    add_version(client, "coco+cuhk", 0.5)
    add_version(client, "coco+cuhk", 0.5)
    assert promote(PromoteConfig()).champion == "1"
    add_version(client, "coco+cuhk", 0.5)
    assert promote(PromoteConfig()).decision == "kept"
    assert state(client)[0] == "1"


def test_other_metric_and_explicit_test_set(client):
    add_version(client, "coco+cuhk", 0.6, test="a")
    add_version(client, "coco+cuhk", 0.8, test="b")
    add_version(client, "coco+cuhk", 0.7, test="b")
    assert promote(PromoteConfig(test_name="a")).champion == "1"
    result = promote(PromoteConfig(test_name="b", metric="AP"))
    assert (result.champion, result.reason.startswith("v2 replaces v1")) == ("2", True)


def test_no_eligible_version(client):
    with pytest.raises(PersondetError, match="has no versions"):
        promote(PromoteConfig())
    add_version(client, "coco", 0.9)
    add_version(client, "coco+cuhk", None)  # merged but never evaluated
    with pytest.raises(PersondetError, match="no eligible version of 'persondet'"):
        promote(PromoteConfig())


def test_entry_point_refuses_with_exit_2(client, tmp_path):
    add_version(client, "cuhk", 0.9)
    proc = subprocess.run([sys.executable, str(ROOT / "entrypoints" / "promote.py"), "--metric", "AP50"],
                          capture_output=True, text=True, timeout=120, env={**os.environ}, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("persondet: error:")]
    assert len(errors) == 1 and "no eligible version" in errors[0]
