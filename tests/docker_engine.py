"""A real Docker Engine for the container tests: Debian's dockerd, its base image made locally, a wheelhouse.

The machine reaches no image registry and no private-range address, so:

- ``DockerEngine`` starts ``dockerd`` as root on its own socket with no bridge network
  (``--bridge=none --iptables=false``); containers and builds use host networking (loopback works).
- ``ensure_base_image`` makes ``persondet-test-base:bookworm`` with ``debootstrap --variant=minbase``
  and ``docker import``: Debian's python3.11 with a virtual environment first on PATH, so ``python``
  and ``pip`` behave as in the official ``python:3.11-slim-bookworm`` image the Dockerfiles default to.
- ``ensure_wheelhouse`` downloads the project's dependencies (``pip download``) once; ``WheelhouseServer``
  serves them on loopback, and ``build_project_image`` builds docker/*.Dockerfile through the API with
  ``BASE_IMAGE``, ``PIP_NO_INDEX=1`` and ``PIP_FIND_LINKS`` as build arguments (how air-gapped GPU
  servers get the trainer image too; docs/LAUNCH.md).

Everything slow is cached under ``$PERSONDET_TEST_CACHE`` (default /var/cache/persondet-tests): the
base rootfs tar, the wheelhouse and each engine's data-root (images and build cache). Two test sessions
at once get two engines (one data-root "slot" each, held with a file lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import http.server
import os
import shutil
import signal
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("PERSONDET_TEST_CACHE", "/var/cache/persondet-tests"))
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("PERSONDET_DEBIAN_MIRROR", "http://deb.debian.org/debian")
BASE_PACKAGES = ("python3", "python3-venv", "git", "ca-certificates")
BASE_IMAGE = f"persondet-test-base:{DEBIAN_SUITE}"
BASE_VENV = "/opt/python"
TEST_LABEL = "persondet.test"  # on every container run_container starts
# The wheelhouse URL is a build argument, part of the build cache key: a fixed port per engine slot keeps
# the cached layers valid from one session to the next.
WHEELHOUSE_PORT = 39871
TIMINGS: dict[str, float] = {}  # what took how long (seconds), printed at the end of the session


class EngineUnavailable(Exception):
    """dockerd cannot run here (not root, not installed): the container tests skip with this message."""


def unavailable_reason() -> str | None:
    """Why this machine cannot start dockerd for the tests, or None when it can."""
    if os.geteuid() != 0:
        return "the container tests start dockerd and need root"
    for tool in ("dockerd", "containerd", "runc"):
        if shutil.which(tool) is None:
            return f"{tool} not found (Debian's docker.io package; scripts/system-deps.sh installs it)"
    try:
        import docker  # noqa: F401
    except ImportError:
        return "the docker Python SDK is not installed"
    return None


@contextlib.contextmanager
def _locked(path: Path, blocking: bool = True) -> Iterator[bool]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def timed(name: str) -> Iterator[None]:
    start = time.monotonic()
    try:
        yield
    finally:
        TIMINGS[name] = TIMINGS.get(name, 0.0) + time.monotonic() - start


# --- the daemon ---------------------------------------------------------------------------------------

class DockerEngine:
    """One dockerd on a private socket, data-root in the cache (a slot nobody else holds)."""

    def __init__(self, cache: Path = CACHE, max_slots: int = 4):
        self.cache = cache
        self.max_slots = max_slots
        self.process: subprocess.Popen | None = None
        self._slot_lock = None
        self.data_root: Path | None = None
        self.run_dir: Path | None = None
        self.slot = -1
        # The same engine on tcp://127.0.0.1:<port> with TLS (client certificate required): ca.pem,
        # cert.pem and key.pem in tls_dir are what a client needs.
        self.tcp_url = ""
        self.tls_dir: Path | None = None

    @property
    def base_url(self) -> str:
        return f"unix://{self.run_dir}/docker.sock"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "dockerd.log"

    def _take_slot(self) -> Path:
        for slot in range(self.max_slots):
            handle = open(self.cache / "engines" / f"{slot}.lock", "a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            self._slot_lock, self.slot = handle, slot
            return self.cache / "engines" / str(slot)
        raise RuntimeError(f"all {self.max_slots} engine slots under {self.cache / 'engines'} are in use")

    def start(self, timeout_s: float = 90) -> "DockerEngine":
        reason = unavailable_reason()
        if reason:
            raise EngineUnavailable(reason)
        (self.cache / "engines").mkdir(parents=True, exist_ok=True)
        slot = self._take_slot()
        self.data_root = slot / "data-root"
        self.data_root.mkdir(parents=True, exist_ok=True)
        # unix socket paths are limited to 108 bytes: a short run directory
        self.run_dir = Path(tempfile.mkdtemp(prefix="pdt-", dir="/run" if os.access("/run", os.W_OK) else None))
        self.tls_dir = self.run_dir / "tls"
        _make_tls_files(self.tls_dir)
        self.tcp_url = f"tcp://127.0.0.1:{_free_port()}"
        command = ["dockerd", "--data-root", str(self.data_root), "--exec-root", str(self.run_dir / "exec"),
                   "-H", self.base_url, "-H", self.tcp_url, "--tlsverify",
                   "--tlscacert", str(self.tls_dir / "ca.pem"), "--tlscert", str(self.tls_dir / "server-cert.pem"),
                   "--tlskey", str(self.tls_dir / "server-key.pem"), "--pidfile", str(self.run_dir / "dockerd.pid"),
                   "--bridge=none", "--iptables=false", "--ip-forward=false", "--ip-masq=false",
                   "--userland-proxy=false", "--log-level=warn"]
        with timed("dockerd start"), open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
            deadline = time.monotonic() + timeout_s
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"dockerd exited with {self.process.returncode}:\n{self.log_tail()}")
                try:
                    if self.client(timeout=5).ping():
                        break
                except Exception:  # noqa: BLE001 - not listening yet
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"dockerd not answering after {timeout_s} s:\n{self.log_tail()}")
                time.sleep(0.2)
        self.remove_containers()  # left by a session that was killed: this data-root is the tests' own
        with contextlib.suppress(Exception):  # images replaced by later builds (GBs each)
            self.client().images.prune(filters={"dangling": True})
        return self

    def client(self, timeout: int = 900):
        import docker

        return docker.DockerClient(base_url=self.base_url, timeout=timeout)

    def remove_containers(self) -> int:
        """Remove every container of this engine (tests' and launchers' alike); returns how many."""
        client = self.client()
        containers = client.containers.list(all=True)
        for container in containers:
            with contextlib.suppress(Exception):
                container.remove(force=True)
        return len(containers)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(Exception):
                self.remove_containers()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        if self.run_dir is not None:
            _unmount_under(self.run_dir)  # dockerd leaves its netns mount behind
            shutil.rmtree(self.run_dir, ignore_errors=True)
        if self._slot_lock is not None:
            self._slot_lock.close()
            self._slot_lock = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_tls_files(folder: Path) -> None:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate (PEM files)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(mode=0o700)
    now = datetime.datetime.now(datetime.timezone.utc)

    def certificate(name, key, issuer, issuer_key, ca=False, usage=None, names=()):
        builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                   .issuer_name(issuer).public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=2))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if usage:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    def write(name: str, data: bytes) -> None:
        (folder / name).write_bytes(data)
        os.chmod(folder / name, 0o600)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "persondet test CA")])
    ca = certificate("persondet test CA", ca_key, ca_name, ca_key, ca=True)
    write("ca.pem", ca.public_bytes(serialization.Encoding.PEM))
    for prefix, usage, names in (
            ("server-", ExtendedKeyUsageOID.SERVER_AUTH,
             (x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost"))),
            ("", ExtendedKeyUsageOID.CLIENT_AUTH, ())):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = certificate(f"{prefix or 'client-'}persondet-test", key, ca_name, ca_key, usage=usage, names=names)
        write(f"{prefix}cert.pem", cert.public_bytes(serialization.Encoding.PEM))
        write(f"{prefix}key.pem", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))


def _unmount_under(folder: Path) -> None:
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    for point in sorted((p for p in points if p.startswith(f"{folder}/")), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


# --- the base image -----------------------------------------------------------------------------------

def _base_key() -> str:
    text = f"{DEBIAN_SUITE}|{','.join(BASE_PACKAGES)}|{BASE_VENV}|1"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def base_rootfs_tar(cache: Path = CACHE) -> Path:
    """The base image's root filesystem as a tar (made once with debootstrap, then cached)."""
    target = cache / f"base-{DEBIAN_SUITE}-{_base_key()}.tar"
    with _locked(cache / "base.lock"):
        if target.is_file():
            return target
        if shutil.which("debootstrap") is None:
            raise EngineUnavailable("debootstrap not found (scripts/system-deps.sh installs it)")
        with timed("base image: debootstrap"), tempfile.TemporaryDirectory(dir=cache) as tmp:
            rootfs = Path(tmp) / "rootfs"
            _run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", DEBIAN_SUITE,
                  str(rootfs), DEBIAN_MIRROR], "debootstrap")
            _run(["chroot", str(rootfs), "python3", "-m", "venv", BASE_VENV], "python3 -m venv in the rootfs")
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for path in (rootfs / junk).glob("*"):
                    if path.is_file():
                        path.unlink()
            partial = Path(tmp) / "rootfs.tar"
            _run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."], "tar of the rootfs")
            os.replace(partial, target)
    return target


