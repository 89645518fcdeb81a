"""The services of docker-compose.yml, started natively for the tests (CI has no container engine).

``NativePostgres``: the machine's PostgreSQL binaries, a fresh cluster in a temp dir, loopback only, a free
port, password authentication, the roles and databases of docker/postgres-init.sql (run with psql).
PostgreSQL refuses to run as root, so as root it runs as the ``postgres`` system user.
``TrackingServer``: scripts/start-tracking-server.sh (the compose service's start script) against it.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START_SCRIPT = ROOT / "scripts" / "start-tracking-server.sh"
INIT_SQL = ROOT / "docker" / "postgres-init.sql"
SUPERUSER = "postgres"
# database -> (its role, the variable that names the role's password file in docker/postgres-init.sql)
ROLES = {"mlflow": ("mlflow_tracking", "PERSONDET_TRACKING_DB_PASSWORD_FILE"),
         "mlflow_auth": ("mlflow_auth", "PERSONDET_AUTH_DB_PASSWORD_FILE"),
         "optuna": ("optuna", "PERSONDET_OPTUNA_DB_PASSWORD_FILE")}


def write_secret(path: str | Path, value: str, owner: str | None = None) -> str:
    """A secret file, owner-only, as compose's secrets are files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    if owner:
        user = pwd.getpwnam(owner)
        os.chown(path, user.pw_uid, user.pw_gid)
    return str(path)


