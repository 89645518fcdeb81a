"""The shared tracking server of docker-compose.yml, started natively and attacked.

PostgreSQL (machine binaries, loopback, temp dir, the roles of docker/postgres-init.sql) +
scripts/start-tracking-server.sh (basic-auth, served artifacts, the bootstrap's team): credentials are
required, each database role reaches only its own database, no secret is on a command line, nobody outside
the team can write to the ``persondet`` names, the steps run against it, and a training survives a server
crash.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from native_services import ROLES, ROOT, SUPERUSER, write_secret
from training_fixtures import make_prepared_set, wait_until

pytestmark = pytest.mark.integration


def _status(url: str, user: str | None = None, password: str | None = None) -> int:
    request = urllib.request.Request(url)
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def as_client(tracking_server, monkeypatch):
    """This process is an MLflow client of the test server, with credentials, in a fresh experiment."""
    import mlflow

    for name, value in tracking_server.client_env().items():
        monkeypatch.setenv(name, value)
    experiment = f"server-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", experiment)
    mlflow.set_tracking_uri(tracking_server.uri)
    yield experiment
    mlflow.set_tracking_uri(None)


def test_unauthenticated_and_wrong_password_requests_are_refused(tracking_server):
    api = tracking_server.uri + "/api/2.0/mlflow/experiments/search?max_results=1"
    assert _status(api) == 401
    assert _status(api, tracking_server.username, "not-the-password") == 401
    assert _status(tracking_server.uri + "/", None) == 401  # the UI too
    assert _status(api, tracking_server.username, tracking_server.password) == 200
    assert _status(tracking_server.uri + "/health") == 200  # what the compose healthcheck polls


def test_a_client_with_credentials_logs_runs_and_served_artifacts(tracking_server, as_client, tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment_id = client.create_experiment(as_client)
    run = client.create_run(experiment_id)
    client.log_param(run.info.run_id, "batch_size", "8")
    client.log_metric(run.info.run_id, "AP50", 0.5, step=0)
    note = tmp_path / "note.txt"
    note.write_text("served by the tracking server")
    client.log_artifact(run.info.run_id, str(note), artifact_path="notes")
    client.set_terminated(run.info.run_id)

    stored = client.get_run(run.info.run_id)
    assert stored.data.params["batch_size"] == "8" and stored.data.metrics["AP50"] == 0.5
    assert stored.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied, not a client-side path
    on_server = list(Path(tracking_server.workdir, "artifacts").rglob("note.txt"))
    assert len(on_server) == 1 and on_server[0].read_text() == "served by the tracking server"
    back = client.download_artifacts(run.info.run_id, "notes/note.txt", str(tmp_path / "back"))
    assert Path(back).read_text() == "served by the tracking server"


def test_the_server_keeps_runs_in_postgresql(tracking_server, as_client):
    from mlflow import MlflowClient

    run_name = f"in-postgres-{uuid.uuid4().hex[:6]}"
    experiment_id = MlflowClient().create_experiment(as_client)
    MlflowClient().create_run(experiment_id, run_name=run_name)
    pg = tracking_server.postgres
    with pg.connect("mlflow") as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM runs WHERE name = %s", (run_name,))
        assert cursor.fetchone()[0] == 1




@pytest.mark.slow
def test_prepare_train_evaluate_with_credentials_and_a_server_crash_mid_training(tracking_server, as_client,
                                                                                tmp_path):
    """prepare -> train -> evaluate against the server; the server is killed and restarted while the
    training runs: the training finishes and every logged step is on the server."""
    from mlflow import MlflowClient

    from persondet.config import EvaluateConfig, PrepareConfig
    from persondet.evaluation import evaluate
    from persondet.prepare import prepare

    prepared = prepare(PrepareConfig(check_images=1))
    assert prepared.run_id and MlflowClient().get_run(prepared.run_id).info.status == "FINISHED"

    epochs, iters = 3, 4
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_RUN_ID", None)
    log = open(tmp_path / "train.log", "w")
    training = subprocess.Popen(
        [sys.executable, str(ROOT / "entrypoints" / "train.py"), "--data", prepared.run_id, "--model", "small",
         "--epochs", str(epochs), "--max-iters-per-epoch", str(iters), "--batch-size", "2", "--workers", "0",
         "--min-size", "128", "--max-size", "192"], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    client = MlflowClient()
    experiment_id = client.get_experiment_by_name(as_client).experiment_id

    def first_epoch_logged():
        runs = client.search_runs([experiment_id], "tags.`persondet.entry_point` = 'train'")
        if runs and client.get_metric_history(runs[0].info.run_id, "epoch_loss"):
            return runs[0].info.run_id
        return None

    try:
        run_id = wait_until(first_epoch_logged, 300, "the training's first epoch", training)
        tracking_server.kill()  # a crash in the middle of the training
        assert training.poll() is None, "the training ended before the crash"
        tracking_server.start()
        assert training.wait(timeout=600) == 0, (tmp_path / "train.log").read_text()[-3000:]
    finally:
        if training.poll() is None:
            training.kill()
        log.close()

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert {"gpu_type", "batch_size", "dataset_mix"} <= set(run.data.params) and "train_time_s" in run.data.metrics
    steps = {m.step for m in client.get_metric_history(run_id, "loss")}
    assert steps == set(range(epochs * iters)), f"missing steps {sorted(set(range(epochs * iters)) - steps)}"
    assert {m.step for m in client.get_metric_history(run_id, "epoch_loss")} == set(range(epochs))

    result = evaluate(EvaluateConfig(model_uri=f"runs:/{run_id}/model", examples=1))
    evaluation_runs = client.search_runs([experiment_id], "tags.`persondet.entry_point` = 'evaluate'")
    assert len(evaluation_runs) == 1 and "AP50" in evaluation_runs[0].data.metrics
    assert 0.0 <= evaluation_runs[0].data.metrics["AP50"] <= 1.0 and result


# --- least privilege (issue 10, point 14) ----------------------------------------------------------------

def _denied(connect) -> str:
    """The error message of a connection or statement that must be refused."""
    import psycopg2

    with pytest.raises(psycopg2.Error) as error:
        connect()
    return str(error.value)


def test_each_database_role_is_no_superuser_and_reaches_only_its_own_database(native_postgres, tracking_server):
    import psycopg2

    pg = native_postgres
    with pg.connect("postgres", SUPERUSER) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT rolname, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls "
                       "FROM pg_roles WHERE rolname = ANY(%s)", ([role for role, _ in ROLES.values()],))
        flags = {row[0]: row[1:] for row in cursor.fetchall()}
        cursor.execute("SELECT datname, pg_get_userbyid(datdba) FROM pg_database WHERE datname = ANY(%s)",
                       (list(ROLES),))
        owners = dict(cursor.fetchall())
    assert flags == {role: (False,) * 5 for role, _ in ROLES.values()}
    assert owners == {database: role for database, (role, _) in ROLES.items()}

    for database in ROLES:
        for other in set(ROLES) | {"postgres"}:
            if other == database:
                continue
            message = _denied(lambda: psycopg2.connect(host="127.0.0.1", port=pg.port, user=pg.role(database),
                                                       password=pg.passwords[database], dbname=other))
            assert "permission denied for database" in message, message
    tracking = pg.connect("mlflow")  # the tracking role
    tracking.autocommit = True  # CREATE DATABASE runs outside a transaction
    try:
        for statement, message in (("CREATE ROLE intruder", "permission denied to create role"),
                                   ("CREATE DATABASE x", "permission denied to create database"),
                                   ("ALTER ROLE mlflow_tracking SUPERUSER", "must be superuser")):
            with tracking.cursor() as cursor:
                assert message in _denied(lambda: cursor.execute(statement))
    finally:
        tracking.close()
    with pg.connect("mlflow") as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM experiments")  # its own tables: mlflow db upgrade made them
        assert cursor.fetchone()[0] >= 1
    with pg.connect("optuna") as connection, connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE scratch (x int)")  # it may work in its own database


def test_the_init_sql_rotates_a_role_password_and_refuses_a_short_one(native_postgres, tmp_path):
    import psycopg2

    pg = native_postgres
    old = pg.passwords["optuna"]
    pg.passwords["optuna"] = "rotated-" + old
    result = pg.run_init_sql()  # the same file, run again: idempotent, sets the passwords from the files
    assert result.returncode == 0, result.stderr
    with pg.connect("optuna"):
        pass
    assert "password authentication failed" in _denied(lambda: psycopg2.connect(
        host="127.0.0.1", port=pg.port, user="optuna", password=old, dbname="optuna"))

    short = write_secret(tmp_path / "short", "too-short")
    result = pg.run_init_sql(optuna=short)
    assert result.returncode != 0 and "at least 12 characters" in result.stderr
    assert "too-short" not in result.stdout + result.stderr
    with pg.connect("optuna"):  # nothing changed
        pass


def _session_processes(session_id: int) -> dict[int, str]:
    """pid -> command line of every process of a session (the server and the workers it started)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getsid(int(entry)) != session_id:
                continue
            found[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ProcessLookupError):
            continue
    return found


