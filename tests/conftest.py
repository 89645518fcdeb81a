
# --- the shared tracking server, started natively (tests/native_services.py); one per test session ---
import pytest as _pytest


@_pytest.fixture(scope="session")
def native_postgres():
    """PostgreSQL from the machine's binaries on loopback in a temp dir (skips when not installed)."""
    from native_services import NativePostgres, find_postgres_bin

    bin_dir = find_postgres_bin()
    if bin_dir is None:
        _pytest.skip("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; "
                     "scripts/system-deps.sh installs them")
    postgres = NativePostgres(bin_dir).start()
    yield postgres
    postgres.stop()


@_pytest.fixture(scope="session")
def tracking_server(native_postgres, tmp_path_factory):
    """The MLflow server with basic-auth, started by scripts/start-tracking-server.sh."""
    from native_services import TrackingServer

    server = TrackingServer(native_postgres, str(tmp_path_factory.mktemp("tracking-server"))).start()
    yield server
    server.kill()
    print(f"tracking server log: {server.log_path}")
