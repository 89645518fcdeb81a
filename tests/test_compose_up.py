"""`docker compose up` for real (issue 12, point 3): docker-compose.yml on a real Docker Engine, with the
compose tool Debian bookworm ships (docker-compose 1.29, apt package ``docker-compose``).

The engine is the one tests/docker_engine.py starts (bridge-less, host networking only, no registry), so
the test adds tests/compose/docker-compose.hostnet.yml: host networking on loopback ports and a local
PostgreSQL stand-in image. The MLflow server image is docker/server.Dockerfile built on the local base
image from a wheelhouse at the versions of docker/constraints.txt. Against the stack run the checks the
native integration test runs: healthy, ``mlflow db upgrade`` done, unauthenticated and wrong-password
requests refused, no secret on a process command line, and a short training (on the host) logged and
registered with a team member's credentials. A short admin password stops ``up`` at the init step with
one line, and nothing restarts.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from native_services import free_port
from training_fixtures import make_prepared_set

pytestmark = [pytest.mark.containers, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILES = ("docker-compose.yml", "tests/compose/docker-compose.hostnet.yml")
POSTGRES_IMAGE = "persondet-test-postgres:15"


@pytest.fixture(scope="module")
def compose_tool() -> str:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose not installed (Debian's apt package docker-compose; scripts/system-deps.sh)")
    return tool


@pytest.fixture(scope="module")
def stack_images(server_image, docker_client, docker_base_image):
    """The MLflow server image (docker/server.Dockerfile, built by the harness from its wheelhouse at the
    versions of docker/constraints.txt) and the PostgreSQL stand-in, built through the Engine API."""
    from docker_engine import timed
    from persondet.images import build_image

    with timed(f"image build: {POSTGRES_IMAGE}"):  # apt-get from the Debian mirror, host networking
        build_image(docker_client, "tests/compose/postgres.Dockerfile", POSTGRES_IMAGE,
                    {"BASE_IMAGE": docker_base_image}, network_mode="host", where="test engine")
    return server_image, POSTGRES_IMAGE


class Stack:
    """One compose project on the test engine: its secrets, ports and the compose command."""

    def __init__(self, tool: str, engine, workdir: Path):
        self.tool, self.engine = tool, engine
        self.project = f"persondet-test-{uuid.uuid4().hex[:8]}"
        self.secrets = workdir / "secrets"
        self.pg_port, self.mlflow_port = free_port(), free_port()
        self.uri = f"http://127.0.0.1:{self.mlflow_port}"
        result = subprocess.run(["bash", str(ROOT / "scripts" / "make-secrets.sh")], capture_output=True,
                                text=True, env={**os.environ, "PERSONDET_SECRETS_DIR": str(self.secrets)})
        assert result.returncode == 0, result.stderr

    def secret(self, name: str) -> str:
        return (self.secrets / name).read_text().rstrip("\n")

    def member(self) -> tuple[str, str]:
        line = next(x for x in self.secret("team").splitlines() if x and not x.startswith("#"))
        username, _, password = line.partition(":")
        return username, password

    def compose(self, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        env.update({"DOCKER_HOST": self.engine.base_url, "COMPOSE_PROJECT_NAME": self.project,
                    "PERSONDET_SECRETS_DIR": str(self.secrets), "PERSONDET_POSTGRES_IMAGE": POSTGRES_IMAGE,
                    "PERSONDET_TEST_PG_PORT": str(self.pg_port),
                    "PERSONDET_TEST_MLFLOW_PORT": str(self.mlflow_port)})
        files = [a for f in COMPOSE_FILES for a in ("-f", f)]
        return subprocess.run([self.tool, *files, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)

    def containers(self, client) -> dict:
        found = client.containers.list(all=True, filters={"label": f"com.docker.compose.project={self.project}"})
        return {c.labels["com.docker.compose.service"]: c for c in found}

    def down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", timeout=300)


def _wait_healthy(container, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    status = "?"
    while time.monotonic() < deadline:
        container.reload()
        status = container.attrs["State"].get("Health", {}).get("Status", container.status)
        if status == "healthy" or container.status == "exited":
            return status
        time.sleep(2)
    return status


@pytest.fixture(scope="module")
def stack(compose_tool, docker_engine, docker_client, stack_images, tmp_path_factory):
    """postgres + mlflow-init + mlflow up (what a user starts), healthy; yields (Stack, seconds to healthy)."""
    stack = Stack(compose_tool, docker_engine, tmp_path_factory.mktemp("compose-up"))
    started = time.monotonic()
    try:
        result = stack.compose("up", "-d", "--no-build", "postgres", "mlflow")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        mlflow = stack.containers(docker_client)["mlflow"]
        status = _wait_healthy(mlflow, 300)
        assert status == "healthy", f"{status}:\n" + mlflow.logs().decode(errors="replace")[-3000:]
        yield stack, time.monotonic() - started
    finally:
        stack.down()


def test_compose_up_brings_the_stack_up_healthy_after_a_successful_init(stack, docker_client):
    stack, seconds = stack
    print(f"\ncompose up -> mlflow healthy: {seconds:.1f} s")
    containers = stack.containers(docker_client)
    assert {"postgres", "mlflow-init", "mlflow"} <= set(containers)
    init = containers["mlflow-init"]
    init.reload()
    assert init.attrs["State"]["ExitCode"] == 0 and init.attrs["RestartCount"] == 0
    log = init.logs().decode(errors="replace")
    assert "mlflow db upgrade" in log and "created the experiment 'persondet'" in log
    assert containers["postgres"].attrs["State"]["Health"]["Status"] == "healthy"


def test_mlflow_db_upgrade_ran_as_the_tracking_role(stack):
    import mlflow
    import psycopg2
    from alembic.script import ScriptDirectory

    stack, _ = stack
    head = ScriptDirectory(str(Path(mlflow.__file__).parent / "store" / "db_migrations")).get_current_head()
    with psycopg2.connect(host="127.0.0.1", port=stack.pg_port, dbname="mlflow", user="mlflow_tracking",
                          password=stack.secret("tracking_db_password")) as connection, connection.cursor() as cur:
        cur.execute("SELECT version_num FROM alembic_version")
        assert cur.fetchone()[0] == head  # the image's mlflow is the tested one (docker/constraints.txt)
        cur.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'experiments'")
        assert cur.fetchone()[0] == "mlflow_tracking"
    with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
        psycopg2.connect(host="127.0.0.1", port=stack.pg_port, dbname="mlflow_auth", user="mlflow_tracking",
                         password=stack.secret("tracking_db_password"))


def test_unauthenticated_and_wrong_password_requests_are_refused(stack):
    stack, _ = stack
    api = f"{stack.uri}/api/2.0/mlflow/experiments/get-by-name?experiment_name=persondet"
    assert requests.get(api, timeout=30).status_code == 401
    assert requests.get(api, auth=("admin", "not-the-password-0"), timeout=30).status_code == 401
    assert requests.get(api, auth=("admin", stack.secret("mlflow_admin_password")), timeout=30).status_code == 200
    assert requests.get(f"{stack.uri}/health", timeout=30).status_code == 200


def test_no_secret_on_a_command_line_in_any_container(stack, docker_client):
    """Read on the host, in /proc/<pid>/cmdline of every process of every container (what any local user
    can read), and in each container's configured command and environment."""
    stack, _ = stack
    secrets = [stack.secret(name) for name in ("postgres_password", "tracking_db_password", "auth_db_password",
                                               "optuna_db_password", "mlflow_admin_password", "flask_secret_key")]
    secrets.append(stack.member()[1])
    commands = []
    for name, container in stack.containers(docker_client).items():
        container.reload()
        config = container.attrs["Config"]
        commands.append(" ".join((config.get("Entrypoint") or []) + (config.get("Cmd") or [])))
        assert not [v for v in config.get("Env") or [] if any(s in v for s in secrets)], name
        if container.status != "running":
            continue
        top = container.top()
        pid_column = top["Titles"].index("PID")
        for row in top["Processes"]:
            try:
                commands.append(Path(f"/proc/{row[pid_column]}/cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:  # ended meanwhile
                pass
    assert any("uvicorn" in c for c in commands) and any("postgres -D" in c for c in commands), commands
    for secret in secrets:
        assert not [c for c in commands if secret in c]


def test_a_team_member_trains_on_the_host_and_registers_with_the_composed_server(stack, tmp_path):
    from mlflow import MlflowClient

    stack, _ = stack
    user, password = stack.member()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update({"MLFLOW_TRACKING_URI": stack.uri, "MLFLOW_TRACKING_USERNAME": user,
                "MLFLOW_TRACKING_PASSWORD": password, "OMP_NUM_THREADS": "1"})
    data = make_prepared_set(tmp_path / "data", images=4)
    result = subprocess.run(
        [sys.executable, str(ROOT / "entrypoints" / "train.py"), "--data", str(data), "--model", "small",
         "--epochs", "1", "--max-iters-per-epoch", "1", "--batch-size", "2", "--workers", "0",
         "--min-size", "64", "--max-size", "96"], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    os.environ.update(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password)
    try:
        client = MlflowClient(tracking_uri=stack.uri)
        (version,) = client.search_model_versions("name = 'persondet'")
        run = client.get_run(version.run_id)
    finally:
        os.environ.pop("MLFLOW_TRACKING_USERNAME")
        os.environ.pop("MLFLOW_TRACKING_PASSWORD")
    assert run.info.status == "FINISHED" and "epoch_loss" in run.data.metrics
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # stored in the compose volume


def test_a_short_admin_password_stops_up_at_the_init_step_in_one_line(compose_tool, docker_engine, docker_client,
                                                                      stack_images, tmp_path):
    stack = Stack(compose_tool, docker_engine, tmp_path)
    (stack.secrets / "mlflow_admin_password").write_text("short-pw\n")
    try:
        result = stack.compose("up", "-d", "--no-build", "postgres", "mlflow", timeout=600)
        assert result.returncode != 0
        # 1.29: 'Container "<id>" exited with code 2.'; Compose v2: 'service "mlflow-init" didn't complete
        # successfully: exit 2'
        assert re.search(r"exited with code 2|didn't complete successfully: exit 2", result.stderr), result.stderr
        containers = stack.containers(docker_client)
        init = containers["mlflow-init"]
        init.reload()
        assert init.attrs["State"]["ExitCode"] == 2 and init.attrs["RestartCount"] == 0
        lines = init.logs().decode(errors="replace").strip().splitlines()
        assert lines[-1] == ("persondet: error: MLFLOW_AUTH_ADMIN_PASSWORD has 8 characters: MLflow requires at "
                             "least 12 (make a new one: python3 -c \"import secrets; "
                             "print(secrets.token_urlsafe(24))\")")
        assert "mlflow" not in containers or containers["mlflow"].status != "running"
    finally:
        stack.down()