def ensure_base_image(client, cache: Path = CACHE) -> str:
    """``persondet-test-base:bookworm`` on the engine of ``client`` (imported from the cached rootfs)."""
    import docker

    marker = f"PERSONDET_BASE_KEY={_base_key()}"
    try:
        if marker in (client.images.get(BASE_IMAGE).attrs["Config"].get("Env") or []):
            return BASE_IMAGE
    except docker.errors.ImageNotFound:
        pass
    tar = base_rootfs_tar(cache)
    repository, tag = BASE_IMAGE.split(":")
    changes = [f"ENV PATH={BASE_VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "ENV LANG=C.UTF-8", f"ENV {marker}", 'CMD ["python3"]']
    with timed("base image: docker import"):
        client.api.import_image_from_file(str(tar), repository=repository, tag=tag, changes=changes)
    return BASE_IMAGE


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}):\n{(result.stdout + result.stderr)[-3000:]}")


# --- the wheelhouse -----------------------------------------------------------------------------------

def project_requirements() -> list[str]:
    """pyproject.toml's dependencies plus its build requirements (``pip install -e .`` builds offline)."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)
    return list(project["build-system"]["requires"]) + list(project["project"]["dependencies"])


def ensure_wheelhouse(cache: Path = CACHE, requirements: list[str] | None = None) -> Path:
    """A folder of wheels for ``requirements`` (default: the project's), made once with ``pip download``."""
    requirements = requirements or project_requirements()
    constraints = ROOT / "docker" / "constraints.txt"  # the versions the images install (-c)
    key = hashlib.sha256("\n".join(requirements + [constraints.read_text()]).encode()).hexdigest()[:12]
    target = cache / f"wheelhouse-{key}"
    with _locked(cache / "wheelhouse.lock"):
        if target.is_dir():
            return target
        with timed("wheelhouse: pip download"), tempfile.TemporaryDirectory(dir=cache) as tmp:
            folder = Path(tmp) / "wheels"
            # for the image (Debian bookworm's python 3.11), whatever python runs the tests; pip takes
            # platform tags literally, so every manylinux tag the wheels use is listed
            platforms = [f"manylinux_2_{v}_x86_64" for v in range(5, 29)] + [
                "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
            _run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--python-version",
                  "3.11", *(f"--platform={tag}" for tag in platforms), "-d", str(folder),
                  "-c", str(constraints), *requirements], "pip download")
            os.replace(folder, target)
    return target


