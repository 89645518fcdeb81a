"""Start the shared MLflow tracking server: the one start procedure of docker-compose and the tests.

``scripts/start-tracking-server.sh [init|serve]`` runs ``python -m persondet.server``:

``init`` (compose's one-shot ``mlflow-init`` service; exits 0, or 2 with one line on a configuration error)
  1. reads the settings and secrets (a missing or too short secret is a one-line error, never a default),
  2. waits until both databases accept connections,
  3. runs ``mlflow db upgrade`` on the tracking database,
  4. bootstraps the auth store (persondet.server_bootstrap): the admin, the team, the ``persondet``
     experiment and registered model, owned by the admin, EDIT for the team.
``serve`` (compose's ``mlflow`` service) writes the private runtime files (basic_auth.ini, a libpq password
  file, both mode 0600) and replaces itself with ``mlflow server --app-name basic-auth``.
No argument: ``init`` then ``serve`` (what the tests and a native installation run).

No secret is ever put on a command line: the database URIs carry no password (libpq reads it from the
password file named by PGPASSFILE), the admin password stays in this process, and the Flask key reaches
the server through its environment.

Settings (MLflow's own names where MLflow has one). A secret NAME is read from the file named by NAME_FILE
(compose secrets) or from NAME itself:
  MLFLOW_BACKEND_STORE_URI        required, e.g. postgresql://mlflow_tracking@postgres:5432/mlflow
  PERSONDET_BACKEND_STORE_PASSWORD   secret: the tracking database role's password
  MLFLOW_AUTH_DATABASE_URI        users and permissions (default: the backend store)
  PERSONDET_AUTH_DATABASE_PASSWORD   secret: the auth database role's password
  MLFLOW_ARTIFACTS_DESTINATION    required, where served artifacts are stored (a directory or a URI)
  MLFLOW_AUTH_ADMIN_USERNAME      required, the admin user
  MLFLOW_AUTH_ADMIN_PASSWORD      secret, required, at least 12 characters (MLflow's password rule)
  MLFLOW_FLASK_SERVER_SECRET_KEY  secret, required: signs the UI's session cookies and CSRF tokens
  PERSONDET_TEAM_FILE             the team: one ``username`` or ``username:initial password`` a line
  PERSONDET_AUTH_CACHE_TTL_S      seconds a verified credential is cached per worker (default 60; 0: off)
  MLFLOW_HOST, MLFLOW_PORT, MLFLOW_WORKERS   default 127.0.0.1, 5000, 2
  PERSONDET_DB_WAIT_S             seconds to wait for the databases (default 60)
  PERSONDET_SERVER_RUNTIME_DIR    where the runtime files are written (default: a new temp dir)
"""

from __future__ import annotations

import configparser
import io
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from persondet.errors import PersondetError

# MLflow refuses shorter user passwords (mlflow.utils.validation._validate_password, checked by
# tests/test_compose.py against the installed MLflow); checking first turns a crash loop into one line.
MIN_PASSWORD_LENGTH = 12
ADMIN_PASSWORD = "MLFLOW_AUTH_ADMIN_PASSWORD"
SECRET_KEY = "MLFLOW_FLASK_SERVER_SECRET_KEY"
BACKEND_PASSWORD = "PERSONDET_BACKEND_STORE_PASSWORD"
AUTH_DB_PASSWORD = "PERSONDET_AUTH_DATABASE_PASSWORD"
SECRETS = (ADMIN_PASSWORD, SECRET_KEY, BACKEND_PASSWORD, AUTH_DB_PASSWORD)
REQUIRED_SETTINGS = ("MLFLOW_BACKEND_STORE_URI", "MLFLOW_ARTIFACTS_DESTINATION", "MLFLOW_AUTH_ADMIN_USERNAME")
TEAM_FILE = "PERSONDET_TEAM_FILE"


@dataclass(frozen=True)
class ServerSettings:
    backend_store_uri: str  # never with a password (see backend_password)
    artifacts_destination: str
    auth_database_uri: str
    admin_username: str
    admin_password: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)
    backend_password: str | None = field(default=None, repr=False)
    auth_password: str | None = field(default=None, repr=False)
    team_file: str = ""
    auth_cache_ttl_s: int = 60
    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 2
    db_wait_s: float = 60.0

    def databases(self) -> list[tuple[str, str | None]]:
        """(URI without password, password) of the tracking and, when separate, the auth database."""
        found = [(self.backend_store_uri, self.backend_password)]
        if self.auth_database_uri != self.backend_store_uri:
            found.append((self.auth_database_uri, self.auth_password))
        return found


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


def with_password(uri: str, password: str | None) -> str:
    """The URI with ``password`` in it, for this process's own connections only (never shown, never argv)."""
    if not password:
        return uri
    from sqlalchemy.engine import make_url

    return make_url(uri).set(password=password).render_as_string(hide_password=False)


def split_password(uri: str) -> tuple[str, str | None]:
    """(the URI without its password, the password or None)."""
    if "://" not in uri or "@" not in uri:
        return uri, None
    from sqlalchemy.engine import make_url

    url = make_url(uri)
    if url.password is None:
        return uri, None
    return url._replace(password=None).render_as_string(hide_password=False), str(url.password)  # set() keeps it


