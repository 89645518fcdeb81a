"""Container images through the Docker Engine API (the ``docker`` SDK): build one of docker/*.Dockerfile,
or load a saved image (``docker save`` tar) onto an engine that cannot reach a registry.

Used by ``launch`` (the trainer image on each Docker host) and by the container tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

from persondet.errors import PersondetError

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAINER_DOCKERFILE = "docker/trainer.Dockerfile"
SERVER_DOCKERFILE = "docker/server.Dockerfile"

LogFn = Callable[[str], None]


def _quiet(_line: str) -> None:
    pass


def build_image(client, dockerfile: str, tag: str, buildargs: Mapping[str, str] | None = None,
                network_mode: str | None = None, context: Path = REPO_ROOT, log: LogFn = _quiet,
                where: str = "docker") -> str:
    """Build ``dockerfile`` (relative to ``context``) as ``tag`` on the engine of ``client``; returns the
    image id. Every build-output line goes to ``log``; a failed step raises a one-line PersondetError
    naming ``where`` (the host), the Dockerfile and the step's last output line."""
    import docker

    last: list[str] = []
    image_id = None
    try:
        for chunk in client.api.build(path=str(context), dockerfile=dockerfile, tag=tag,
                                      buildargs=dict(buildargs or {}), network_mode=network_mode,
                                      rm=True, forcerm=True, decode=True):
            text = chunk.get("stream") or chunk.get("status") or ""
            for line in text.splitlines():
                if line.strip():
                    last = (last + [line.strip()])[-5:]
                    log(line)
            if "error" in chunk:
                detail = " ".join(str(chunk["error"]).split())
                raise PersondetError(f"{where}: building {tag} from {dockerfile} failed: {detail[:400]}")
            image_id = (chunk.get("aux") or {}).get("ID", image_id)
    except docker.errors.APIError as exc:
        raise PersondetError(f"{where}: building {tag} from {dockerfile} failed: "
                             f"{' '.join(str(exc.explanation or exc).split())[:400]}") from None
    if image_id is None:
        raise PersondetError(f"{where}: building {tag} from {dockerfile} gave no image "
                             f"(last output: {' | '.join(last)[:300]})")
    return image_id


def load_image(client, tar_path: str, where: str = "docker") -> list[str]:
    """Load a ``docker save`` archive onto the engine of ``client``; returns the tags it held."""
    import docker

    path = Path(tar_path).expanduser()
    if not path.is_file():
        raise PersondetError(f"{where}: image archive {path} does not exist")
    try:
        with open(path, "rb") as stream:
            images = client.images.load(stream)
    except docker.errors.APIError as exc:
        raise PersondetError(f"{where}: loading {path} failed: "
                             f"{' '.join(str(exc.explanation or exc).split())[:300]}") from None
    return [tag for image in images for tag in image.tags]


def has_image(client, tag: str) -> bool:
    """Whether the engine of ``client`` holds an image named ``tag``."""
    import docker

    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True
