"""docker-compose.yml, its Dockerfiles, secrets, constraints and the server start script, checked without a
container engine (tests/test_compose_up.py runs the stack for real).

The compose file is parsed with PyYAML and its ${...} interpolation evaluated by the rules of the Compose
specification; when Debian's docker-compose 1.29 is installed it also validates the file with its schema.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from native_services import free_port, write_secret
from persondet import server

ROOT = Path(__file__).resolve().parents[1]
_VAR = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>\w+)")
SECRET_FILES = ("postgres_password", "tracking_db_password", "auth_db_password", "optuna_db_password",
                "mlflow_admin_password", "flask_secret_key", "team", "mlflow_credentials")


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


def compose_config(env: dict[str, str] | None = None, path: Path = ROOT / "docker-compose.yml") -> dict:
    """The parsed file (YAML merge keys resolved) with every string value interpolated, as compose does."""
    def walk(node):
        if isinstance(node, dict):
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value) for value in node]
        return interpolate(node, env or {}) if isinstance(node, str) else node
    return walk(yaml.safe_load(path.read_text()))


@pytest.fixture(scope="module")
def compose() -> dict:
    return compose_config()


@pytest.fixture(scope="module")
def made_secrets(tmp_path_factory) -> Path:
    """The secret files scripts/make-secrets.sh writes (what a user runs first)."""
    directory = tmp_path_factory.mktemp("compose") / "secrets"
    result = subprocess.run(["bash", str(ROOT / "scripts" / "make-secrets.sh")], capture_output=True, text=True,
                            env={**os.environ, "PERSONDET_SECRETS_DIR": str(directory)}, timeout=60)
    assert result.returncode == 0, result.stderr
    return directory


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    return env if isinstance(env, dict) else dict(item.split("=", 1) for item in env)


# --- no secret in the file: every password and key is a compose secret (a file) ---------------------------

def test_every_password_and_key_reaches_a_service_as_a_secret_file_never_as_a_value(compose):
    declared = compose["secrets"]
    assert set(declared) == set(SECRET_FILES)
    for name, secret in declared.items():
        assert secret["file"] == f"./secrets/{name}", name  # PERSONDET_SECRETS_DIR unset: ./secrets
    risky = re.compile(r"PASSWORD|SECRET|TOKEN|KEY", re.I)
    for name, service in compose["services"].items():
        for variable, value in _environment(service).items():
            if risky.search(variable):
                assert variable.endswith("_FILE") and str(value).startswith("/run/secrets/"), (name, variable)
                assert str(value)[len("/run/secrets/"):] in service_secret_names(service), (name, variable)
            if "://" in str(value):
                assert server.split_password(str(value))[1] is None, f"{name}: {variable} holds a password"
    text = (ROOT / "docker-compose.yml").read_text()
    assert not re.search(r"://[^@\s]*:[^@\s]*@", text)  # no user:password@ anywhere, comments included


def service_secret_names(service: dict) -> set[str]:
    return {s if isinstance(s, str) else s["source"] for s in service.get("secrets", [])}


def test_each_service_gets_only_the_secrets_it_needs(compose):
    services = compose["services"]
    assert service_secret_names(services["postgres"]) == {"postgres_password", "tracking_db_password",
                                                         "auth_db_password", "optuna_db_password"}
    for name in ("mlflow-init", "mlflow"):  # no superuser password, no optuna password
        assert service_secret_names(services[name]) == {"tracking_db_password", "auth_db_password",
                                                       "mlflow_admin_password", "flask_secret_key", "team"}
    trainer = services["trainer"]
    assert service_secret_names(trainer) == {"optuna_db_password", "mlflow_credentials"}
    credentials = next(s for s in trainer["secrets"] if isinstance(s, dict))
    assert credentials["target"] == "/root/.mlflow/credentials"  # where the MLflow client reads it
    env = _environment(trainer)
    assert env["PERSONDET_TUNE_STORAGE"] == "postgresql+psycopg2://optuna@postgres:5432/optuna"
    assert "MLFLOW_TRACKING_PASSWORD" not in env


def test_make_secrets_writes_every_file_compose_mounts_private_and_never_overwrites(made_secrets):
    assert sorted(p.name for p in made_secrets.iterdir()) == sorted(SECRET_FILES)
    assert stat.S_IMODE(made_secrets.stat().st_mode) == 0o700  # other users of the host: no way in
    for name in SECRET_FILES:
        path = made_secrets / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o644  # the services read them as their own users
        if name not in ("team", "mlflow_credentials"):
            assert len(server.read_secret({"S_FILE": str(path)}, "S")) >= server.MIN_PASSWORD_LENGTH
    from persondet.server_bootstrap import read_team

    (member,) = read_team(str(made_secrets / "team"))
    credentials = (made_secrets / "mlflow_credentials").read_text()
    assert f"mlflow_tracking_username = {member.username}" in credentials
    assert f"mlflow_tracking_password = {member.password}" in credentials
    before = {p.name: p.read_text() for p in made_secrets.iterdir()}
    subprocess.run(["bash", str(ROOT / "scripts" / "make-secrets.sh")], check=True, capture_output=True,
                   env={**os.environ, "PERSONDET_SECRETS_DIR": str(made_secrets)})
    assert {p.name: p.read_text() for p in made_secrets.iterdir()} == before
    assert "secrets/" in (ROOT / ".gitignore").read_text().split()
    assert "secrets" in (ROOT / ".dockerignore").read_text().split()


def test_env_example_holds_settings_only():
    settings = re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.M)
    assert "COMPOSE_PROJECT_NAME" in settings  # compose 1.29 has no top-level `name:`
    assert not [name for name in settings if re.search(r"PASSWORD|SECRET|TOKEN|KEY", name) and name != "PERSONDET_SECRETS_DIR"]


# --- the services ----------------------------------------------------------------------------------------

def test_postgres_runs_the_role_bootstrap_and_is_not_published(compose):
    pg = compose["services"]["postgres"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert "ports" not in pg
    init = [v for v in pg["volumes"] if "docker-entrypoint-initdb.d" in v]
    assert init and init[0].split(":")[0] == "./docker/postgres-init.sql"
    env = _environment(pg)
    assert env["POSTGRES_USER"] == "postgres" and "POSTGRES_PASSWORD" not in env
    sql = (ROOT / "docker" / "postgres-init.sql").read_text()
    for variable in ("PERSONDET_TRACKING_DB_PASSWORD_FILE", "PERSONDET_AUTH_DB_PASSWORD_FILE",
                     "PERSONDET_OPTUNA_DB_PASSWORD_FILE"):
        assert variable in env and variable in sql


def test_a_one_shot_init_step_guards_the_server_against_a_restart_loop(compose):
    init, mlflow = compose["services"]["mlflow-init"], compose["services"]["mlflow"]
    assert init["command"] == ["bash", "scripts/start-tracking-server.sh", "init"]
    assert init["restart"] == "no" and init["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert mlflow["command"] == ["bash", "scripts/start-tracking-server.sh", "serve"]
    assert mlflow["depends_on"]["mlflow-init"]["condition"] == "service_completed_successfully"
    assert _environment(init) == _environment(mlflow)  # one configuration, checked by init
    env = _environment(mlflow)
    artifacts = env["MLFLOW_ARTIFACTS_DESTINATION"]
    assert any(v.endswith(":" + artifacts) and v.split(":")[0] in compose["volumes"] for v in mlflow["volumes"])
    assert "/health" in " ".join(mlflow["healthcheck"]["test"])
    # The trainer reaches the server as mlflow:5000; MLflow's host check must accept that Host header.
    assert "mlflow:5000" in env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")


def test_only_the_server_is_published_and_on_loopback_only(compose):
    """The port is in docker-compose.override.yml, which `docker compose up` reads by itself."""
    assert not [name for name, service in compose["services"].items() if "ports" in service]
    override = compose_config(path=ROOT / "docker-compose.override.yml")
    assert list(override["services"]) == ["mlflow"]
    assert override["services"]["mlflow"]["ports"] == ["127.0.0.1:5000:5000"]
    for port in compose_config({"MLFLOW_PUBLISH_PORT": "8080"}, ROOT / "docker-compose.override.yml")[
            "services"]["mlflow"]["ports"]:
        assert port == "127.0.0.1:8080:5000"


def test_trainer_runs_mlflow_run_against_the_server_with_gpus_reserved(compose):
    trainer = compose["services"]["trainer"]
    assert trainer["command"][:2] == ["mlflow", "run"]
    assert _environment(trainer)["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    devices = trainer["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert trainer["depends_on"]["mlflow"]["condition"] == "service_healthy"


def test_the_file_fits_docker_compose_1_29(compose, made_secrets):
    """Debian bookworm's compose is 1.29: no top-level `name:` and nothing outside its schema."""
    allowed = {"version", "services", "networks", "volumes", "secrets", "configs"}
    assert {key for key in compose if not key.startswith("x-")} <= allowed
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose (Debian's 1.29) not installed: schema not checked")
    for files in ([], ["docker-compose.yml", "tests/compose/docker-compose.hostnet.yml"]):  # []: + override
        args = [a for f in files for a in ("-f", f)]
        result = subprocess.run([tool, *args, "config", "-q"], cwd=ROOT, capture_output=True, text=True,
                                env={**os.environ, "PERSONDET_SECRETS_DIR": str(made_secrets),
                                     "PERSONDET_TEST_PG_PORT": "5999", "PERSONDET_TEST_MLFLOW_PORT": "5998"},
                                timeout=120)
        assert result.returncode == 0, result.stderr


def test_images_are_built_from_dockerfiles_in_the_repository(compose):
    for name in ("mlflow", "mlflow-init", "trainer"):
        build = compose["services"][name]["build"]
        dockerfile = ROOT / build["context"] / build["dockerfile"]
        assert dockerfile.is_file(), dockerfile
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY "):
                for source in line.split()[1:-1]:
                    assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source} does not exist"


