"""The services of docker-compose.yml, started natively for the tests (CI has no container engine).

``NativePostgres``: the machine's PostgreSQL binaries, a fresh cluster in a temp dir, loopback only, a free
port, password authentication, the databases of docker/postgres-init.sql.  PostgreSQL refuses to run as
root, so as root it runs as the ``postgres`` system user.
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
DB_USER = "mlflow"


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
    def __init__(self, bin_dir: str):
        self.bin_dir = bin_dir
        self.password = secrets.token_urlsafe(16)
        self.port = free_port()
        self.base = tempfile.mkdtemp(prefix="persondet-pg-")
        self.data = os.path.join(self.base, "data")
        self.log = os.path.join(self.base, "postgres.log")
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.base, user.pw_uid, user.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        subprocess.run(self._as_user + list(args), check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> "NativePostgres":
        pwfile = os.path.join(self.base, "pwfile")
        with open(pwfile, "w") as f:
            f.write(self.password + "\n")
        if self._as_user:
            user = pwd.getpwnam("postgres")
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        os.chmod(pwfile, 0o600)
        self._run(os.path.join(self.bin_dir, "initdb"), "-D", self.data, "-U", DB_USER, "--pwfile", pwfile,
                  "--auth", "scram-sha-256", "--encoding", "UTF8", "--no-sync")
        os.unlink(pwfile)
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.base} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
        self._run(os.path.join(self.bin_dir, "pg_ctl"), "-D", self.data, "-l", self.log, "-o", options,
                  "-w", "-t", "60", "start")
        self._create_databases()
        return self

    def _create_databases(self) -> None:
        import psycopg2

        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user=DB_USER, password=self.password,
                                      dbname="postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("CREATE DATABASE mlflow")
            for statement in INIT_SQL.read_text().split(";"):
                lines = [ln for ln in statement.splitlines() if ln.strip() and not ln.strip().startswith("--")]
                if lines:
                    cursor.execute("\n".join(lines))
        connection.close()

    def uri(self, database: str) -> str:
        return f"postgresql://{DB_USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        subprocess.run(self._as_user + [os.path.join(self.bin_dir, "pg_ctl"), "-D", self.data, "-m", "immediate",
                                         "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.base, ignore_errors=True)


class TrackingServer:
    """The MLflow server with basic-auth, started through the compose service's start script."""

    def __init__(self, postgres: NativePostgres, workdir: str):
        self.postgres = postgres
        self.workdir = workdir
        self.port = free_port()
        self.username = "admin"
        self.password = secrets.token_urlsafe(16)
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(workdir, "mlflow-server.log")
        self.process: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "PYTHON": sys.executable,
            "MLFLOW_BACKEND_STORE_URI": self.postgres.uri("mlflow"),
            "MLFLOW_AUTH_DATABASE_URI": self.postgres.uri("mlflow_auth"),
            "MLFLOW_ARTIFACTS_DESTINATION": os.path.join(self.workdir, "artifacts"),
            "MLFLOW_AUTH_ADMIN_USERNAME": self.username,
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32),
            "MLFLOW_HOST": "127.0.0.1",
            "MLFLOW_PORT": str(self.port),
            "MLFLOW_WORKERS": "1",
            "PERSONDET_SERVER_RUNTIME_DIR": os.path.join(self.workdir, "runtime"),
        })
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            env.pop(name, None)
        return env

    def start(self, timeout_s: float = 120) -> "TrackingServer":
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

    def client_env(self) -> dict[str, str]:
        """What a client needs: the URI, credentials and quick retries (the server may restart)."""
        return {"MLFLOW_TRACKING_URI": self.uri, "MLFLOW_TRACKING_USERNAME": self.username,
                "MLFLOW_TRACKING_PASSWORD": self.password,
                "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "8", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5"}
