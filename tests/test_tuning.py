"""`tune`: the optuna study, its pruning on per-epoch val/AP50, nested MLflow runs, shared PostgreSQL
storage across worker processes and the retry of a dead worker's trial.  Real trainings on a tiny set."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from persondet.config import ConfigError, TuneConfig
from persondet.errors import PersondetError
from training_fixtures import make_prepared_set

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(model="small", epochs=2, max_iters_per_epoch=1, workers=0, batch_sizes="2,4")


@pytest.fixture
def tiny_set(tmp_path) -> Path:
    return make_prepared_set(tmp_path / "data", images=6)


@pytest.fixture
def local_tracking(tmp_path, monkeypatch):
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "tune-test")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)


def tiny_config(tiny_set: Path, storage: str, **overrides) -> TuneConfig:
    settings = dict(TINY, storage=storage, data=str(tiny_set), val_annotations=str(tiny_set),
                    val_images=str(tiny_set.parent), study_name="study")
    settings.update(overrides)
    return TuneConfig(**settings)


def cli_args(config: TuneConfig) -> list[str]:
    args = []
    for name, value in config.to_params().items():
        if name != "storage" and value != "":
            args += ["--" + name.replace("_", "-"), value]
    return args + ["--storage", config.storage]


def _with_children(pid: int) -> list:
    try:
        process = psutil.Process(pid)
        return [process, *process.children(recursive=True)]
    except psutil.Error:
        return []


def nested_runs(parent_run_id: str):
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'")


# --- bad input --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("settings, message", [
    ({"n_trials": 0}, "n_trials=0 must be >= 1"),
    ({"lr_min": 0.1, "lr_max": 0.01}, "lr_min=0.1, lr_max=0.01"),
    ({"batch_sizes": "8,x"}, "batch_sizes='8,x'"),
    ({"cuhk_ratio_min": 0}, "cuhk_ratio_min=0"),
    ({"heartbeat_interval": 60, "grace_period": 30}, "grace_period=30 must be > heartbeat_interval=60"),
    ({"val_annotations": "val.json"}, "val_annotations and val_images go together"),
])
def test_tune_config_rejects_bad_values(settings, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TuneConfig(**settings)


def test_tune_entry_point_reports_a_bad_value_on_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "entrypoints" / "tune.py"), "--n-trials", "zero"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == "persondet: error: n_trials='zero' is not a valid int"
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_an_unreachable_storage_is_named_without_its_password(tiny_set, local_tracking, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from persondet.tuning import tune

    monkeypatch.setenv("PERSONDET_TUNE_STORAGE_PASSWORD", "hunter22-hunter22")
    with pytest.raises(PersondetError, match=rf"storage='postgresql\+psycopg2://u@127.0.0.1:{port}/optuna' "
                                             "cannot be opened") as error:
        tune(tiny_config(tiny_set, f"postgresql://u@127.0.0.1:{port}/optuna"))
    assert "hunter22" not in str(error.value)


@pytest.mark.parametrize("storage", ["postgresql://optuna:hunter22@db:5432/optuna",
                                     "postgresql+psycopg2://optuna:hunter22@db/optuna",
                                     "postgresql://db/optuna?user=optuna&password=hunter22"])
def test_tune_refuses_a_storage_with_a_password_and_says_where_it_goes(storage, tmp_path):
    """`mlflow run -P storage=...` records the value as a run parameter every user can read."""
    result = subprocess.run([sys.executable, str(ROOT / "entrypoints" / "tune.py"), "--storage", storage],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("persondet: error: storage has a password in it")
    assert "PERSONDET_TUNE_STORAGE_PASSWORD_FILE" in lines[0] and "~/.pgpass" in lines[0]
    assert "hunter22" not in result.stderr and list(tmp_path.iterdir()) == []


def test_an_existing_study_is_refused_without_load_if_exists(tiny_set, local_tracking, tmp_path):
    import optuna

    from persondet.tuning import tune

    storage = f"sqlite:///{tmp_path}/optuna.db"
    optuna.create_study(storage=storage, study_name="study")
    with pytest.raises(PersondetError, match="study_name='study' already exists .* load_if_exists=true"):
        tune(tiny_config(tiny_set, storage, load_if_exists=False))


# --- one worker: nested runs, pruning, best on the parent --------------------------------------------------

@pytest.mark.slow
def test_a_trial_below_the_median_is_pruned_and_recorded_as_such(tiny_set, local_tracking, tmp_path):
    import optuna
    from mlflow import MlflowClient
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from persondet.tuning import tune

    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(storage=storage, study_name="study", direction="maximize")
    strong = {"lr": 0.01, "batch_size": 4, "cuhk_ratio": 2.0}
    distributions = {"lr": FloatDistribution(1e-3, 5e-2, log=True), "batch_size": CategoricalDistribution([2, 4]),
                     "cuhk_ratio": FloatDistribution(0.25, 4.0, log=True)}
    for _ in range(2):  # two finished trials far above what 2 iterations of training reach
        study.add_trial(optuna.trial.create_trial(params=strong, distributions=distributions, value=0.9,
                                                  intermediate_values={0: 0.9, 1: 0.9}))

    summary = tune(tiny_config(tiny_set, storage, n_trials=1, pruner_startup_trials=1, pruner_warmup_epochs=0))

    assert (summary["trials"], summary["pruned"], summary["complete"]) == (3, 1, 2)
    trial = study.get_trials()[2]
    assert trial.state == optuna.trial.TrialState.PRUNED and list(trial.intermediate_values) == [0]
    client = MlflowClient()
    (run,) = nested_runs(summary["parent_run_id"])
    assert run.info.run_id == trial.user_attrs["mlflow_run_id"]
    assert run.info.status == "KILLED" and run.data.tags["persondet.trial_state"] == "PRUNED"
    assert run.info.run_name == f"study trial {trial.number}"  # a trial keeps the name its study gave it
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/AP50")] == [0]  # stopped after epoch 0
    assert run.data.params["batch_size"] == str(trial.params["batch_size"])
    assert run.data.params["source_weights"] == f"coco=1,cuhk={trial.params['cuhk_ratio']:.4g}"
    parent = client.get_run(summary["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["persondet.entry_point"] == "tune"
    assert parent.data.params["best_batch_size"] == "4" and parent.data.metrics["best_val_AP50"] == 0.9
    assert parent.data.metrics["trials_pruned"] == 1


# --- many workers: one PostgreSQL-backed study -------------------------------------------------------------

@pytest.mark.integration
@pytest.mark.slow
def test_two_workers_on_one_postgresql_study_run_every_trial_exactly_once(tiny_set, native_postgres,
                                                                          tracking_server, tmp_path, monkeypatch):
    import optuna
    from mlflow import MlflowClient

    per_worker = 2
    storage = native_postgres.uri("optuna")  # no password: the workers read it from the file
    config = tiny_config(tiny_set, storage, n_trials=per_worker, study_name=f"shared-{os.getpid()}", epochs=1)
    env = {**os.environ, **tracking_server.client_env(), "MLFLOW_EXPERIMENT_NAME": "tune-shared",
           "PERSONDET_TUNE_STORAGE_PASSWORD_FILE": native_postgres.password_file("optuna")}
    env.pop("MLFLOW_RUN_ID", None)
    logs = [open(tmp_path / f"worker{i}.log", "w") for i in range(2)]
    workers = [subprocess.Popen([sys.executable, str(ROOT / "entrypoints" / "tune.py"), *cli_args(config)],
                                env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT) for log in logs]
    password = native_postgres.passwords["optuna"]
    deadline, seen = time.monotonic() + 600, 0
    while any(w.poll() is None for w in workers) and time.monotonic() < deadline:
        # nobody on this machine can read the password off a worker's (or its children's) command line
        for process in [p for w in workers if w.poll() is None for p in _with_children(w.pid)]:
            try:
                command = " ".join(process.cmdline())
            except psutil.Error:  # ended meanwhile
                continue
            seen += 1
            assert password not in command, command
        time.sleep(0.5)
    for worker, log in zip(workers, logs):
        worker.wait(timeout=60)
        log.close()
    outputs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert [w.returncode for w in workers] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    assert seen >= 2

    from optuna.storages import RDBStorage

    trials = optuna.load_study(study_name=config.study_name, storage=RDBStorage(
        storage.replace("postgresql://", "postgresql+psycopg2://"),
        engine_kwargs={"connect_args": {"password": password}})).get_trials()
    assert sorted(t.number for t in trials) == list(range(2 * per_worker))  # none lost, none extra
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert all(t.state in finished for t in trials), [t.state for t in trials]
    run_ids = [t.user_attrs["mlflow_run_id"] for t in trials]
    assert len(set(run_ids)) == len(trials)  # one run per trial, none shared

    for name, value in tracking_server.client_env().items():
        monkeypatch.setenv(name, value)  # read back through the server, with credentials
    client = MlflowClient(tracking_uri=tracking_server.uri)
    parents = set()
    for trial, run_id in zip(trials, run_ids):
        run = client.get_run(run_id)
        assert run.data.tags["persondet.trial_number"] == str(trial.number)
        assert run.data.params["batch_size"] == str(trial.params["batch_size"])
        parents.add(run.data.tags["mlflow.parentRunId"])
    assert len(parents) == 2  # each worker's parent run holds its own trials
    for run_id in list(parents) + run_ids:  # every user of the server reads these
        data = client.get_run(run_id).data
        assert password not in " ".join(list(data.params.values()) + list(data.tags.values()))
    for parent in parents:
        assert client.get_run(parent).info.status == "FINISHED"
        children = client.search_runs([client.get_run(parent).info.experiment_id],
                                      f"tags.`mlflow.parentRunId` = '{parent}'")
        assert len(children) == per_worker


# --- a worker dies: its stale trial is re-run -------------------------------------------------------------

@pytest.mark.slow
def test_a_dead_workers_trial_goes_stale_and_is_retried_with_its_parameters(tiny_set, local_tracking, tmp_path):
    import optuna
    from mlflow import MlflowClient

    from persondet.tuning import tune

    storage = f"sqlite:///{tmp_path}/optuna.db"
    heartbeat = dict(heartbeat_interval=1, grace_period=3)
    long_trial = tiny_config(tiny_set, storage, n_trials=1, epochs=200, **heartbeat)
    worker = subprocess.Popen([sys.executable, str(ROOT / "entrypoints" / "tune.py"), *cli_args(long_trial)],
                              env={**os.environ}, cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                running = optuna.load_study(study_name="study", storage=storage).get_trials(
                    states=(optuna.trial.TrialState.RUNNING,))
            except KeyError:  # the study does not exist yet
                running = []
            if running and "mlflow_run_id" in running[0].user_attrs:
                break
            assert worker.poll() is None, "the worker ended before its trial started"
            time.sleep(0.5)
        else:
            pytest.fail("the first worker never started a trial")
        time.sleep(2)  # training
    finally:
        os.killpg(worker.pid, signal.SIGKILL)  # the worker dies without ending anything
        worker.wait()
    dead = running[0]
    time.sleep(heartbeat["grace_period"] + 1)

    tune(tiny_config(tiny_set, storage, n_trials=1, **heartbeat))

    trials = optuna.load_study(study_name="study", storage=storage).get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    retry = trials[1]
    assert retry.system_attrs["failed_trial"] == dead.number and retry.params == dead.params
    client = MlflowClient()
    stale_run = client.get_run(dead.user_attrs["mlflow_run_id"])
    assert stale_run.info.status == "FAILED" and stale_run.data.tags["persondet.trial_state"] == "STALE"
    retry_run = client.get_run(retry.user_attrs["mlflow_run_id"])
    assert retry_run.info.status == "FINISHED"
    assert retry_run.data.tags["persondet.retry_of_trial"] == str(dead.number)