def test_no_secret_is_on_a_command_line_or_in_the_auth_configuration(tracking_server):
    processes = _session_processes(tracking_server.process.pid)
    commands = " \n".join(processes.values())
    assert "mlflow server" in commands and "uvicorn" in commands, commands  # the server and its worker
    for secret in tracking_server.secret_values():
        assert secret not in commands
    runtime = Path(tracking_server.workdir, "runtime")
    for name in ("basic_auth.ini", "pgpass"):
        assert oct((runtime / name).stat().st_mode & 0o777) == "0o600"
    ini = (runtime / "basic_auth.ini").read_text()
    assert "admin_password" not in ini and tracking_server.password not in ini
    assert "auth_cache_ttl_seconds = 60" in ini
    for secret in tracking_server.secret_values():  # the process environment holds only the Flask key
        for pid in processes:
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if secret != tracking_server.secret_key:
                assert secret not in environ, f"a secret in the environment of {processes[pid][:80]}"


# --- names nobody can squat (issue 10, point 15) -----------------------------------------------------------

OUTSIDER = ("outsider", "outsider-password-0123")


@pytest.fixture(scope="module")
def outsider(tracking_server):
    """A user the admin created who is not in the team: READ (the default) on the persondet names."""
    from mlflow.server import get_app_client

    os.environ.update(MLFLOW_TRACKING_USERNAME=tracking_server.username,
                      MLFLOW_TRACKING_PASSWORD=tracking_server.password)
    try:
        get_app_client("basic-auth", tracking_uri=tracking_server.uri).create_user(*OUTSIDER)
    finally:
        os.environ.pop("MLFLOW_TRACKING_USERNAME")
        os.environ.pop("MLFLOW_TRACKING_PASSWORD")
    return OUTSIDER


