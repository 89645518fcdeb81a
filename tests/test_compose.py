"""docker-compose.yml, its Dockerfiles and the server start script, checked without a container engine.

The compose file is parsed with PyYAML and its ${...} interpolation is evaluated by the rules of the
Compose specification, so "refuses to start while a secret is unset" is tested, not assumed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from native_services import free_port
from persondet.errors import PersondetError
from persondet import server

ROOT = Path(__file__).resolve().parents[1]
SECRETS = ("POSTGRES_PASSWORD", "MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD",
           "MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
_VAR = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>\w+)")


class ComposeRefuses(Exception):
    pass


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution: ${V}, ${V:-default}, ${V-default}, ${V:?error}, ${V?error}, $$."""
    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op"), match.group("arg")
        value = env.get(name)
        unset_or_empty = not value
        if op in (":?", "?") and (unset_or_empty if op == ":?" else value is None):
            raise ComposeRefuses(f"{name}: {arg}")
        if op in (":-", "-") and (unset_or_empty if op == ":-" else value is None):
            return arg
        return value or ""
    return _VAR.sub(substitute, text)


def compose_config(env: dict[str, str]) -> dict:
    """The parsed file with every string value interpolated (as compose does; comments are not)."""
    def walk(node):
        if isinstance(node, dict):
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value) for value in node]
        return interpolate(node, env) if isinstance(node, str) else node
    return walk(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def full_env() -> dict[str, str]:
    return {name: f"value-of-{name.lower()}" for name in SECRETS}


@pytest.fixture(scope="module")
def compose() -> dict:
    return compose_config(full_env())


def test_compose_refuses_to_start_while_any_secret_is_unset_or_empty():
    compose_config(full_env())  # all set: fine
    for name in SECRETS:
        for missing in ({k: v for k, v in full_env().items() if k != name}, {**full_env(), name: ""}):
            with pytest.raises(ComposeRefuses, match=name):
                compose_config(missing)


def test_no_default_secret_anywhere_in_the_repository():
    risky = re.compile(r"PASSWORD|SECRET|TOKEN|KEY", re.I)
    compose_text = (ROOT / "docker-compose.yml").read_text()
    for match in _VAR.finditer(compose_text):
        name = match.group("name") or match.group("bare") or ""
        if risky.search(name):
            assert match.group("op") == ":?", f"{match.group(0)} must use :? (no default, refuse when empty)"
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            assert name in SECRETS and value == "", f".env.example: {line!r} must be an empty placeholder"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assignment = re.compile(r"(POSTGRES_PASSWORD|MLFLOW_AUTH_ADMIN_PASSWORD|MLFLOW_FLASK_SERVER_SECRET_KEY|"
                            r"MLFLOW_TRACKING_PASSWORD)\s*[=:]\s*['\"]?([A-Za-z0-9_\-]{6,})")
    for path in tracked:
        if path.startswith("tests/") or not (ROOT / path).is_file():
            continue
        text = (ROOT / path).read_text(errors="ignore")
        for m in assignment.finditer(text):
            assert m.group(2).startswith("$"), f"{path}: {m.group(0)!r} looks like a default secret"
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


def test_postgres_is_the_backend_with_a_healthcheck_and_is_not_published(compose):
    pg = compose["services"]["postgres"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert "ports" not in pg
    init = [v for v in pg["volumes"] if "docker-entrypoint-initdb.d" in v]
    assert init and (ROOT / init[0].split(":")[0]).is_file()


def test_mlflow_server_uses_the_start_script_postgres_auth_and_served_artifacts(compose):
    mlflow = compose["services"]["mlflow"]
    assert mlflow["command"] == ["bash", "scripts/start-tracking-server.sh"]
    env = mlflow["environment"]
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://mlflow:value-of-postgres_password@postgres:")
    for name in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert env[name] == f"value-of-{name.lower()}"
    artifacts = env["MLFLOW_ARTIFACTS_DESTINATION"]
    assert any(v.endswith(":" + artifacts) and v.split(":")[0] in compose["volumes"] for v in mlflow["volumes"])
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "/health" in " ".join(mlflow["healthcheck"]["test"])
    assert mlflow["ports"] and all(p.startswith("127.0.0.1:") for p in mlflow["ports"])
    # The trainer reaches the server as mlflow:5000; MLflow's host check must accept that Host header.
    assert "mlflow:5000" in env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")


def test_no_service_publishes_a_port_beyond_loopback(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_trainer_runs_mlflow_run_against_the_server_with_gpus_reserved(compose):
    trainer = compose["services"]["trainer"]
    assert trainer["command"][:2] == ["mlflow", "run"]
    env = trainer["environment"]
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["MLFLOW_TRACKING_USERNAME"] and env["MLFLOW_TRACKING_PASSWORD"]
    devices = trainer["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert trainer["depends_on"]["mlflow"]["condition"] == "service_healthy"


def test_images_are_built_from_dockerfiles_in_the_repository(compose):
    for name in ("mlflow", "trainer"):
        build = compose["services"][name]["build"]
        dockerfile = ROOT / build["context"] / build["dockerfile"]
        assert dockerfile.is_file(), dockerfile
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY "):
                for source in line.split()[1:-1]:
                    assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source} does not exist"


def test_server_image_installs_the_pyproject_requirements():
    with open(ROOT / "pyproject.toml", "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    dockerfile = (ROOT / "docker" / "server.Dockerfile").read_text()
    for package in ("mlflow", "psycopg2-binary"):
        spec = next(d for d in deps if re.match(rf"{re.escape(package)}\b", d))
        assert f'"{spec}"' in dockerfile, f"server.Dockerfile must install {spec!r} like pyproject.toml"


# --- the start script: bad input -------------------------------------------------------------------------

def _run_start_script(env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.run(["bash", str(ROOT / "scripts" / "start-tracking-server.sh")],
                          env={**base, "PYTHON": sys.executable, **env}, capture_output=True, text=True,
                          timeout=60)


def _server_env(tmp_path) -> dict[str, str]:
    return {"MLFLOW_BACKEND_STORE_URI": f"sqlite:///{tmp_path}/mlflow.db",
            "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts"),
            "MLFLOW_AUTH_ADMIN_USERNAME": "admin", "MLFLOW_AUTH_ADMIN_PASSWORD": "pw-from-test",
            "MLFLOW_FLASK_SERVER_SECRET_KEY": "key-from-test"}


@pytest.mark.parametrize("missing", ["MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY",
                                     "MLFLOW_BACKEND_STORE_URI"])
def test_start_script_refuses_to_start_without_a_setting(tmp_path, missing):
    env = _server_env(tmp_path)
    del env[missing]
    result = _run_start_script(env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("persondet: error:") and missing in lines[0]
    assert not (tmp_path / "mlflow.db").exists()


def test_start_script_names_an_unreachable_database_without_its_password(tmp_path):
    env = {**_server_env(tmp_path), "PERSONDET_DB_WAIT_S": "1",
           "MLFLOW_BACKEND_STORE_URI": f"postgresql://mlflow:hunter22@127.0.0.1:{free_port()}/mlflow"}
    result = _run_start_script(env)
    assert result.returncode == 2
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("persondet: error: database postgresql+psycopg2://mlflow:***@127.0.0.1:")
    assert "not reachable" in error and "hunter22" not in result.stderr


def test_start_script_rejects_a_port_that_is_not_a_number(tmp_path):
    result = _run_start_script({**_server_env(tmp_path), "MLFLOW_PORT": "fivethousand"})
    assert result.returncode == 2 and "MLFLOW_PORT='fivethousand' is not an integer" in result.stderr


def test_prepare_server_upgrades_the_store_and_writes_a_private_auth_config(tmp_path):
    env = {**_server_env(tmp_path), "PERSONDET_SERVER_RUNTIME_DIR": str(tmp_path / "run"), "MLFLOW_PORT": "5123"}
    command, server_env = server.prepare_server(env)
    import sqlalchemy

    tables = sqlalchemy.inspect(sqlalchemy.create_engine(env["MLFLOW_BACKEND_STORE_URI"])).get_table_names()
    assert {"experiments", "runs", "metrics", "alembic_version"} <= set(tables)  # mlflow db upgrade ran
    ini = Path(server_env["MLFLOW_AUTH_CONFIG_PATH"])
    assert ini.parent == tmp_path / "run" and oct(ini.stat().st_mode & 0o777) == "0o600"
    assert "admin_password = pw-from-test" in ini.read_text()
    assert command[command.index("--app-name") + 1] == "basic-auth"
    assert command[command.index("--port") + 1] == "5123"
    assert command[command.index("--artifacts-destination") + 1] == str(tmp_path / "artifacts")
    assert "--serve-artifacts" in command and "pw-from-test" not in " ".join(command)


def test_settings_repr_hides_the_database_password():
    settings = server.settings_from_env({"MLFLOW_BACKEND_STORE_URI": "postgresql+psycopg2://u:s3cret@h/db",
                                         "MLFLOW_ARTIFACTS_DESTINATION": "/a", "MLFLOW_AUTH_ADMIN_USERNAME": "a",
                                         "MLFLOW_AUTH_ADMIN_PASSWORD": "b", "MLFLOW_FLASK_SERVER_SECRET_KEY": "c"})
    assert "s3cret" not in repr(settings)
    with pytest.raises(PersondetError, match="MLFLOW_FLASK_SERVER_SECRET_KEY"):
        server.settings_from_env({"MLFLOW_BACKEND_STORE_URI": "x", "MLFLOW_ARTIFACTS_DESTINATION": "/a",
                                  "MLFLOW_AUTH_ADMIN_USERNAME": "a", "MLFLOW_AUTH_ADMIN_PASSWORD": "b"})
