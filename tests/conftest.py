
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


# --- a real Docker Engine (tests/docker_engine.py): one dockerd per test session, images built locally ---
# The container tests run last; their engine, base image, wheelhouse and images are prepared in the
# background from the start of the session, while the other tests run.

def _harness_step(step, *args):
    from docker_engine import EngineUnavailable

    try:
        return step(*args)
    except EngineUnavailable as exc:
        _pytest.skip(f"no Docker Engine for the container tests: {exc}")


@_pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    containers = [item for item in items if item.get_closest_marker("containers")]
    if not containers or config.option.collectonly:
        return
    items[:] = [item for item in items if not item.get_closest_marker("containers")] + containers
    from docker_engine import HARNESS, unavailable_reason
    from persondet.images import SERVER_DOCKERFILE, TRAINER_DOCKERFILE

    if unavailable_reason() is None:
        HARNESS.prepare_in_background([(TRAINER_DOCKERFILE, TRAINER_IMAGE), (SERVER_DOCKERFILE, SERVER_IMAGE)])


def pytest_sessionfinish(session):
    import sys as _sys

    harness = _sys.modules.get("docker_engine")
    if harness is not None:
        harness.HARNESS.close()


TRAINER_IMAGE = "persondet-trainer:latest"  # the names docker-compose.yml gives the images
SERVER_IMAGE = "persondet-mlflow-server:latest"


@_pytest.fixture(scope="session")
def docker_engine():
    """dockerd on a private socket, bridge-less (host networking only); skips when it cannot run here."""
    from docker_engine import HARNESS

    return _harness_step(HARNESS.engine)


@_pytest.fixture(scope="session")
def docker_client(docker_engine):
    """A ``docker.DockerClient`` for ``docker_engine``."""
    client = docker_engine.client()
    yield client
    client.close()


@_pytest.fixture(scope="session")
def docker_base_image(docker_engine):
    """The local stand-in for python:3.11-slim-bookworm (debootstrap + docker import, cached)."""
    from docker_engine import HARNESS

    return _harness_step(HARNESS.base_image)


@_pytest.fixture(scope="session")
def wheelhouse_url():
    """The project's dependencies as wheels (pip download, cached), served over HTTP on loopback."""
    from docker_engine import HARNESS

    return _harness_step(HARNESS.wheelhouse_url)


@_pytest.fixture(scope="session")
def trainer_image(docker_engine):
    """docker/trainer.Dockerfile built through the API on the local base image, from the wheelhouse."""
    from docker_engine import HARNESS
    from persondet.images import TRAINER_DOCKERFILE

    return _harness_step(HARNESS.image, TRAINER_DOCKERFILE, TRAINER_IMAGE)


@_pytest.fixture(scope="session")
def server_image(docker_engine):
    """docker/server.Dockerfile built through the API on the local base image, from the wheelhouse."""
    from docker_engine import HARNESS
    from persondet.images import SERVER_DOCKERFILE

    return _harness_step(HARNESS.image, SERVER_DOCKERFILE, SERVER_IMAGE)


def pytest_terminal_summary(terminalreporter):
    """The container harness's measured times (dockerd start, base image, wheelhouse, image builds)."""
    import sys as _sys

    harness = _sys.modules.get("docker_engine")
    if harness is not None and harness.TIMINGS:
        terminalreporter.section("container harness times")
        for name, seconds in harness.TIMINGS.items():
            terminalreporter.write_line(f"{name}: {seconds:.1f} s")
