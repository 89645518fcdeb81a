"""The Docker hosts of ``launch``: ``servers.yml`` read and checked, and one Engine API client per host.

A servers file is a mapping with a ``servers`` list (docs/LAUNCH.md has a worked example)::

    servers:
      - name: a100x8
        url: ssh://ml@gpu-a100x8          # or tcp://host:2376 with tls, or unix:///var/run/docker.sock
        gpus: 8                           # GPUs one training uses (0: a CPU host)
        data_roots: [/data/coco, /data/cuhk-sysu]   # mounted read-only at the same path

Every error names the file, the server and the value, on one line.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from persondet.errors import PersondetError

SERVER_TAG = "persondet.server"  # on every training run launch starts: which server(s) ran it
LAUNCH_LABEL = "persondet.launch"  # on every container a launch starts (its launch id)
GPU_PROBE = "import torch; print(torch.cuda.device_count())"
URL_SCHEMES = ("unix", "ssh", "tcp", "http", "https")
KEYS = ("name", "url", "gpus", "data_roots", "writable_mounts", "tracking_uri", "address", "shm_size", "tls",
        "environment")
TLS_KEYS = ("ca_cert", "client_cert", "client_key", "verify")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SIZE = re.compile(r"^\d+[bkmg]?$", re.I)


@dataclass(frozen=True)
class Tls:
    ca_cert: str = ""
    client_cert: str = ""
    client_key: str = ""
    verify: bool = True


@dataclass(frozen=True)
class Server:
    name: str
    url: str
    gpus: int | tuple[str, ...] = 0  # a count, or the device ids to use
    data_roots: tuple[tuple[str, str], ...] = ()  # (path on the host, path in the container), read-only
    writable_mounts: tuple[tuple[str, str], ...] = ()  # read-write (checkpoints, caches)
    tracking_uri: str = ""  # as this host reaches the tracking server; empty: the launcher's
    address: str = ""  # how the other nodes of a multi-node training reach this host
    shm_size: str = "8g"  # /dev/shm: DataLoader workers pass batches through it
    tls: Tls | None = None
    environment: tuple[tuple[str, str], ...] = ()  # extra container variables (not for secrets)

    @property
    def gpu_count(self) -> int:
        return len(self.gpus) if isinstance(self.gpus, tuple) else self.gpus

    @property
    def node_address(self) -> str:
        """The address given, else the host of the URL (loopback for a local socket)."""
        if self.address:
            return self.address
        parts = urlsplit(self.url)
        return parts.hostname or "127.0.0.1" if parts.scheme != "unix" else "127.0.0.1"


def read_servers(path: str) -> list[Server]:
    """The servers of a servers file, checked; a one-line PersondetError names what is wrong."""
    import yaml

    file = Path(path).expanduser()
    try:
        document = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PersondetError(f"servers={path!r}: cannot read the file ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise PersondetError(f"servers={path!r}: not valid YAML ({' '.join(str(exc).split())[:200]})") from None
    entries = document.get("servers") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise PersondetError(f"servers={path!r}: expected a mapping with a non-empty 'servers' list")
    servers = [_server(entry, f"{path}: server {i + 1}") for i, entry in enumerate(entries)]
    names = [s.name for s in servers]
    for name in names:
        if names.count(name) > 1:
            raise PersondetError(f"{path}: the server name {name!r} is used twice")
    return servers


def _server(entry: Any, where: str) -> Server:
    if not isinstance(entry, dict):
        raise PersondetError(f"{where}: expected a mapping with name, url, gpus")
    name = str(entry.get("name") or "")
    if not _NAME.match(name):
        raise PersondetError(f"{where}: name={name!r} must be letters, digits, '.', '_' or '-'")
    where = f"{where} ({name})"
    unknown = sorted(set(entry) - set(KEYS))
    if unknown:
        raise PersondetError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(KEYS)})")
    url = str(entry.get("url") or "")
    if urlsplit(url).scheme not in URL_SCHEMES:
        raise PersondetError(f"{where}: url={url!r} must start with one of "
                             f"{', '.join(s + '://' for s in URL_SCHEMES)}")
    shm_size = str(entry.get("shm_size", "8g"))
    if not _SIZE.match(shm_size):
        raise PersondetError(f"{where}: shm_size={shm_size!r} must be a size such as 8g or 512m")
    environment = entry.get("environment") or {}
    if not isinstance(environment, dict):
        raise PersondetError(f"{where}: environment must be a mapping of variable names to values")
    return Server(name=name, url=url, gpus=_gpus(entry.get("gpus", 0), where),
                  data_roots=_mounts(entry.get("data_roots"), where, "data_roots"),
                  writable_mounts=_mounts(entry.get("writable_mounts"), where, "writable_mounts"),
                  tracking_uri=str(entry.get("tracking_uri") or ""), address=str(entry.get("address") or ""),
                  shm_size=shm_size, tls=_tls(entry.get("tls"), where),
                  environment=tuple((str(k), str(v)) for k, v in environment.items()))


def _gpus(value: Any, where: str) -> int | tuple[str, ...]:
    if isinstance(value, list) and value:
        return tuple(str(v) for v in value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise PersondetError(f"{where}: gpus={value!r} must be a number >= 0 or a list of device ids")


def _mounts(value: Any, where: str, key: str) -> tuple[tuple[str, str], ...]:
    """A list of absolute paths (mounted at the same path) or a mapping host path -> container path."""
    if value is None:
        return ()
    pairs = list(value.items()) if isinstance(value, dict) else [(v, v) for v in value] \
        if isinstance(value, list) else None
    if pairs is None:
        raise PersondetError(f"{where}: {key} must be a list of paths or a mapping host path: container path")
    for host, inside in pairs:
        for path in (host, inside):
            if not isinstance(path, str) or not path.startswith("/"):
                raise PersondetError(f"{where}: {key}: {path!r} is not an absolute path")
    return tuple((os.path.normpath(h), os.path.normpath(c)) for h, c in pairs)


def _tls(value: Any, where: str) -> Tls | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - set(TLS_KEYS):
        raise PersondetError(f"{where}: tls must be a mapping of {', '.join(TLS_KEYS)}")
    tls = Tls(**{k: (os.path.expanduser(str(v)) if k != "verify" else bool(v)) for k, v in value.items()})
    for key in ("ca_cert", "client_cert", "client_key"):
        path = getattr(tls, key)
        if path and not os.path.isfile(path):
            raise PersondetError(f"{where}: tls {key}={path!r} does not exist")
    if bool(tls.client_cert) != bool(tls.client_key):
        raise PersondetError(f"{where}: tls client_cert and client_key go together")
    return tls


def connect(server: Server, timeout_s: int = 30):
    """A ``docker.DockerClient`` for the server, after a ping; a one-line PersondetError naming the host
    when its engine does not answer. ``ssh://`` uses the system ssh client (its config and agent)."""
    import docker

    kwargs: dict[str, Any] = {"base_url": server.url, "timeout": timeout_s}
    if server.url.startswith("ssh://"):
        kwargs["use_ssh_client"] = True
    if server.tls is not None:
        cert = (server.tls.client_cert, server.tls.client_key) if server.tls.client_cert else None
        kwargs["tls"] = docker.tls.TLSConfig(client_cert=cert, ca_cert=server.tls.ca_cert or None,
                                             verify=server.tls.verify)
    try:
        client = _tls_client(kwargs) if "tls" in kwargs else docker.DockerClient(**kwargs)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - DockerException, requests and ssh errors all mean "away"
        raise PersondetError(f"server {server.name} ({server.url}): the Docker Engine does not answer: "
                             f"{' '.join(str(exc).split())[:240]}") from None
    client.api.timeout = None  # a training streams logs for hours
    return client