def read_secret(env: Mapping[str, str], name: str) -> str | None:
    """The secret ``name``: the content of the file named by ``name_FILE`` (one final newline dropped), or
    the variable ``name`` itself; None when neither is set."""
    path, value = env.get(name + "_FILE"), env.get(name)
    if path and value:
        raise PersondetError(f"both {name} and {name}_FILE are set: give the secret once")
    if not path:
        return value or None
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise PersondetError(f"{name}_FILE={path}: cannot read the secret ({reason})") from None
    text = text[:-1] if text.endswith("\n") else text
    text = text[:-1] if text.endswith("\r") else text
    if not text:
        raise PersondetError(f"{name}_FILE={path} is empty")
    return text


def settings_from_env(env: Mapping[str, str]) -> ServerSettings:
    """The validated settings; a missing, empty or too short one is a one-line PersondetError."""
    secrets = {name: read_secret(env, name) for name in SECRETS}
    missing = [name for name in REQUIRED_SETTINGS if not env.get(name)]
    missing += [name for name in (ADMIN_PASSWORD, SECRET_KEY) if not secrets[name]]
    if missing:
        raise PersondetError(f"the tracking server needs {', '.join(missing)} set in the environment (or as "
                             "a *_FILE secret, see docs/SERVER.md); there are no default secrets")
    admin_password = secrets[ADMIN_PASSWORD] or ""
    if len(admin_password) < MIN_PASSWORD_LENGTH:
        raise PersondetError(f"{ADMIN_PASSWORD} has {len(admin_password)} characters: MLflow requires at "
                             f"least {MIN_PASSWORD_LENGTH} (make a new one: python3 -c \"import secrets; "
                             "print(secrets.token_urlsafe(24))\")")

    def store(uri_name: str, password_name: str, uri: str) -> tuple[str, str | None]:
        bare, inline = split_password(database_uri(uri))
        if inline and secrets[password_name]:
            raise PersondetError(f"{uri_name} has a password in it and {password_name} is set: give it once")
        return bare, inline or secrets[password_name]

    def integer(name: str, default: int, minimum: int) -> int:
        text = env.get(name) or str(default)
        try:
            value = int(text)
        except ValueError:
            raise PersondetError(f"{name}={text!r} is not an integer") from None
        if value < minimum:
            raise PersondetError(f"{name}={value} must be >= {minimum}")
        return value

    backend, backend_password = store("MLFLOW_BACKEND_STORE_URI", BACKEND_PASSWORD, env["MLFLOW_BACKEND_STORE_URI"])
    auth_uri = env.get("MLFLOW_AUTH_DATABASE_URI")
    auth, auth_password = (store("MLFLOW_AUTH_DATABASE_URI", AUTH_DB_PASSWORD, auth_uri) if auth_uri
                           else (backend, backend_password))
    team_file = env.get(TEAM_FILE, "")
    if team_file and not os.path.isfile(team_file):
        raise PersondetError(f"{TEAM_FILE}={team_file}: no such file")
    return ServerSettings(
        backend_store_uri=backend, backend_password=backend_password,
        auth_database_uri=auth, auth_password=auth_password,
        artifacts_destination=env["MLFLOW_ARTIFACTS_DESTINATION"],
        admin_username=env["MLFLOW_AUTH_ADMIN_USERNAME"], admin_password=admin_password,
        secret_key=secrets[SECRET_KEY] or "", team_file=team_file,
        auth_cache_ttl_s=integer("PERSONDET_AUTH_CACHE_TTL_S", 60, 0),
        host=env.get("MLFLOW_HOST") or "127.0.0.1",
        port=integer("MLFLOW_PORT", 5000, 1),
        workers=integer("MLFLOW_WORKERS", 2, 1),
        db_wait_s=float(integer("PERSONDET_DB_WAIT_S", 60, 0)),
    )