def _client(tracking_server, monkeypatch, user: str, password: str):
    from mlflow import MlflowClient

    for name, value in {**tracking_server.client_env(), "MLFLOW_TRACKING_USERNAME": user,
                        "MLFLOW_TRACKING_PASSWORD": password, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}.items():
        monkeypatch.setenv(name, value)
    return MlflowClient(tracking_uri=tracking_server.uri)


def test_the_persondet_names_exist_and_only_the_team_may_write_them(tracking_server, outsider, monkeypatch):
    from mlflow.exceptions import MlflowException

    admin = _client(tracking_server, monkeypatch, tracking_server.username, tracking_server.password)
    experiment = admin.get_experiment_by_name("persondet")
    assert experiment is not None and experiment.artifact_location.startswith("mlflow-artifacts:")
    assert admin.get_registered_model("persondet").name == "persondet"

    client = _client(tracking_server, monkeypatch, *outsider)
    with pytest.raises(MlflowException, match="RESOURCE_ALREADY_EXISTS"):
        client.create_registered_model("persondet")  # nobody can take the name
    with pytest.raises(MlflowException, match="PERMISSION_DENIED|Permission denied"):
        client.create_run(experiment.experiment_id)
    with pytest.raises(MlflowException, match="PERMISSION_DENIED|Permission denied"):
        client.set_registered_model_tag("persondet", "owner", "outsider")
    own = client.create_experiment(f"outsider-{uuid.uuid4().hex[:6]}")  # elsewhere, the default rules
    assert client.get_experiment(own).name.startswith("outsider-")

    member = _client(tracking_server, monkeypatch, "member", tracking_server.team["member"])
    run = member.create_run(experiment.experiment_id)
    member.log_metric(run.info.run_id, "m", 1.0)
    member.set_registered_model_tag("persondet", "checked-by", "member")
    member.set_terminated(run.info.run_id)


