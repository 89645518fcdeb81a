"""`launch` without a container engine: the servers file, its one-line errors, the settings each training
gets, the credentials file, an engine that does not answer. The containers themselves:
tests/test_launch_containers.py."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from native_services import free_port
from persondet.config import LaunchConfig
from persondet.errors import PersondetError
from persondet.launch import Launcher, launch
from persondet.servers import Server, connect, credentials_archive, read_servers

ROOT = Path(__file__).resolve().parents[1]


def _write(path: Path, document) -> str:
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document))
    return str(path)


GOOD = {"servers": [
    {"name": "v100x4", "url": "ssh://ml@gpu-v100", "gpus": 4, "data_roots": ["/data/coco", "/data/cuhk"]},
    {"name": "a100x8", "url": "tcp://gpu-a100x8:2376", "gpus": [0, 1, 2, 3, 4, 5, 6, 7],
     "data_roots": {"/mnt/datasets/coco": "/data/coco"}, "tracking_uri": "http://10.0.0.5:5000",
     "address": "10.0.0.8", "shm_size": "32g", "environment": {"NCCL_SOCKET_IFNAME": "ib0"}},
    {"name": "laptop", "url": "unix:///var/run/docker.sock"},
]}


def test_a_servers_file_is_read_with_defaults_and_both_mount_forms(tmp_path):
    v100, a100, laptop = read_servers(_write(tmp_path / "servers.yml", GOOD))
    assert (v100.gpu_count, v100.data_roots, v100.node_address) == (
        4, (("/data/coco", "/data/coco"), ("/data/cuhk", "/data/cuhk")), "gpu-v100")
    assert a100.gpus == tuple(str(i) for i in range(8)) and a100.gpu_count == 8
    assert a100.data_roots == (("/mnt/datasets/coco", "/data/coco"),)
    assert (a100.node_address, a100.shm_size, a100.environment) == ("10.0.0.8", "32g", (("NCCL_SOCKET_IFNAME", "ib0"),))
    assert (laptop.gpu_count, laptop.node_address, laptop.shm_size, laptop.tls) == (0, "127.0.0.1", "8g", None)


@pytest.mark.parametrize("document, message", [
    ("servers: [", "not valid YAML"),
    ({"hosts": []}, "expected a mapping with a non-empty 'servers' list"),
    ({"servers": [{"name": "a", "url": "ssh://h", "gpu": 4}]}, "server 1 (a): unknown key 'gpu'"),
    ({"servers": [{"name": "a b", "url": "ssh://h"}]}, "server 1: name='a b' must be"),
    ({"servers": [{"name": "a", "url": "gpu-a100"}]}, "server 1 (a): url='gpu-a100' must start with one of"),
    ({"servers": [{"name": "a", "url": "ssh://h", "gpus": -1}]}, "gpus=-1 must be a number >= 0"),
    ({"servers": [{"name": "a", "url": "ssh://h", "data_roots": ["data/coco"]}]},
     "data_roots: 'data/coco' is not an absolute path"),
    ({"servers": [{"name": "a", "url": "ssh://h", "shm_size": "lots"}]}, "shm_size='lots' must be a size"),
    ({"servers": [{"name": "a", "url": "tcp://h:2376", "tls": {"ca_cert": "/nonexistent/ca.pem"}}]},
     "tls ca_cert='/nonexistent/ca.pem' does not exist"),
    ({"servers": [{"name": "a", "url": "ssh://h"}, {"name": "a", "url": "ssh://g"}]}, "'a' is used twice"),
])
def test_a_bad_servers_file_is_one_line_naming_the_file_and_the_server(tmp_path, document, message):
    path = _write(tmp_path / "servers.yml", document)
    with pytest.raises(PersondetError) as raised:
        read_servers(path)
    text = str(raised.value)
    assert message in text and str(path) in text and "\n" not in text


def test_the_entry_point_says_what_is_wrong_in_one_line_and_exits_2(tmp_path):
    missing = tmp_path / "nope.yml"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    for args, message in ([["--servers", str(missing), "--data", "x"], f"servers='{missing}': cannot read"],
                          [["--data", "x", "--train-options", "amp=fast"], "train_options='amp=fast': amp="],
                          [["--servers", _write(tmp_path / "s.yml", GOOD), "--data", "x"],
                           "launch needs a tracking server the hosts can reach"]):
        result = subprocess.run([sys.executable, str(ROOT / "entrypoints" / "launch.py"), *args], env=env,
                                cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("persondet: error: ") and message in lines[0], lines
    assert not (tmp_path / "mlflow.db").exists()  # nothing was logged anywhere


def test_multi_node_needs_the_same_gpus_on_every_server(tmp_path):
    config = LaunchConfig.from_strings({"servers": _write(tmp_path / "s.yml", GOOD), "data": "x",
                                        "multi_node": "true"})
    with pytest.raises(PersondetError, match="multi_node needs the same gpus on every server "
                                             r"\(v100x4=4, a100x8=8, laptop=0\)"):
        launch(config)


def test_each_server_and_batch_size_is_one_training_and_multi_node_joins_the_servers(tmp_path):
    servers = read_servers(_write(tmp_path / "s.yml", GOOD))[:2]
    values = {"servers": "s.yml", "data": "0123456789abcdef0123456789abcdef", "batch_sizes": "8,16",
              "train_options": "amp=bf16,workers=8", "max_iters_per_epoch": "50"}
    single = Launcher(LaunchConfig.from_strings(values), servers, "http://127.0.0.1:5000", None)
    jobs = single.plan()
    assert [(j.label, j.batch_size) for j in jobs] == [("v100x4", 8), ("v100x4", 16), ("a100x8", 8), ("a100x8", 16)]
    assert single.train_settings(jobs[3]) == {
        "data": values["data"], "batch_size": "16", "model": "auto", "epochs": "12", "amp": "bf16", "workers": "8",
        "nproc": "8", "nnodes": "1", "max_iters_per_epoch": "50"}
    assert single.digest == f"prepare:{values['data']}"  # what `main` tags its trainings with
    multi = Launcher(LaunchConfig.from_strings({**values, "multi_node": "true"}), servers, "http://x", None)
    assert [(j.label, j.batch_size) for j in multi.plan()] == [("v100x4+a100x8", 8), ("v100x4+a100x8", 16)]
    assert multi.train_settings(multi.plan()[0])["nnodes"] == "2"


def test_the_credentials_file_put_into_a_container_is_what_mlflow_reads(tmp_path, monkeypatch):
    from mlflow.utils.credentials import read_mlflow_creds

    archive = credentials_archive("alice", "p%ss w0rd")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        modes = {m.name: m.mode for m in tar.getmembers()}
        tar.extractall(tmp_path, filter="data")
    assert modes == {".mlflow": 0o700, ".mlflow/credentials": 0o600}
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    assert tuple(read_mlflow_creds()) == ("alice", "p%ss w0rd")


def test_an_engine_that_does_not_answer_is_one_line_naming_the_host():
    server = Server(name="away", url=f"tcp://127.0.0.1:{free_port()}")
    with pytest.raises(PersondetError) as raised:
        connect(server, timeout_s=5)
    text = str(raised.value)
    assert text.startswith(f"server away ({server.url}): the Docker Engine does not answer") and "\n" not in text


def test_report_speed_table_shows_launch_runs_by_server(tmp_path):
    import mlflow

    from persondet.report import speed_table

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.create_experiment("speed")
    for server, t in (("v100x4", 1.4), ("a100x4", 1.0), (None, 2.0)):
        run = client.create_run(experiment, tags={"persondet.server": server} if server else {}).info.run_id
        for key, value in {"gpu_type": "NVIDIA A100-SXM4-40GB", "gpu_count": "4", "batch_size": "8"}.items():
            client.log_param(run, key, value)
        client.log_metric(run, "time_per_iter_s", t)
    runs = client.search_runs([experiment])
    assert speed_table(runs) == {("v100x4: NVIDIA A100-SXM4-40GB x4", 8): 1.4,
                                 ("a100x4: NVIDIA A100-SXM4-40GB x4", 8): 1.0, ("NVIDIA A100-SXM4-40GB x4", 8): 2.0}