# --- versions: the mlflow floor, the constraints the images install -----------------------------------------

def _pyproject_dependencies() -> list[str]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["dependencies"]


def _constraints() -> dict[str, str]:
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (ROOT / "docker" / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version and re.fullmatch(r"[A-Za-z0-9._-]+", name), f"constraints.txt: {line!r} is no pin"
            pins[canonicalize_name(name)] = version
    return pins


def test_the_constraints_pin_every_dependency_inside_the_pyproject_ranges():
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = _constraints()
    for text in _pyproject_dependencies():
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"docker/constraints.txt does not pin {requirement.name}"
        assert requirement.specifier.contains(pins[name], prereleases=True), \
            f"docker/constraints.txt pins {name}=={pins[name]}, outside pyproject.toml's {text!r}"
    assert {"sqlalchemy", "alembic", "flask", "werkzeug"} <= set(pins)  # mlflow's own, transitively


def test_the_images_install_the_pyproject_requirements_at_the_constrained_versions():
    server_file = (ROOT / "docker" / "server.Dockerfile").read_text()
    assert "COPY docker/constraints.txt" in server_file and "pip install -c /tmp/constraints.txt" in server_file
    for package in ("mlflow", "psycopg2-binary"):
        spec = next(d for d in _pyproject_dependencies() if re.match(rf"{re.escape(package)}\b", d))
        assert f'"{spec}"' in server_file, f"server.Dockerfile must install {spec!r} like pyproject.toml"
    trainer_file = (ROOT / "docker" / "trainer.Dockerfile").read_text()
    assert "docker/constraints.txt" in trainer_file and "pip install -c constraints.txt -r" in trainer_file


def test_the_mlflow_floor_excludes_the_releases_with_known_auth_bypasses():
    """CVE-2026-2652 (< 3.10.0), CVE-2026-0545 / GHSA-7qhf-v65m-g5f3 (<= 3.10.1), GHSA-3p64-6gvh-82v5
    (LogInputs), GHSA-gq3w-7jj3-x7gr (a default admin password through 3.16.0): docs/SERVER.md."""
    import importlib.metadata

    from packaging.requirements import Requirement

    mlflow = Requirement(next(d for d in _pyproject_dependencies() if d.startswith("mlflow")))
    assert "auth" in mlflow.extras
    for vulnerable in ("3.9.0", "3.10.1", "3.16.0"):
        assert not mlflow.specifier.contains(vulnerable)
    assert mlflow.specifier.contains(importlib.metadata.version("mlflow"))  # what the tests ran with


def test_the_admin_password_rule_is_mlflows():
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_password

    _validate_password("x" * server.MIN_PASSWORD_LENGTH)
    with pytest.raises(MlflowException, match="at least"):
        _validate_password("x" * (server.MIN_PASSWORD_LENGTH - 1))


# --- the start script: bad input is one line, before anything starts ----------------------------------------

def _run_start_script(env: dict[str, str], *steps: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PERSONDET_", "PG"))}
    return subprocess.run(["bash", str(ROOT / "scripts" / "start-tracking-server.sh"), *steps],
                          env={**base, "PYTHON": sys.executable, **env}, capture_output=True, text=True,
                          timeout=300)


def _server_env(tmp_path, admin_password: str = "pw-from-test-0123") -> dict[str, str]:
    return {"MLFLOW_BACKEND_STORE_URI": f"sqlite:///{tmp_path}/mlflow.db",
            "MLFLOW_AUTH_DATABASE_URI": f"sqlite:///{tmp_path}/auth.db",
            "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts"),
            "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
            "MLFLOW_AUTH_ADMIN_PASSWORD_FILE": write_secret(tmp_path / "s" / "admin", admin_password),
            "MLFLOW_FLASK_SERVER_SECRET_KEY_FILE": write_secret(tmp_path / "s" / "key", "key-from-test"),
            "PERSONDET_SERVER_RUNTIME_DIR": str(tmp_path / "run")}


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("persondet: error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("change, message", [
    ({"MLFLOW_AUTH_ADMIN_PASSWORD_FILE": None}, "MLFLOW_AUTH_ADMIN_PASSWORD"),
    ({"MLFLOW_FLASK_SERVER_SECRET_KEY_FILE": None}, "MLFLOW_FLASK_SERVER_SECRET_KEY"),
    ({"MLFLOW_BACKEND_STORE_URI": None}, "MLFLOW_BACKEND_STORE_URI"),
    ({"MLFLOW_AUTH_ADMIN_PASSWORD_FILE": "/nonexistent/admin"},
     "MLFLOW_AUTH_ADMIN_PASSWORD_FILE=/nonexistent/admin: cannot read the secret (No such file or directory)"),
    ({"MLFLOW_AUTH_ADMIN_PASSWORD": "another-password-0123"}, "both MLFLOW_AUTH_ADMIN_PASSWORD and "),
    ({"MLFLOW_PORT": "fivethousand"}, "MLFLOW_PORT='fivethousand' is not an integer"),
    ({"PERSONDET_TEAM_FILE": "/nonexistent/team"}, "PERSONDET_TEAM_FILE=/nonexistent/team: no such file"),
    ({"MLFLOW_BACKEND_STORE_URI": "postgresql://u:inline-pw@db/mlflow",
      "PERSONDET_BACKEND_STORE_PASSWORD": "other-pw-0123"}, "give it once"),
])
@pytest.mark.parametrize("step", ["init", "serve"])
def test_start_script_refuses_bad_settings_in_one_line_before_touching_anything(tmp_path, change, message, step):
    env = _server_env(tmp_path)
    for name, value in change.items():
        if value is None:
            env.pop(name)
        else:
            env[name] = value
    line = _one_error_line(_run_start_script(env, step))
    assert message in line and "inline-pw" not in line
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "run").exists()