@pytest.mark.slow
def test_a_second_init_resets_foreign_grants_on_the_names_and_keeps_the_team(tracking_server, outsider,
                                                                            monkeypatch):
    """The admin (or an old deployment) gave the outsider MANAGE on the model; the next start takes it
    away again: the team file is the truth."""
    from mlflow.server import get_app_client

    from persondet.server import init_server

    _client(tracking_server, monkeypatch, tracking_server.username, tracking_server.password)
    auth = get_app_client("basic-auth", tracking_uri=tracking_server.uri)
    auth.grant_user_permission(outsider[0], "registered_model", "persondet", "MANAGE")
    assert auth.get_user_permission(outsider[0], "registered_model", "persondet").permission == "MANAGE"
    init_server(tracking_server.env())
    assert auth.get_user_permission(outsider[0], "registered_model", "persondet").permission == "READ"
    assert auth.get_user_permission("member", "registered_model", "persondet").permission == "EDIT"


def _train(tracking_server, user: str, password: str, data: Path, cwd: Path, **env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME")}
    environment.update({**tracking_server.client_env(), "MLFLOW_TRACKING_USERNAME": user,
                        "MLFLOW_TRACKING_PASSWORD": password, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                        "OMP_NUM_THREADS": "1", **env})
    return subprocess.run(
        [sys.executable, str(ROOT / "entrypoints" / "train.py"), "--data", str(data), "--model", "small",
         "--epochs", "1", "--max-iters-per-epoch", "1", "--batch-size", "2", "--workers", "0",
         "--min-size", "64", "--max-size", "96", "--checkpoint-dir", str(cwd / "checkpoints")],
        env=environment, cwd=cwd, capture_output=True, text=True, timeout=900)


def _error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("persondet: error:")]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    return lines[0]


@pytest.mark.slow
def test_train_checks_its_permissions_before_the_first_epoch(tracking_server, outsider, tmp_path, monkeypatch):
    data = make_prepared_set(tmp_path / "data", images=4)
    client = _client(tracking_server, monkeypatch, *outsider)
    persondet = client.get_experiment_by_name("persondet").experiment_id
    before = len(client.search_runs([persondet]))

    refused = _train(tracking_server, *outsider, data, tmp_path)
    assert "outsider may not log runs to the experiment 'persondet'" in _error_line(refused)
    assert "nothing was trained" in _error_line(refused)

    own = f"outsider-{uuid.uuid4().hex[:6]}"
    own_id = client.create_experiment(own)
    refused = _train(tracking_server, *outsider, data, tmp_path, MLFLOW_EXPERIMENT_NAME=own)
    assert "outsider may not register versions of the model 'persondet'" in _error_line(refused)
    assert client.search_runs([own_id]) == [] and not (tmp_path / "checkpoints").exists()  # no epoch ran
    assert len(client.search_runs([persondet])) == before


@pytest.mark.slow
def test_a_team_member_trains_and_registers_a_version(tracking_server, tmp_path, monkeypatch):
    data = make_prepared_set(tmp_path / "data", images=4)
    password = tracking_server.team["member"]
    client = _client(tracking_server, monkeypatch, "member", password)
    before = {v.version for v in client.search_model_versions("name = 'persondet'")}
    result = _train(tracking_server, "member", password, data, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (new,) = [v for v in client.search_model_versions("name = 'persondet'") if v.version not in before]
    run = client.get_run(new.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["persondet.model_version"] == str(new.version)
    assert client.get_experiment(run.info.experiment_id).name == "persondet"
