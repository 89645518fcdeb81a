"""main: the whole study as MLflow project runs of the repository's own entry points, re-using runs."""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

import pytest

from persondet.tracking import RunHandle
from persondet.tracking.search import search_runs
from persondet.config import ConfigError, MainConfig
from persondet.pipeline import INPUT_DIGEST_TAG, Runner, git_commit, main

ENTRY_POINTS = ("prepare", "train", "evaluate", "promote", "report")


@pytest.fixture
def store(tmp_path, monkeypatch):
    import mlflow.tracking._tracking_service.utils as tracking_utils

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    # main() sets these process-wide (it is a command); give them back after the test
    monkeypatch.setenv("PATH", os.environ.get("PATH", ""))
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "study")
    monkeypatch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _project_run(entry_point: str, params: dict, digest: str, commit: str | None, finished: bool = True) -> str:
    import mlflow

    mlflow.set_experiment("study")
    tags = {"mlflow.project.entryPoint": entry_point, INPUT_DIGEST_TAG: digest}
    if commit:
        tags["mlflow.source.git.commit"] = commit
    run = mlflow.start_run(tags=tags)
    mlflow.log_params(params)
    mlflow.end_run("FINISHED" if finished else "FAILED")
    return run.info.run_id


def test_reuse_needs_same_entry_point_params_digest_commit_and_a_finished_run(store):
    params = {"mix": "coco+cuhk", "cuhk_root": "''"}
    good = _project_run("prepare", params, "d1", "c1")
    _project_run("prepare", params, "d1", "c1", finished=False)
    runner = Runner("study", "c1")
    assert runner.find_finished("prepare", {"mix": "coco+cuhk"}, "d1").info.run_id == good
    assert runner.find_finished("prepare", {"mix": "coco+cuhk", "cuhk_root": ""}, "d1").info.run_id == good
    assert runner.find_finished("prepare", {"mix": "coco+cuhk", "cuhk_root": "/x"}, "d1") is None
    assert runner.find_finished("prepare", {"mix": "coco"}, "d1") is None
    assert runner.find_finished("prepare", {"mix": "coco+cuhk"}, "d2") is None
    assert runner.find_finished("train", {"mix": "coco+cuhk"}, "d1") is None
    assert Runner("study", "c2").find_finished("prepare", {"mix": "coco+cuhk"}, "d1") is None


def test_log_params_accepts_what_mlflow_run_logged_quoted(store):
    import mlflow

    mlflow.set_experiment("study")
    with mlflow.start_run() as run:
        mlflow.log_params({"coco_root": "''", "path": "'/a b/c'", "mix": "coco"})
        RunHandle(run.info.run_id).log_params({"coco_root": "", "path": "/a b/c", "mix": "coco", "new": "1"})
        with pytest.raises(Exception, match="Changing param values is not allowed"):
            RunHandle(run.info.run_id).log_params({"mix": "cuhk"})


def test_main_config_bad_values():
    with pytest.raises(ConfigError, match="mixes='coco,kitti'"):
        MainConfig(mixes="coco,kitti")
    with pytest.raises(ConfigError, match="batch_sizes='8,x'"):
        MainConfig(batch_sizes="8,x")


def test_main_digests_each_source_root_it_is_given_of_four(tmp_path):
    """main's citypersons_root/crowdhuman_root key the prepare runs it re-uses: a changed CrowdHuman file
    changes the crowdhuman digest only; a source no mix names is not read."""
    import prepare_fixtures as fx
    from persondet.pipeline import source_digests

    roots = {"coco_root": str(fx.make_coco_tree(tmp_path / "coco")), "cuhk_root": str(fx.make_cuhk_tree(tmp_path / "cuhk")),
             "citypersons_root": str(fx.make_citypersons_tree(tmp_path / "citypersons")),
             "crowdhuman_root": str(fx.make_crowdhuman_tree(tmp_path / "crowdhuman"))}
    config = MainConfig.from_strings({**roots, "mixes": "coco,crowdhuman+citypersons+cuhk+coco"})
    first = source_digests(config)
    assert list(first) == ["coco", "cuhk", "citypersons", "crowdhuman"] and len(set(first.values())) == 4
    odgt = tmp_path / "crowdhuman" / "annotation_train.odgt"
    odgt.write_text(odgt.read_text().replace('"fbox": [-6', '"fbox": [-5'))
    second = source_digests(config)
    assert second["crowdhuman"] != first["crowdhuman"]
    assert {k: v for k, v in second.items() if k != "crowdhuman"} == {k: v for k, v in first.items() if k != "crowdhuman"}
    only = MainConfig.from_strings({**roots, "citypersons_root": "/no/such/dir", "mixes": "coco+crowdhuman"})
    assert list(source_digests(only)) == ["coco", "crowdhuman"]