def test_a_short_admin_password_is_refused_before_start_with_mlflows_rule(tmp_path):
    """Today MLflow fails inside every worker and compose restarts it forever; here: one line, exit 2."""
    line = _one_error_line(_run_start_script(_server_env(tmp_path, admin_password="short-pw")))
    assert "MLFLOW_AUTH_ADMIN_PASSWORD has 8 characters: MLflow requires at least 12" in line
    assert "short-pw" not in line and not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("team, message", [
    ("alice:too-short", "line 1: the password of 'alice' has 9 characters"),
    ("# team\nbob:long-enough-password\nbob:long-enough-password", "line 3: 'bob' is listed twice"),
    ("carol dave", "line 1: expected 'username' or 'username:initial password'"),
])
def test_a_malformed_team_file_is_named_with_its_line(tmp_path, team, message):
    env = {**_server_env(tmp_path), "PERSONDET_TEAM_FILE": write_secret(tmp_path / "s" / "team", team)}
    line = _one_error_line(_run_start_script(env, "init"))
    assert f"team file {tmp_path / 's' / 'team'} {message}" in line and "too-short" not in line


def test_start_script_names_an_unreachable_database_without_its_password(tmp_path):
    env = {**_server_env(tmp_path), "PERSONDET_DB_WAIT_S": "1",
           "MLFLOW_BACKEND_STORE_URI": f"postgresql://mlflow_tracking@127.0.0.1:{free_port()}/mlflow",
           "PERSONDET_BACKEND_STORE_PASSWORD_FILE": write_secret(tmp_path / "s" / "db", "hunter22-hunter22")}
    result = _run_start_script(env, "init")
    assert result.returncode == 2
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("persondet: error: database postgresql+psycopg2://mlflow_tracking@127.0.0.1:")
    assert "not reachable" in error and "hunter22" not in result.stderr


