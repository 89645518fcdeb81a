"""The container harness itself (tests/docker_engine.py): a real dockerd, host networking, the project images.

The images are docker/*.Dockerfile built through the Engine API on the locally made base image, installing
from the wheelhouse only; these tests show they hold what the launcher and compose rely on.
"""

from __future__ import annotations

import pytest

from docker_engine import run_to_end

# the first test to ask for an image waits for its build (minutes when the cache is cold)
pytestmark = [pytest.mark.timeout(2400), pytest.mark.containers, pytest.mark.slow]


def test_containers_use_host_networking_and_reach_a_loopback_service(docker_client, docker_base_image,
                                                                     wheelhouse_url):
    fetch = ("import urllib.request; "
             f"print(urllib.request.urlopen({wheelhouse_url!r}, timeout=10).read().decode().count('torch-2.14.1'))")
    code, logs, attrs = run_to_end(docker_client, docker_base_image, ["python", "-c", fetch], 120)
    assert code == 0, logs
    assert logs.split()[-1] == "2"  # the wheel's link and name: the host's loopback reached from inside
    assert attrs["HostConfig"]["NetworkMode"] == "host"


def test_no_bridge_network_is_set_up(docker_client):
    networks = {n.name: n.attrs.get("IPAM", {}).get("Config") for n in docker_client.networks.list()}
    assert "host" in networks
    assert not networks.get("bridge"), f"a bridge network with addresses exists: {networks}"


def test_trainer_image_runs_persondet_with_the_pinned_torch_and_keeps_no_build_args(docker_client,
                                                                                     trainer_image):
    probe = ("import torch, torchvision, mlflow, docker, persondet.training; "
             "print(torch.__version__.split('+')[0], torchvision.__version__.split('+')[0])")
    code, logs, _ = run_to_end(docker_client, trainer_image, ["python", "-c", probe], 300)
    assert code == 0, logs
    assert logs.split()[-2:] == ["2.14.1", "0.29.1"]
    image = docker_client.images.get(trainer_image)
    env = " ".join(image.attrs["Config"].get("Env") or [])
    assert "PIP_FIND_LINKS" not in env and "PIP_NO_INDEX" not in env and "MLFLOW_TRACKING" not in env
    assert image.attrs["Config"]["WorkingDir"] == "/workspace"


def test_server_image_has_mlflow_auth_and_the_postgres_driver(docker_client, server_image):
    probe = "import mlflow, psycopg2, persondet.server, mlflow.server.auth; print(mlflow.__version__)"
    code, logs, _ = run_to_end(docker_client, server_image, ["python", "-c", probe], 300)
    assert code == 0, logs
    assert docker_client.images.get(server_image).attrs["Config"]["User"] == "mlflow"


def test_an_image_archive_is_loaded_through_the_api(docker_client, docker_base_image, tmp_path):
    from persondet.images import has_image, load_image

    tag = "persondet-load-test:1"
    docker_client.images.get(docker_base_image).tag(tag)
    archive = tmp_path / "image.tar"
    with open(archive, "wb") as f:
        for chunk in docker_client.images.get(tag).save(named=True):
            f.write(chunk)
    docker_client.images.remove(tag)
    assert not has_image(docker_client, tag)
    try:
        assert tag in load_image(docker_client, str(archive))
        assert has_image(docker_client, tag)
    finally:
        docker_client.images.remove(tag)