class WheelhouseServer:
    """The wheelhouse over HTTP on loopback (``pip --find-links`` reads its directory listing)."""

    def __init__(self, folder: Path, port: int = WHEELHOUSE_PORT):
        handler = functools.partial(_QuietHandler, directory=str(folder))
        try:
            self.httpd = _Server(("127.0.0.1", port), handler)
        except OSError:  # taken: any free port (the next image build misses the cache once)
            self.httpd = _Server(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "WheelhouseServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


# --- project images and containers --------------------------------------------------------------------

def build_project_image(client, dockerfile: str, tag: str, base_image: str, wheelhouse_url: str,
                        log_path: Path | None = None) -> str:
    """Build docker/<...>.Dockerfile through the API on the local base image, installing from the
    wheelhouse only (host networking: the wheelhouse is on loopback); returns the image id."""
    from persondet.images import build_image

    buildargs = {"BASE_IMAGE": base_image, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": wheelhouse_url}
    log = open(log_path, "a") if log_path else None
    try:
        with timed(f"image build: {tag}"):
            return build_image(client, dockerfile, tag, buildargs, network_mode="host",
                               log=(lambda line: print(line, file=log, flush=True)) if log else
                               (lambda line: None), where="test engine")
    finally:
        if log:
            log.close()


class Harness:
    """The session's engine, base image, wheelhouse server and project images, each made once, on first
    use or by ``prepare_in_background`` (which starts them all while the other tests run)."""

    def __init__(self, cache: Path = CACHE):
        self.cache = cache
        self._lock = threading.Lock()
        self._steps: dict[str, tuple[threading.Lock, list]] = {}
        self._closers: list = []

    def _once(self, key: str, make):
        with self._lock:
            lock, box = self._steps.setdefault(key, (threading.Lock(), []))
        with lock:
            if not box:
                try:
                    box.append((True, make()))
                except BaseException as exc:  # noqa: BLE001 - handed to every caller of this step
                    box.append((False, exc))
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def engine(self) -> DockerEngine:
        def start() -> DockerEngine:
            engine = DockerEngine(self.cache)
            self._closers.append(engine.stop)
            return engine.start()
        return self._once("engine", start)

    def base_image(self) -> str:
        return self._once("base image", lambda: ensure_base_image(self.engine().client(), self.cache))

    def wheelhouse_url(self) -> str:
        def serve() -> str:
            folder = ensure_wheelhouse(self.cache)
            server = WheelhouseServer(folder, WHEELHOUSE_PORT + self.engine().slot).__enter__()
            self._closers.append(server.close)
            return server.url
        return self._once("wheelhouse", serve)

    def image(self, dockerfile: str, tag: str) -> str:
        def build() -> str:
            base, wheels = self.base_image(), self.wheelhouse_url()
            log = self.engine().data_root.parent / f"build-{tag.replace(':', '_').replace('/', '_')}.log"
            log.write_text("")
            build_project_image(self.engine().client(), dockerfile, tag, base, wheels, log_path=log)
            return tag
        return self._once(f"image {tag}", build)

    def prepare_in_background(self, images: list[tuple[str, str]]) -> None:
        """Start everything now, in threads: the wheelhouse, the engine and base image, then the images
        (each waits for both). A failure is kept for the fixture that asks for that step."""
        def quietly(step, *args) -> None:
            with contextlib.suppress(BaseException):
                step(*args)

        for step, args in [(self.wheelhouse_url, ()), (self.base_image, ())] + [(self.image, i) for i in images]:
            threading.Thread(target=quietly, args=(step, *args), daemon=True).start()

    def close(self) -> None:
        for close in reversed(self._closers):
            with contextlib.suppress(Exception):
                close()
        self._closers.clear()


HARNESS = Harness()


def run_container(client, image: str, command, **kwargs):
    """Start a container with host networking (the only network here), labelled as a test container;
    returns it running (detached). Keyword arguments go to ``client.containers.run``."""
    labels = {TEST_LABEL: "1", **kwargs.pop("labels", {})}
    return client.containers.run(image, command, detach=True, network_mode="host", labels=labels, **kwargs)


def run_to_end(client, image: str, command, timeout_s: float = 600, **kwargs):
    """``run_container``, wait for it to exit, remove it; returns (exit status, log, the container's
    configuration as it ran: ``attrs``)."""
    container = run_container(client, image, command, **kwargs)
    try:
        code, logs = wait_container(container, timeout_s)
        container.reload()
        return code, logs, container.attrs
    finally:
        container.remove(force=True)


def wait_container(container, timeout_s: float = 600) -> tuple[int, str]:
    """Wait for a container to exit; returns its exit status and its whole log (stdout and stderr)."""
    result = container.wait(timeout=timeout_s)
    return int(result.get("StatusCode", -1)), container.logs().decode(errors="replace")
