
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

@_pytest.fixture(scope="session")
def docker_engine():
    """dockerd on a private socket, bridge-less (host networking only); skips when it cannot run here."""
    from docker_engine import DockerEngine, EngineUnavailable

    engine = DockerEngine()
    try:
        engine.start()
    except EngineUnavailable as exc:
        _pytest.skip(f"no Docker Engine for the container tests: {exc}")
    yield engine
    engine.stop()


@_pytest.fixture(scope="session")
def docker_client(docker_engine):
    """A ``docker.DockerClient`` for ``docker_engine``."""
    client = docker_engine.client()
    yield client
    client.close()


@_pytest.fixture(scope="session")
def docker_base_image(docker_client):
    """The local stand-in for python:3.11-slim-bookworm (debootstrap + docker import, cached)."""
    from docker_engine import EngineUnavailable, ensure_base_image

    try:
        return ensure_base_image(docker_client)
    except EngineUnavailable as exc:
        _pytest.skip(f"no base image for the container tests: {exc}")


@_pytest.fixture(scope="session")
def wheelhouse_url():
    """The project's dependencies as wheels (pip download, cached), served over HTTP on loopback."""
    from docker_engine import EngineUnavailable, WheelhouseServer, ensure_wheelhouse

    try:
        folder = ensure_wheelhouse()
    except EngineUnavailable as exc:
        _pytest.skip(f"no wheelhouse for the container tests: {exc}")
    with WheelhouseServer(folder) as server:
        yield server.url


def _project_image(request, dockerfile: str, tag: str) -> str:
    from docker_engine import build_project_image

    client = request.getfixturevalue("docker_client")
    log = request.config.cache.mkdir("docker-builds") / f"{tag.replace(':', '_').replace('/', '_')}.log"
    build_project_image(client, dockerfile, tag, request.getfixturevalue("docker_base_image"),
                        request.getfixturevalue("wheelhouse_url"), log_path=log)
    return tag


@_pytest.fixture(scope="session")
def trainer_image(request):
    """docker/trainer.Dockerfile built through the API on the local base image (the name compose uses)."""
    from persondet.images import TRAINER_DOCKERFILE

    return _project_image(request, TRAINER_DOCKERFILE, "persondet-trainer:latest")


@_pytest.fixture(scope="session")
def server_image(request):
    """docker/server.Dockerfile built through the API on the local base image (the name compose uses)."""
    from persondet.images import SERVER_DOCKERFILE

    return _project_image(request, SERVER_DOCKERFILE, "persondet-mlflow-server:latest")


def pytest_terminal_summary(terminalreporter):
    """The container harness's measured times (dockerd start, base image, wheelhouse, image builds)."""
    import sys as _sys

    harness = _sys.modules.get("docker_engine")
    if harness is not None and harness.TIMINGS:
        terminalreporter.section("container harness times")
        for name, seconds in harness.TIMINGS.items():
            terminalreporter.write_line(f"{name}: {seconds:.1f} s")
