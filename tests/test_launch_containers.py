"""`launch` on a real Docker Engine: the local dockerd under several server names, CPU, tiny trainings,
reporting to the PostgreSQL-backed MLflow server with basic auth (tests/conftest.py) over loopback.

What a user relies on: every (server x batch size) run lands in the tracking server tagged with its server
(one engine reached through its unix socket, the other through tcp:// with TLS client certificates);
a host that does not answer and a training that fails are reported while the others finish; a second launch
re-uses finished runs; Ctrl-C removes every container it started; no password in any container's
configuration; one training over two hosts as torchrun nodes is one run with identical replicas.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from native_services import free_port
from training_fixtures import make_prepared_set

# the first test to ask for an image waits for its build (minutes when the cache is cold)
pytestmark = [pytest.mark.timeout(2400), pytest.mark.containers, pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "entrypoints" / "launch.py"
TINY = "min_size=96,max_size=128,workers=0,register=false"
LAUNCH_LABEL = "persondet.launch"
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # several tiny trainings share 2 cores


def _servers_file(path: Path, servers: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"servers": servers}))
    return path


def _launch_command(servers: Path, data: Path, experiment: str, *extra: str) -> list[str]:
    return [sys.executable, str(SCRIPT), "--servers", str(servers), "--data", str(data), "--batch-sizes", "2",
            "--epochs", "1", "--max-iters-per-epoch", "2", "--train-options", TINY, "--experiment", experiment,
            "--image-source", "present", *extra]


def _env(tracking_server) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return {**env, **tracking_server.client_env(), "PYTHONPATH": str(ROOT)}


def _client(tracking_server, monkeypatch):
    from mlflow import MlflowClient

    for name, value in tracking_server.client_env().items():
        monkeypatch.setenv(name, value)
    return MlflowClient(tracking_server.uri)


def _train_runs(client, experiment: str):
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], "tags.`persondet.entry_point` = 'train'")
    return {r.data.tags.get("persondet.server"): r for r in runs}


@pytest.fixture
def data(tmp_path) -> Path:
    return make_prepared_set(tmp_path / "data")


def test_launch_on_two_servers_reports_the_failing_ones_and_reuses_finished_runs(
        tmp_path, data, docker_engine, trainer_image, docker_base_image, wheelhouse_url, tracking_server,
        monkeypatch):
    local = {"url": docker_engine.base_url, "gpus": 0, "data_roots": [str(data.parent)], "environment": ONE_THREAD}
    tls = {"ca_cert": str(docker_engine.tls_dir / "ca.pem"), "client_cert": str(docker_engine.tls_dir / "cert.pem"),
           "client_key": str(docker_engine.tls_dir / "key.pem")}
    servers = _servers_file(tmp_path / "servers.yml", [
        {"name": "local-a", **local}, {"name": "local-b", **local, "url": docker_engine.tcp_url, "tls": tls},
        {"name": "away", "url": f"tcp://127.0.0.1:{free_port()}", "gpus": 0},
        {"name": "no-data", "url": docker_engine.base_url, "gpus": 0},  # the data is not mounted: train fails
        {"name": "no-gpu", **local, "gpus": 1},  # this engine has no GPU to give
    ])
    # image_source=build: the launcher builds docker/trainer.Dockerfile through the API (cached layers)
    build = ["--image-source", "build", "--image", trainer_image, "--base-image", docker_base_image,
             "--wheelhouse", wheelhouse_url]
    first = subprocess.run(_launch_command(servers, data, "launch-two", *build), env=_env(tracking_server),
                           capture_output=True, text=True, timeout=900)
    assert first.returncode == 2, first.stdout[-3000:] + first.stderr[-3000:]
    error = first.stderr.strip().splitlines()[-1]
    assert error.startswith("persondet: error: 3 of 5 trainings failed:")
    assert "away batch 2: server away (tcp://127.0.0.1:" in error and "the Docker Engine does not answer" in error
    assert "no-data batch 2: container exit status" in error
    assert "no-gpu batch 2: server no-gpu: the engine cannot give gpus=1" in error
    out = first.stdout
    assert "[local-a] " in out and "[local-b] " in out  # the containers' logs, prefixed
    assert "[no-data] persondet: error: data=" in out  # the failing training's own one-line error

    client = _client(tracking_server, monkeypatch)
    runs = _train_runs(client, "launch-two")
    assert set(runs) == {"local-a", "local-b", "no-data"}
    for name in ("local-a", "local-b"):
        run = runs[name]
        assert run.info.status == "FINISHED", name
        assert (run.data.params["gpu_count"], run.data.params["batch_size"], run.data.params["nproc"]) == (
            "0", "2", "1")
        assert run.data.tags["mlflow.project.entryPoint"] == "train"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [0, 1]
    assert runs["no-data"].info.status == "FAILED"

    from persondet.report import speed_table

    assert {label for label, _ in speed_table([runs["local-a"], runs["local-b"]])} == {
        "local-a: cpu | small 96/128px", "local-b: cpu | small 96/128px"}  # the servers side by side, one setup

    again = _servers_file(tmp_path / "again.yml", [
        {"name": "local-a", **local}, {"name": "local-b", **local, "url": docker_engine.tcp_url, "tls": tls}])
    second = subprocess.run(_launch_command(again, data, "launch-two"), env=_env(tracking_server),
                            capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    for name in ("local-a", "local-b"):
        assert f"[{name}] batch 2: re-using finished run {runs[name].info.run_id}" in second.stdout
    assert len(_train_runs(client, "launch-two")) == 3  # nothing ran again


def test_the_engine_over_tcp_with_tls_needs_the_client_certificate(docker_engine):
    from persondet.errors import PersondetError
    from persondet.servers import Server, Tls, connect

    files = {name: str(docker_engine.tls_dir / f"{name}.pem") for name in ("ca", "cert", "key")}
    good = Tls(ca_cert=files["ca"], client_cert=files["cert"], client_key=files["key"])
    assert connect(Server(name="tls", url=docker_engine.tcp_url, tls=good)).ping()
    with pytest.raises(PersondetError, match=r"^server tls \(tcp://127.0.0.1:\d+\): the Docker Engine does not"):
        connect(Server(name="tls", url=docker_engine.tcp_url, tls=Tls(ca_cert=files["ca"])))


def test_ctrl_c_removes_every_container_and_no_password_is_in_their_configuration(
        tmp_path, data, docker_engine, docker_client, trainer_image, tracking_server, monkeypatch):
    local = {"url": docker_engine.base_url, "gpus": 0, "data_roots": [str(data.parent)], "environment": ONE_THREAD}
    servers = _servers_file(tmp_path / "servers.yml", [{"name": "slow-a", **local}, {"name": "slow-b", **local}])
    command = _launch_command(servers, data, "launch-interrupt", "--image", trainer_image)
    command[command.index("--epochs") + 1] = "500"
    launcher = subprocess.Popen(command, env=_env(tracking_server), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            running = docker_client.containers.list(filters={"label": LAUNCH_LABEL})
            if len(running) == 2:
                break
            assert launcher.poll() is None and time.monotonic() < deadline, launcher.communicate()
            time.sleep(0.5)
        password = tracking_server.password
        for container in running:
            config = container.attrs["Config"]
            assert password not in " ".join(config["Env"] + config["Cmd"]), "a password in the container config"
            assert any(e.startswith("MLFLOW_TRACKING_URI=") for e in config["Env"])
            assert container.attrs["HostConfig"]["NetworkMode"] == "host"
            assert container.attrs["HostConfig"]["Binds"] == [f"{data.parent}:{data.parent}:ro"]
        launcher.send_signal(signal.SIGINT)
        out, err = launcher.communicate(timeout=300)  # a loaded engine can take a while to kill
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 130, out[-2000:] + err[-2000:]
    assert "removed 2 container(s)" in err
    assert docker_client.containers.list(all=True, filters={"label": LAUNCH_LABEL}) == []
    runs = _train_runs(_client(tracking_server, monkeypatch), "launch-interrupt")
    assert {r.info.status for r in runs.values()} == {"KILLED"}


def test_one_training_over_two_hosts_as_torchrun_nodes_is_one_run_with_identical_replicas(
        tmp_path, data, docker_engine, trainer_image, tracking_server, monkeypatch):
    digests = tmp_path / "digests"
    digests.mkdir()
    node = {"url": docker_engine.base_url, "gpus": 0, "data_roots": [str(data.parent)],
            "writable_mounts": {str(digests): "/digests"},
            "environment": {"PERSONDET_WEIGHTS_DIGEST_DIR": "/digests", **ONE_THREAD}}
    servers = _servers_file(tmp_path / "servers.yml", [{"name": "node-a", **node}, {"name": "node-b", **node}])
    command = _launch_command(servers, data, "launch-nodes", "--image", trainer_image, "--multi-node", "true",
                              "--master-port", str(free_port()))
    command[command.index("--max-iters-per-epoch") + 1] = "auto"
    result = subprocess.run(command, env=_env(tracking_server), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "[node-a node 0] " in result.stdout and "[node-b node 1] " in result.stdout

    client = _client(tracking_server, monkeypatch)
    runs = _train_runs(client, "launch-nodes")
    assert list(runs) == ["node-a+node-b"]  # one run for the one training
    run = runs["node-a+node-b"]
    p = run.data.params
    assert run.info.status == "FINISHED"
    assert (p["world_size"], p["nnodes"], p["nproc"], p["gpu_count"], p["batch_size_per_device"]) == (
        "2", "2", "1", "0", "1")
    assert (digests / "rank0.sha256").read_text() == (digests / "rank1.sha256").read_text()
    # 8 images, 1 per rank per step: 4 steps, each logged once (by global rank 0 only)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [0, 1, 2, 3]