def find_postgres_bin() -> str | None:
    """A directory holding initdb, pg_ctl and postgres, or None."""
    candidates = []
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(os.path.dirname(os.path.realpath(initdb)))
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)
    for directory in candidates:
        if all(os.access(os.path.join(directory, tool), os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return directory
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NativePostgres:
    """A superuser ``postgres`` whose password only this object knows, and the roles and databases of
    docker/postgres-init.sql, created by running that file with psql as compose's postgres image does."""

    def __init__(self, bin_dir: str):
        self.bin_dir = bin_dir
        self.superuser_password = secrets.token_urlsafe(16)
        self.port = free_port()
        self.base = tempfile.mkdtemp(prefix="persondet-pg-")
        self.data = os.path.join(self.base, "data")
        self.log = os.path.join(self.base, "postgres.log")
        self.passwords = {database: secrets.token_urlsafe(18) for database in ROLES}
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.base, user.pw_uid, user.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        subprocess.run(self._as_user + list(args), check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> "NativePostgres":
        pwfile = write_secret(os.path.join(self.base, "pwfile"), self.superuser_password,
                              owner="postgres" if self._as_user else None)
        self._run(os.path.join(self.bin_dir, "initdb"), "-D", self.data, "-U", SUPERUSER, "--pwfile", pwfile,
                  "--auth", "scram-sha-256", "--encoding", "UTF8", "--no-sync")
        os.unlink(pwfile)
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.base} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
        self._run(os.path.join(self.bin_dir, "pg_ctl"), "-D", self.data, "-l", self.log, "-o", options,
                  "-w", "-t", "60", "start")
        result = self.run_init_sql()
        if result.returncode != 0:
            raise RuntimeError(f"docker/postgres-init.sql failed:\n{result.stdout}\n{result.stderr}")
        return self

    def password_file(self, database: str) -> str:
        return os.path.join(self.base, "secrets", f"{ROLES[database][0]}_password")

    def run_init_sql(self, **password_files: str) -> subprocess.CompletedProcess:
        """psql -f docker/postgres-init.sql as the superuser (password in the environment, not argv), with
        each role's password file (``password_files`` overrides them by database name)."""
        env = {**os.environ, "PGPASSWORD": self.superuser_password}
        for database, (_, variable) in ROLES.items():
            if database not in password_files:
                write_secret(self.password_file(database), self.passwords[database])
            env[variable] = password_files.get(database, self.password_file(database))
        return subprocess.run([os.path.join(self.bin_dir, "psql"), "-X", "-v", "ON_ERROR_STOP=1",
                               "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-d", "postgres",
                               "-f", str(INIT_SQL)], env=env, capture_output=True, text=True, timeout=120)

    def role(self, database: str) -> str:
        return ROLES[database][0]

    def uri(self, database: str) -> str:
        """The database's URI as its own role, without a password (that is in password_file)."""
        return f"postgresql://{self.role(database)}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str, role: str | None = None):
        """A psycopg2 connection as ``role`` (default: the database's own role; SUPERUSER allowed)."""
        import psycopg2

        role = role or self.role(database)
        password = self.superuser_password if role == SUPERUSER else self.passwords[
            next(db for db, (name, _) in ROLES.items() if name == role)]
        return psycopg2.connect(host="127.0.0.1", port=self.port, user=role, password=password, dbname=database)

    def stop(self) -> None:
        subprocess.run(self._as_user + [os.path.join(self.bin_dir, "pg_ctl"), "-D", self.data, "-m", "immediate",
                                         "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.base, ignore_errors=True)


class TrackingServer:
    """The MLflow server with basic-auth, started through the compose service's start script, with its
    secrets in files (as compose's secrets are) and a team of one, ``member``."""

    def __init__(self, postgres: NativePostgres, workdir: str, workers: int = 1, auth_cache_ttl_s: int = 60):
        self.postgres = postgres
        self.workdir = workdir
        self.port = free_port()
        self.workers, self.auth_cache_ttl_s = workers, auth_cache_ttl_s
        self.username = "admin"
        self.password = secrets.token_urlsafe(16)
        self.secret_key = secrets.token_hex(32)
        self.team = {"member": secrets.token_urlsafe(16)}
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(workdir, "mlflow-server.log")
        self.secrets_dir = os.path.join(workdir, "secrets")
        self.process: subprocess.Popen | None = None

    def secret_values(self) -> list[str]:
        """Every password and key this server knows, to look for where none may appear."""
        return [self.password, self.secret_key, *self.team.values(), *self.postgres.passwords.values(),
                self.postgres.superuser_password]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        team = "\n".join(f"{name}:{password}" for name, password in self.team.items())
        env.update({
            "PYTHON": sys.executable,
            "MLFLOW_BACKEND_STORE_URI": self.postgres.uri("mlflow"),
            "PERSONDET_BACKEND_STORE_PASSWORD_FILE": self.postgres.password_file("mlflow"),
            "MLFLOW_AUTH_DATABASE_URI": self.postgres.uri("mlflow_auth"),
            "PERSONDET_AUTH_DATABASE_PASSWORD_FILE": self.postgres.password_file("mlflow_auth"),
            "MLFLOW_ARTIFACTS_DESTINATION": os.path.join(self.workdir, "artifacts"),
            "MLFLOW_AUTH_ADMIN_USERNAME": self.username,
            "MLFLOW_AUTH_ADMIN_PASSWORD_FILE": write_secret(os.path.join(self.secrets_dir, "admin"), self.password),
            "MLFLOW_FLASK_SERVER_SECRET_KEY_FILE": write_secret(os.path.join(self.secrets_dir, "flask"),
                                                                self.secret_key),
            "PERSONDET_TEAM_FILE": write_secret(os.path.join(self.secrets_dir, "team"), team),
            "PERSONDET_AUTH_CACHE_TTL_S": str(self.auth_cache_ttl_s),
            "MLFLOW_HOST": "127.0.0.1",
            "MLFLOW_PORT": str(self.port),
            "MLFLOW_WORKERS": str(self.workers),
            "PERSONDET_SERVER_RUNTIME_DIR": os.path.join(self.workdir, "runtime"),
        })
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PGPASSWORD",
                     "PGPASSFILE"):
            env.pop(name, None)
        return env

    def start(self, timeout_s: float = 300) -> "TrackingServer":
        log = open(self.log_path, "a")
        self.process = subprocess.Popen(["bash", str(START_SCRIPT)], env=self.env(), cwd=self.workdir,
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tracking server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.3)
        self.kill()
        raise RuntimeError(f"tracking server not healthy after {timeout_s} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL the server's whole process group (uvicorn and its workers), like a crash."""
        if self.process and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=30)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(Path(self.log_path).read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def client_env(self, username: str | None = None) -> dict[str, str]:
        """What a client needs: the URI, credentials (the admin's, or a team member's) and quick retries
        (the server may restart)."""
        username = username or self.username
        password = self.password if username == self.username else self.team[username]
        return {"MLFLOW_TRACKING_URI": self.uri, "MLFLOW_TRACKING_USERNAME": username,
                "MLFLOW_TRACKING_PASSWORD": password,
                "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "8", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5"}


def log_metric_load(uri: str, username: str, password: str, clients: int = 8, calls: int = 200) -> dict:
    """``clients`` threads, each logging ``calls`` values of its own metric to its own run with one
    ``MlflowClient.log_metric`` request per value (no client retries, so a server error counts); then
    every value is read back. Returns requests/s, p50/p95 latency, errors and lost values."""
    import statistics
    import threading
    import uuid

    import mlflow
    from mlflow import MlflowClient

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                                            "MLFLOW_HTTP_REQUEST_MAX_RETRIES")}
    os.environ.update(MLFLOW_TRACKING_USERNAME=username, MLFLOW_TRACKING_PASSWORD=password,
                      MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    try:
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name("persondet").experiment_id
        runs = [client.create_run(experiment, run_name=f"load-{uuid.uuid4().hex[:6]}-{i}").info.run_id
                for i in range(clients)]
        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        start = threading.Barrier(clients + 1)

        def worker(index: int) -> None:
            own = MlflowClient(tracking_uri=uri)
            start.wait()
            for step in range(calls):
                began = time.perf_counter()
                try:
                    own.log_metric(runs[index], f"load_{index}", float(step), step=step)
                except Exception as exc:  # noqa: BLE001 - every failure is counted, none stops the load
                    with lock:
                        errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                    continue
                with lock:
                    latencies.append(time.perf_counter() - began)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        start.wait()
        began = time.perf_counter()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
        lost = 0
        for index, run_id in enumerate(runs):
            stored = {(m.step, m.value) for m in client.get_metric_history(run_id, f"load_{index}")}
            lost += len({(step, float(step)) for step in range(calls)} - stored)
        for run_id in runs:
            client.set_terminated(run_id)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        mlflow.set_tracking_uri(None)
    latencies.sort()
    return {"requests": clients * calls, "seconds": elapsed, "requests_per_s": clients * calls / elapsed,
            "p50_s": statistics.median(latencies) if latencies else float("nan"),
            "p95_s": latencies[int(0.95 * (len(latencies) - 1))] if latencies else float("nan"),
            "errors": len(errors), "first_errors": errors[:3], "lost": lost}