def test_main_with_a_missing_new_source_root_is_one_line_exit_2_and_no_step(store, monkeypatch):
    import subprocess
    import sys

    monkeypatch.setenv("PERSONDET_DEMO_HOME", str(store / "demo"))
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "entrypoints" / "main.py"),
                           "--mixes", "coco+cuhk,coco+cuhk+citypersons+crowdhuman", "--crowdhuman-root",
                           str(store / "no-such-root"), "--experiment", "study"],
                          cwd=store, capture_output=True, text=True, timeout=300)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("persondet: error: crowdhuman_root=") and "no-such-root" in err and "no such directory" in err
    assert not (store / "demo").exists()  # stopped before any demo data was written
    import mlflow

    assert mlflow.MlflowClient().get_experiment_by_name("study") is None  # no main run, no step run


def _counts():
    return {ep: len(search_runs("study", ep)) for ep in ENTRY_POINTS}


@pytest.mark.slow
@pytest.mark.skipif(git_commit() is None, reason="needs the repository's git checkout")
def test_main_runs_the_study_then_reuses_every_step(store, capsys):
    import mlflow

    config = MainConfig.from_strings({"mixes": "coco,coco+cuhk", "batch_sizes": "2", "epochs": "1",
                                      "max_iters_per_epoch": "2", "experiment": "study"})
    commit = git_commit()
    first = main(config)
    if git_commit() != commit:
        pytest.skip("HEAD moved while the test ran (a shared checkout): the code version changed")
    assert [s.entry_point for s in first["steps"]] == ["prepare", "prepare", "train", "train", "evaluate",
                                                       "evaluate", "promote", "report"]
    assert not any(s.reused for s in first["steps"])
    counts = _counts()
    assert counts == {"prepare": 2, "train": 2, "evaluate": 2, "promote": 1, "report": 1}
    client = mlflow.MlflowClient()
    champion = client.get_model_version_by_alias("persondet", "champion")
    assert champion.tags["dataset_mix"] == "coco+cuhk"
    train_runs = [client.get_run(s.run_id) for s in first["steps"] if s.entry_point == "train"]
    assert all("inhouse/AP50" in r.data.metrics for r in train_runs)
    assert all(r.data.tags["mlflow.source.git.commit"] == commit for r in train_runs)
    report_run = next(s.run_id for s in first["steps"] if s.entry_point == "report")
    # every run is named for what it is, the steps nested under main's run
    names = {s.run_id: client.get_run(s.run_id).info.run_name for s in first["steps"]}
    assert [names[s.run_id] for s in first["steps"] if s.entry_point != "evaluate"] == [
        "prepare coco", "prepare coco+cuhk", "train coco b2 cpu", "train coco+cuhk b2 cpu", "promote", "report"]
    evaluations = [s.run_id for s in first["steps"] if s.entry_point == "evaluate"]
    assert [names[e] for e in evaluations] == ["evaluate train coco b2 cpu on inhouse",
                                                "evaluate train coco+cuhk b2 cpu on inhouse"]
    main_run = client.get_run(first["run_id"])
    assert main_run.info.run_name == "main"
    assert all(client.get_run(s.run_id).data.tags["mlflow.parentRunId"] == first["run_id"] for s in first["steps"])
    experiment = client.get_experiment(main_run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    # main ends by saying what happened: AP50 table, champion and why, the report, the compare link
    out = capsys.readouterr().out
    summary = first["summary"]
    assert summary in out and "AP50 on inhouse (dataset_mix x batch_size):" in summary
    assert "| coco | " in summary and "| coco+cuhk | " in summary
    assert f"champion: persondet v{champion.version} (dataset_mix coco+cuhk, batch_size 2)" in summary
    assert "why: v" in summary
    report_artifacts = client.get_run(report_run).info.artifact_uri
    assert f"report: {report_artifacts}/report/report.html" in summary
    link = summary.splitlines()[-1]
    assert link.startswith("http://127.0.0.1:5000/#/compare-runs?runs=")
    assert all(urllib.parse.quote(run.info.run_id) in link for run in train_runs)
    html = mlflow.artifacts.download_artifacts(run_id=report_run, artifact_path="report/report.html",
                                               dst_path=str(store / "dl"))
    assert "coco+cuhk" in Path(html).read_text()

    second = main(config)
    if git_commit() != commit:
        pytest.skip("HEAD moved while the test ran (a shared checkout): the code version changed")
    assert all(s.reused for s in second["steps"])
    assert [s.run_id for s in second["steps"]] == [s.run_id for s in first["steps"]]
    assert _counts() == counts  # no new step runs
    assert os.environ["MLFLOW_TRACKING_URI"].startswith("sqlite:////")