def _tls_client(kwargs: dict[str, Any]):
    """A client that verifies with the server's own CA even when REQUESTS_CA_BUNDLE is set (requests lets
    that variable replace a session's CA: psf/requests#3829), so it ignores the environment's settings."""
    import docker

    probe = docker.DockerClient(**kwargs, version="1.24")  # an explicit version: no request yet
    probe.api.trust_env = False
    version = probe.version(api_version=False)["ApiVersion"]
    probe.close()
    client = docker.DockerClient(**kwargs, version=version)
    client.api.trust_env = False
    return client


def device_requests(server: Server) -> list | None:
    """The Engine API device request for the server's GPUs (None for a CPU server)."""
    import docker

    if not server.gpu_count:
        return None
    which = {"device_ids": list(server.gpus)} if isinstance(server.gpus, tuple) else {"count": server.gpus}
    return [docker.types.DeviceRequest(capabilities=[["gpu"]], **which)]


def check_gpus(server: Server, client, image: str) -> None:
    """With gpus > 0: a probe container with the device request must see that many CUDA devices."""
    import docker

    if not server.gpu_count:
        return
    runtimes = client.info().get("Runtimes") or {}
    hint = "" if "nvidia" in runtimes else \
        " (no nvidia runtime in `docker info`: install the NVIDIA Container Toolkit)"
    probe = None
    try:
        probe = client.containers.create(image, ["python", "-c", GPU_PROBE], network_mode="host",
                                         device_requests=device_requests(server),
                                         labels={LAUNCH_LABEL: "gpu-probe"})
        probe.start()
        code = probe.wait(timeout=300).get("StatusCode")
        out = probe.logs().decode(errors="replace")
        if code != 0:
            raise PersondetError(f"server {server.name}: the GPU probe failed ({' '.join(out.split())[-200:]})")
    except docker.errors.DockerException as exc:
        detail = " ".join(str(getattr(exc, "explanation", None) or exc).split())[:200]
        raise PersondetError(f"server {server.name}: the engine cannot give gpus={server.gpu_count}{hint}: "
                             f"{detail}") from None
    finally:
        if probe is not None:
            with contextlib.suppress(Exception):
                probe.remove(force=True)
    seen = int(out.split()[-1])
    if seen < server.gpu_count:
        raise PersondetError(f"server {server.name}: gpus={server.gpu_count} but the container sees {seen}")


def credentials_archive(user: str, password: str) -> bytes:
    """A tar holding ``.mlflow/credentials`` (mode 600) for ``put_archive`` into the container's /root."""
    user, password = user.replace("%", "%%"), password.replace("%", "%%")  # configparser interpolates %
    data = f"[mlflow]\nmlflow_tracking_username = {user}\nmlflow_tracking_password = {password}\n".encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        folder = tarfile.TarInfo(".mlflow")
        folder.type, folder.mode = tarfile.DIRTYPE, 0o700
        tar.addfile(folder)
        member = tarfile.TarInfo(".mlflow/credentials")
        member.size, member.mode = len(data), 0o600
        tar.addfile(member, io.BytesIO(data))
    return buffer.getvalue()