def wait_for_database(uri: str, password: str | None, timeout_s: float) -> None:
    """Return once ``uri`` accepts a connection and ``SELECT 1``; a clear error after ``timeout_s``."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(with_password(uri, password), poolclass=sqlalchemy.pool.NullPool)
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
                    if password:
                        reason = reason.replace(password, "***")
                    raise PersondetError(f"database {redact(uri)} not reachable after {timeout_s:.0f} s: "
                                         f"{reason}") from None
                time.sleep(1.0)
    finally:
        engine.dispose()


def upgrade_database(uri: str, env: Mapping[str, str]) -> None:
    """``mlflow db upgrade``: creates the schema on an empty database, migrates an older one.

    ``uri`` has no password; ``env`` names the libpq password file (PGPASSFILE)."""
    result = subprocess.run([sys.executable, "-m", "mlflow", "db", "upgrade", uri],
                            capture_output=True, text=True, env=dict(env))
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["(no output)"]
        errors = [line for line in lines if re.match(r"[\w.]+(Error|Exception)\b", line)]
        last = (errors or lines)[-1]
        raise PersondetError(f"mlflow db upgrade {redact(uri)} failed: {last}")


def _write_private(directory: str, name: str, text: str) -> str:
    """Write ``directory/name`` owner-only (0600), atomically; returns its path."""
    path = os.path.join(directory, name)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")  # mkstemp creates it with mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def pgpass_text(databases: Sequence[tuple[str, str | None]]) -> str:
    """libpq password file lines (host:port:database:user:password) for the PostgreSQL URIs with a password."""
    from sqlalchemy.engine import make_url

    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    lines = []
    for uri, password in databases:
        url = make_url(uri)
        if password and url.get_backend_name() == "postgresql":
            fields = (url.host or "localhost", str(url.port or 5432), url.database or "*", url.username or "*",
                      password)
            lines.append(":".join(escape(f) for f in fields))
    return "".join(line + "\n" for line in lines)


def write_auth_config(directory: str, settings: ServerSettings) -> str:
    """Write basic_auth.ini (owner-only, atomically) and return its path.

    No admin password in it: ``init`` created the admin, and the server only needs the password to
    create one."""
    config = configparser.ConfigParser(interpolation=None)
    config["mlflow"] = {
        "default_permission": "READ",
        "database_uri": settings.auth_database_uri,
        "admin_username": settings.admin_username,
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        # Each worker caches a verified credential (an HMAC of it, never the password) for this long
        # instead of re-running the deliberately slow password hash on every request. A password change
        # made through the API reaches the other workers after at most this many seconds.
        "auth_cache_ttl_seconds": str(settings.auth_cache_ttl_s),
    }
    text = io.StringIO()
    config.write(text)
    return _write_private(directory, "basic_auth.ini", text.getvalue())


def server_command(settings: ServerSettings) -> list[str]:
    """``mlflow server``; the backend store URI goes through MLFLOW_BACKEND_STORE_URI, not argv."""
    return [sys.executable, "-m", "mlflow", "server",
            "--app-name", "basic-auth",
            "--serve-artifacts", "--artifacts-destination", settings.artifacts_destination,
            "--host", settings.host, "--port", str(settings.port), "--workers", str(settings.workers)]


def runtime_env(env: Mapping[str, str], settings: ServerSettings) -> dict[str, str]:
    """The private runtime files, and the environment of ``mlflow db upgrade`` and ``mlflow server``:
    no password variable or secret file name in it, PGPASSFILE and the auth configuration set."""
    runtime_dir = env.get("PERSONDET_SERVER_RUNTIME_DIR") or tempfile.mkdtemp(prefix="persondet-server-")
    os.makedirs(runtime_dir, mode=0o700, exist_ok=True)
    server_env = {k: v for k, v in env.items()
                  if not any(k in (name, name + "_FILE") for name in SECRETS + (TEAM_FILE,))}
    pgpass = pgpass_text(settings.databases())
    if pgpass:
        server_env["PGPASSFILE"] = _write_private(runtime_dir, "pgpass", pgpass)
    server_env.update({
        "MLFLOW_BACKEND_STORE_URI": settings.backend_store_uri,
        "MLFLOW_AUTH_CONFIG_PATH": write_auth_config(runtime_dir, settings),
        SECRET_KEY: settings.secret_key,
        "MLFLOW_AUTH_ADMIN_USERNAME": settings.admin_username,
    })
    # The server-side job runner serves GenAI features persondet does not use: fewer processes and routes.
    server_env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return server_env


def init_server(env: Mapping[str, str]) -> ServerSettings:
    """``init``: settings, databases reachable, schema upgraded, auth store bootstrapped."""
    from persondet.server_bootstrap import bootstrap, read_team

    settings = settings_from_env(env)
    team = read_team(settings.team_file) if settings.team_file else []
    for uri, password in settings.databases():
        print(f"persondet: waiting for the database {redact(uri)}", file=sys.stderr, flush=True)
        wait_for_database(uri, password, settings.db_wait_s)
    print("persondet: mlflow db upgrade", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="persondet-init-") as tmp:
        upgrade_database(settings.backend_store_uri, runtime_env({**env, "PERSONDET_SERVER_RUNTIME_DIR": tmp},
                                                                  settings))
    bootstrap(settings, team)
    return settings


def prepare_server(env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """``serve`` up to the exec: returns the server command and its environment."""
    settings = settings_from_env(env)
    return server_command(settings), runtime_env(env, settings)


def main(argv: Sequence[str] | None = None) -> None:
    steps = list(sys.argv[1:] if argv is None else argv) or ["init", "serve"]
    if any(step not in ("init", "serve") for step in steps):
        raise PersondetError(f"unknown step(s) {' '.join(steps)!r}: give init, serve or nothing (both)")
    if "init" in steps:
        init_server(os.environ)
    if "serve" in steps:
        command, env = prepare_server(os.environ)
        print(f"persondet: starting mlflow server with basic-auth on {command[command.index('--host') + 1]}:"
              f"{command[command.index('--port') + 1]}", file=sys.stderr, flush=True)
        os.execve(command[0], command, env)  # the server takes over this process (and its signals)


if __name__ == "__main__":
    from persondet.cli import run_cli

    sys.exit(run_cli(main))
