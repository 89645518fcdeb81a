"""Start the shared MLflow tracking server: the one start procedure of docker-compose and the tests.

``scripts/start-tracking-server.sh`` runs ``python -m persondet.server``, which
1. reads its settings from the environment (a missing secret is a one-line error, never a default),
2. waits until the backend database accepts connections,
3. runs ``mlflow db upgrade`` on it,
4. writes the basic-auth configuration (mode 0600) and
5. replaces itself with ``mlflow server --app-name basic-auth`` serving artifacts from a directory.

Environment (MLflow's own names where MLflow has one):
  MLFLOW_BACKEND_STORE_URI        required, e.g. postgresql://mlflow:...@postgres:5432/mlflow
  MLFLOW_ARTIFACTS_DESTINATION    required, where served artifacts are stored (a directory or a URI)
  MLFLOW_AUTH_ADMIN_USERNAME      required, the admin user created on first start
  MLFLOW_AUTH_ADMIN_PASSWORD      required
  MLFLOW_FLASK_SERVER_SECRET_KEY  required, signs the UI's session cookies and CSRF tokens
  MLFLOW_AUTH_DATABASE_URI        users and permissions (default: the backend store)
  MLFLOW_HOST, MLFLOW_PORT, MLFLOW_WORKERS   default 127.0.0.1, 5000, 2
  PERSONDET_DB_WAIT_S             seconds to wait for the database (default 60)
  PERSONDET_SERVER_RUNTIME_DIR    where the auth configuration is written (default: a new temp dir)
"""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

from persondet.errors import PersondetError

REQUIRED_SECRETS = ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY")
REQUIRED_SETTINGS = ("MLFLOW_BACKEND_STORE_URI", "MLFLOW_ARTIFACTS_DESTINATION")


@dataclass(frozen=True)
class ServerSettings:
    backend_store_uri: str
    artifacts_destination: str
    auth_database_uri: str
    admin_username: str
    admin_password: str = ""
    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 2
    db_wait_s: float = 60.0

    def __repr__(self) -> str:  # never print the password
        return (f"ServerSettings(backend_store_uri={redact(self.backend_store_uri)!r}, "
                f"host={self.host!r}, port={self.port})")


def redact(uri: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", uri)


def database_uri(uri: str) -> str:
    """Name the installed PostgreSQL driver (psycopg2) in a plain ``postgresql://`` URI.

    SQLAlchemy 2.1 maps plain ``postgresql://`` to psycopg 3, which the project does not install.
    """
    import importlib.util

    for plain in ("postgresql://", "postgres://"):
        if uri.startswith(plain) and importlib.util.find_spec("psycopg") is None:
            return "postgresql+psycopg2://" + uri[len(plain):]
    return uri


def settings_from_env(env: Mapping[str, str]) -> ServerSettings:
    missing = [name for name in REQUIRED_SETTINGS + REQUIRED_SECRETS if not env.get(name)]
    if missing:
        raise PersondetError(f"the tracking server needs {', '.join(missing)} set in the environment "
                             "(see .env.example); there are no default secrets")
    backend = database_uri(env["MLFLOW_BACKEND_STORE_URI"])

    def integer(name: str, default: int) -> int:
        text = env.get(name) or str(default)
        try:
            return int(text)
        except ValueError:
            raise PersondetError(f"{name}={text!r} is not an integer") from None

    return ServerSettings(
        backend_store_uri=backend,
        artifacts_destination=env["MLFLOW_ARTIFACTS_DESTINATION"],
        auth_database_uri=database_uri(env.get("MLFLOW_AUTH_DATABASE_URI") or backend),
        admin_username=env["MLFLOW_AUTH_ADMIN_USERNAME"],
        admin_password=env["MLFLOW_AUTH_ADMIN_PASSWORD"],
        host=env.get("MLFLOW_HOST") or "127.0.0.1",
        port=integer("MLFLOW_PORT", 5000),
        workers=integer("MLFLOW_WORKERS", 2),
        db_wait_s=float(integer("PERSONDET_DB_WAIT_S", 60)),
    )


def wait_for_database(uri: str, timeout_s: float) -> None:
    """Return once ``uri`` accepts a connection and ``SELECT 1``; a clear error after ``timeout_s``."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                with engine.connect() as connection:
                    connection.execute(sqlalchemy.text("SELECT 1"))
                return
            except sqlalchemy.exc.OperationalError as exc:
                if time.monotonic() >= deadline:
                    reason = " ".join(str(exc.orig).split())[:200]
                    raise PersondetError(f"database {redact(uri)} not reachable after {timeout_s:.0f} s: "
                                         f"{reason}") from None
                time.sleep(1.0)
    finally:
        engine.dispose()


def upgrade_database(uri: str) -> None:
    """``mlflow db upgrade``: creates the schema on an empty database, migrates an older one."""
    result = subprocess.run([sys.executable, "-m", "mlflow", "db", "upgrade", uri],
                            capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise PersondetError(f"mlflow db upgrade {redact(uri)} failed: {last}")


def write_auth_config(directory: str, settings: ServerSettings) -> str:
    """Write basic_auth.ini (owner-only, atomically) and return its path."""
    config = configparser.ConfigParser(interpolation=None)
    config["mlflow"] = {
        "default_permission": "READ",
        "database_uri": settings.auth_database_uri,
        "admin_username": settings.admin_username,
        "admin_password": settings.admin_password,
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
    }
    path = os.path.join(directory, "basic_auth.ini")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".basic_auth.", suffix=".ini")
    try:
        with os.fdopen(fd, "w") as f:  # mkstemp creates the file with mode 0600
            config.write(f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def server_command(settings: ServerSettings) -> list[str]:
    return [sys.executable, "-m", "mlflow", "server",
            "--app-name", "basic-auth",
            "--backend-store-uri", settings.backend_store_uri,
            "--serve-artifacts", "--artifacts-destination", settings.artifacts_destination,
            "--host", settings.host, "--port", str(settings.port), "--workers", str(settings.workers)]


def prepare_server(env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """Steps 1-4; returns the server command and its environment."""
    settings = settings_from_env(env)
    print(f"persondet: waiting for the database {redact(settings.backend_store_uri)}", file=sys.stderr, flush=True)
    wait_for_database(settings.backend_store_uri, settings.db_wait_s)
    if settings.auth_database_uri != settings.backend_store_uri:
        wait_for_database(settings.auth_database_uri, settings.db_wait_s)
    print("persondet: mlflow db upgrade", file=sys.stderr, flush=True)
    upgrade_database(settings.backend_store_uri)
    runtime_dir = env.get("PERSONDET_SERVER_RUNTIME_DIR") or tempfile.mkdtemp(prefix="persondet-server-")
    os.makedirs(runtime_dir, mode=0o700, exist_ok=True)
    server_env = dict(env)
    server_env["MLFLOW_AUTH_CONFIG_PATH"] = write_auth_config(runtime_dir, settings)
    return server_command(settings), server_env


def main(argv: Sequence[str] | None = None) -> None:
    command, env = prepare_server(os.environ)
    print(f"persondet: starting mlflow server with basic-auth on {command[command.index('--host') + 1]}:"
          f"{command[command.index('--port') + 1]}", file=sys.stderr, flush=True)
    os.execve(command[0], command, env)  # the server takes over this process (and its signals)


if __name__ == "__main__":
    from persondet.cli import run_cli

    sys.exit(run_cli(main))
