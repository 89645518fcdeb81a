"""The run handle: which run a step opens, how it ends, and that only rank 0 logs (real MLflow, SQLite)."""

from __future__ import annotations

import pytest

from persondet.tracking import RunHandle, create_run, hardware_label, open_run, run_name


@pytest.fixture
def client(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "handles")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    return MlflowClient(uri)


def test_a_step_joins_the_run_mlflow_run_created_once_then_opens_new_ones(client, monkeypatch):
    launched = create_run("evaluate")
    monkeypatch.setenv("MLFLOW_RUN_ID", launched.run_id)  # what `mlflow run` hands a step
    with open_run("evaluate", run_name="evaluate inhouse") as run:
        assert run.run_id == launched.run_id
        run.log_params({"a": "1"})
        import os

        assert "MLFLOW_RUN_ID" not in os.environ  # consumed: read in one place, once
        with open_run("prepare") as inner:  # a second step of the same process: its own run, nested
            assert inner.run_id != launched.run_id
    joined, nested = client.get_run(launched.run_id), client.get_run(inner.run_id)
    assert joined.info.status == "FINISHED" and joined.info.run_name == "evaluate inhouse"
    assert joined.data.params == {"a": "1"} and joined.data.tags["persondet.entry_point"] == "evaluate"
    assert nested.data.tags["mlflow.parentRunId"] == launched.run_id and nested.info.status == "FINISHED"


def test_a_run_ends_failed_on_an_error_and_killed_on_a_requested_stop(client):
    class Stop(Exception):
        pass

    with pytest.raises(ValueError):
        with open_run("train") as failed:
            raise ValueError("boom")
    with pytest.raises(Stop):
        with open_run("train", stopped=lambda exc: isinstance(exc, Stop)) as killed:
            raise Stop
    assert client.get_run(failed.run_id).info.status == "FAILED"
    assert client.get_run(killed.run_id).info.status == "KILLED"
    import mlflow

    assert mlflow.active_run() is None


def test_a_run_given_by_id_keeps_its_name_and_a_child_lands_in_its_parents_experiment(client):
    with open_run("tune", run_name="tune study") as parent:
        trial = create_run("train", parent=parent, run_name="study trial 0")
        with open_run("train", run_id=trial.run_id, run_name="ignored") as run:
            run.log_metrics({"val/AP50": 0.5}, step=1)
    child = client.get_run(trial.run_id)
    assert child.info.run_name == "study trial 0" and child.data.tags["mlflow.parentRunId"] == parent.run_id
    assert child.info.experiment_id == client.get_run(parent.run_id).info.experiment_id
    assert [(m.step, m.value) for m in client.get_metric_history(trial.run_id, "val/AP50")] == [(1, 0.5)]
    RunHandle(trial.run_id).end_if_running("FAILED")  # already ended: unchanged
    assert client.get_run(trial.run_id).info.status == "FINISHED"


def test_other_ranks_get_a_handle_that_does_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # never contacted
    monkeypatch.setenv("MLFLOW_RUN_ID", "0123456789abcdef0123456789abcdef")
    with open_run("train", system_metrics=True) as run:
        run.log_params({"a": 1})
        run.log_metrics({"loss": 1.0})
        run.metric_logger().log({"loss": 1.0}, step=0)
    assert run.run_id is None and create_run("train").run_id is None
    assert RunHandle("0123456789abcdef0123456789abcdef").run_id is None
    import os

    assert os.environ["MLFLOW_RUN_ID"]  # left for rank 0's process; a worker never reads it


@pytest.mark.parametrize("gpu_type, count, label", [
    ("cpu", 0, "cpu"), ("NVIDIA A100-SXM4-80GB", 8, "a100x8"), ("NVIDIA H200", 1, "h200x1"),
    ("Tesla V100-SXM2-16GB", 4, "v100x4"), ("NVIDIA GeForce RTX 4090", 2, "rtx4090x2"), ("Tesla T4", 1, "t4x1")])
def test_hardware_label_is_the_gpu_model_and_count(gpu_type, count, label):
    assert hardware_label(gpu_type, count) == label


def test_run_names_say_what_each_step_is():
    assert run_name("train", mix="coco+cuhk", batch_size=16, hardware="a100x8") == "train coco+cuhk b16 a100x8"
    assert run_name("evaluate", model="train coco b8 cpu", test_name="inhouse") == "evaluate train coco b8 cpu on inhouse"
    assert run_name("prepare", mix="coco+cuhk") == "prepare coco+cuhk"
    assert [run_name(e) for e in ("promote", "report", "main")] == ["promote", "report", "main"]


def test_a_run_given_by_id_can_be_renamed(client):
    created = create_run("train")
    with open_run("train", run_id=created.run_id) as run:
        run.rename("train coco b2 cpu")
    assert client.get_run(created.run_id).info.run_name == "train coco b2 cpu"


def test_experiments_persondet_logs_to_open_on_the_training_runs(client, monkeypatch):
    """MLflow 3's UI shows an experiment without a kind as a GenAI one (traces): persondet marks its own."""
    with open_run("train"):
        pass
    made = client.get_experiment_by_name("handles")
    assert made.tags["mlflow.experimentKind"] == "custom_model_development"

    # an experiment `mlflow run` created (no kind), joined through the run it made
    import mlflow.tracking.fluent as fluent

    launched = client.create_run(client.create_experiment("by-mlflow-run")).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", launched)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "by-mlflow-run")
    monkeypatch.setattr(fluent, "_active_experiment_id", None)  # a fresh step process
    with open_run("prepare"):
        pass
    assert client.get_experiment_by_name("by-mlflow-run").tags["mlflow.experimentKind"] == "custom_model_development"

    # a kind someone chose stays
    chosen = client.create_experiment("chosen", tags={"mlflow.experimentKind": "genai_development"})
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "chosen")
    with open_run("evaluate") as run:
        pass
    assert client.get_run(run.run_id).info.experiment_id == chosen
    assert client.get_experiment(chosen).tags["mlflow.experimentKind"] == "genai_development"