def test_serve_puts_no_secret_on_the_command_line_and_writes_private_runtime_files(tmp_path):
    env = {**_server_env(tmp_path), "MLFLOW_PORT": "5123",
           "MLFLOW_BACKEND_STORE_URI": "postgresql://mlflow_tracking:tracking-pw-0123@db:5432/mlflow",
           "MLFLOW_AUTH_DATABASE_URI": "postgresql://mlflow_auth@db/mlflow_auth",
           "PERSONDET_AUTH_DATABASE_PASSWORD_FILE": write_secret(tmp_path / "s" / "auth", "auth:pw\\0123")}
    command, server_env = server.prepare_server(env)
    joined = " ".join(command)
    for secret in ("tracking-pw-0123", "auth:pw", "pw-from-test-0123", "key-from-test"):
        assert secret not in joined
    assert "--backend-store-uri" not in command  # MLflow reads it from MLFLOW_BACKEND_STORE_URI
    assert server_env["MLFLOW_BACKEND_STORE_URI"] == "postgresql+psycopg2://mlflow_tracking@db:5432/mlflow"
    assert command[command.index("--app-name") + 1] == "basic-auth"
    assert command[command.index("--port") + 1] == "5123" and "--serve-artifacts" in command
    assert not any(k.endswith("_FILE") or k.endswith("_PASSWORD") for k in server_env)
    assert server_env["MLFLOW_FLASK_SERVER_SECRET_KEY"] == "key-from-test"  # MLflow reads only this variable
    assert server_env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    pgpass, ini = Path(server_env["PGPASSFILE"]), Path(server_env["MLFLOW_AUTH_CONFIG_PATH"])
    for path in (pgpass, ini):
        assert path.parent == tmp_path / "run" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert pgpass.read_text() == ("db:5432:mlflow:mlflow_tracking:tracking-pw-0123\n"
                                  "db:5432:mlflow_auth:mlflow_auth:auth\\:pw\\\\0123\n")  # libpq escapes
    text = ini.read_text()
    assert "admin_password" not in text and "pw-from-test" not in text
    assert "database_uri = postgresql+psycopg2://mlflow_auth@db/mlflow_auth" in text
    assert "auth_cache_ttl_seconds = 60" in text


@pytest.mark.slow
def test_init_bootstraps_admin_team_and_the_persondet_names_and_rotates_the_admin_password(tmp_path):
    """On SQLite stores (the PostgreSQL path is tests/test_server_integration.py): mlflow db upgrade, the
    admin, the team member, the experiment and model owned by nobody but the server, EDIT for the team;
    a second init with a new admin password rotates it."""
    env = {**_server_env(tmp_path),
           "PERSONDET_TEAM_FILE": write_secret(tmp_path / "s" / "team", "# the team\nmember:member-password-0")}
    result = _run_start_script(env, "init")
    assert result.returncode == 0, result.stderr
    write_secret(tmp_path / "s" / "admin", "rotated-admin-password")
    result = _run_start_script(env, "init")
    assert result.returncode == 0 and "has the configured password now" in result.stderr, result.stderr

    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore as AuthStore
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore

    auth = AuthStore()
    auth.init_db(env["MLFLOW_AUTH_DATABASE_URI"])
    assert auth.get_user("admin").is_admin and auth.authenticate_user("admin", "rotated-admin-password")
    assert not auth.authenticate_user("admin", "pw-from-test-0123")
    assert not auth.get_user("member").is_admin and auth.authenticate_user("member", "member-password-0")
    experiment = TrackingStore(env["MLFLOW_BACKEND_STORE_URI"], "mlflow-artifacts:/").get_experiment_by_name(
        "persondet")
    assert experiment.artifact_location == f"mlflow-artifacts:/{experiment.experiment_id}"
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on its runs
    assert RegistryStore(env["MLFLOW_BACKEND_STORE_URI"]).get_registered_model("persondet").name == "persondet"
    assert auth.get_experiment_permission(experiment.experiment_id, "member").permission == "EDIT"
    assert auth.get_registered_model_permission("persondet", "member").permission == "EDIT"
