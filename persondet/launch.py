"""The ``launch`` entry point: ``train`` for every (server x batch size) in containers on Docker hosts.

Per server, through the Docker Engine API: connect, make sure the trainer image is there, check the GPUs,
then run ``python entrypoints/train.py ...`` (what a user types) in a container with the GPUs reserved,
the data roots mounted read-only and host networking. The launcher creates each training's MLflow run
(tagged ``persondet.server``, input digest, git commit: a second launch re-uses it as ``main`` does); the
tracking password goes into the container as ``~/.mlflow/credentials`` before it starts, never into an
image, a parameter, a command line or a variable. ``multi_node``: one training over all servers as
torchrun nodes. docs/LAUNCH.md.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

from persondet.cli import dashed
from persondet.config import ConfigError, LaunchConfig, TrainConfig, parse_train_options
from persondet.errors import PersondetError
from persondet.pipeline import INPUT_DIGEST_TAG, Runner, git_commit
from persondet.servers import (LAUNCH_LABEL, SERVER_TAG, Server, check_gpus, connect, credentials_archive,
                               device_requests, read_servers)
from persondet.tracking import RunHandle, create_run, open_run
from persondet.tracking.search import get_run
from persondet.tracking.store import tracking_uri

# Passed on to the containers when set here (the token is visible to `docker inspect`: docs/LAUNCH.md)
PASSED_ON = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
             "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER",
             "MLFLOW_HTTP_REQUEST_TIMEOUT")
PROGRESS_EVERY_S = 10.0  # a progress bar's carriage-return updates are shown at most this often


@dataclass
class Job:
    """One training: on one server, or (multi-node) over several, the first being the master."""
    servers: tuple[Server, ...]
    batch_size: int
    status: str = "PENDING"  # FINISHED, FAILED, KILLED, RE-USED
    run_id: str | None = None
    detail: str = ""
    containers: list = field(default_factory=list)

    @property
    def label(self) -> str:
        return "+".join(s.name for s in self.servers)


class Launcher:
    """Runs the jobs of one launch; ``stop()`` (Ctrl-C) removes every container it started."""

    def __init__(self, config: LaunchConfig, servers: list[Server], tracking_uri: str, launch_run: str | None):
        self.config = config
        self.servers = servers
        self.tracking_uri = tracking_uri
        self.launch_run = launch_run
        self.launch_id = uuid.uuid4().hex[:12]
        self.train_options = parse_train_options(config.train_options)
        self.runner = Runner(config.experiment, git_commit())
        self.digest = _input_digest(config.data)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.started: list = []
        self.clients: dict[str, object] = {}
        self.host_errors: dict[str, str] = {}
        self._ready: dict[str, str | None] = {}  # engine URL -> error preparing it (None: ready)
        self._url_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)

    def say(self, prefix: str, line: str) -> None:
        with self.lock:
            print(f"[{prefix}] {line}", flush=True)

    def plan(self) -> list[Job]:
        sizes = self.config.batch_size_list()
        if self.config.multi_node:
            return [Job(tuple(self.servers), b) for b in sizes]
        return [Job((s,), b) for s in self.servers for b in sizes]

    def run(self, jobs: list[Job]) -> list[Job]:
        """Prepare the hosts and run the jobs (hosts in parallel when asked); Ctrl-C stops everything."""
        if self.config.multi_node:
            lanes = [jobs]  # every job needs every host: one after another
        else:
            by_server: dict[str, list[Job]] = defaultdict(list)
            for job in jobs:
                by_server[job.label].append(job)
            lanes = list(by_server.values())
        threads = [threading.Thread(target=self._lane, args=(lane,), daemon=True) for lane in lanes]
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _interrupt) if in_main else None  # SIGTERM acts as Ctrl-C
        try:
            for thread in threads:
                thread.start()
                if not self.config.parallel:
                    _join(thread)
            for thread in threads:
                _join(thread)
        except KeyboardInterrupt:
            self.stop(jobs)
            raise
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, previous)
        return jobs

    def _lane(self, jobs: list[Job]) -> None:
        for job in jobs:
            if self.stopping.is_set():
                return
            try:
                for server in job.servers:
                    self._prepare_host(server)
                self._run_job(job)
            except PersondetError as exc:
                job.status, job.detail = "FAILED", " ".join(str(exc).split())
                self.say(job.label, f"error: {job.detail}")
            except Exception as exc:  # noqa: BLE001 - one host's surprise must not stop the others
                job.status, job.detail = "FAILED", f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
                self.say(job.label, f"error: {job.detail}")
            _remove(job.containers)
            if job.status == "FAILED" and job.run_id:
                RunHandle(job.run_id).end_if_running("KILLED" if self.stopping.is_set() else "FAILED")

    # --- hosts ------------------------------------------------------------------------------------------

    def _prepare_host(self, server: Server) -> None:
        """Connect, make sure the image is there (once per engine), check the GPUs; raises for this host."""
        if server.name in self.host_errors:
            raise PersondetError(self.host_errors[server.name])
        if server.name in self.clients:
            return
        try:
            client = connect(server)
            with self.lock:
                url_lock = self._url_locks[server.url]
            with url_lock:
                if server.url not in self._ready:
                    try:
                        self._ensure_image(server, client)
                        self._ready[server.url] = None
                    except PersondetError as exc:
                        self._ready[server.url] = str(exc)
                if self._ready[server.url]:
                    raise PersondetError(self._ready[server.url])
            check_gpus(server, client, self.config.image)
        except PersondetError as exc:
            self.host_errors[server.name] = str(exc)
            raise
        self.clients[server.name] = client

    def _ensure_image(self, server: Server, client) -> None:
        from persondet.images import TRAINER_DOCKERFILE, build_image, has_image, load_image

        where, image, source = f"server {server.name}", self.config.image, self.config.image_source
        if source == "build":
            args = {"BASE_IMAGE": self.config.base_image} if self.config.base_image else {}
            if self.config.wheelhouse:
                args.update({"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": self.config.wheelhouse})
            self.say(server.name, f"building {image} from {TRAINER_DOCKERFILE}")
            started = time.monotonic()
            build_image(client, TRAINER_DOCKERFILE, image, args, network_mode="host", where=where,
                        log=lambda line: self.say(server.name, line) if line.startswith("Step ") else None)
            self.say(server.name, f"image {image} ready ({time.monotonic() - started:.0f} s)")
        elif source != "present":
            load_image(client, source, where=where)
        if not has_image(client, image):
            raise PersondetError(f"{where}: image {image} is not there (image_source={source})")

    # --- one training -----------------------------------------------------------------------------------

    def train_settings(self, job: Job) -> dict[str, str]:
        """The train settings every node of the job gets (the reuse check compares these)."""
        c = self.config
        settings = {"data": c.data, "batch_size": str(job.batch_size), "model": c.model,
                    "epochs": c.raw.get("epochs", str(c.epochs)), **self.train_options,
                    "nproc": str(max(job.servers[0].gpu_count, 1)), "nnodes": str(len(job.servers))}
        if c.max_iters_per_epoch is not None:
            settings["max_iters_per_epoch"] = str(c.max_iters_per_epoch)
        return settings

    def _run_job(self, job: Job) -> None:
        settings = self.train_settings(job)
        nodes = []
        for rank, server in enumerate(job.servers):
            node = {**settings, "node_rank": str(rank), "master_addr": job.servers[0].node_address,
                    "master_port": str(self.config.master_port if len(job.servers) > 1 else 0)}
            try:
                TrainConfig.from_strings(node)
            except ConfigError as exc:
                raise PersondetError(f"server {server.name}: {exc}") from None
            nodes.append(node)
        found = self.runner.find_finished("train", settings, self.digest, {SERVER_TAG: job.label})
        if found is not None:
            job.status, job.run_id = "RE-USED", found.info.run_id
            self.say(job.label, f"batch {job.batch_size}: re-using finished run {job.run_id}")
            return
        job.run_id = create_run("train", run_name=f"train-{job.label}-bs{job.batch_size}",
                                tags=self._run_tags(job)).run_id
        self.say(job.label, f"batch {job.batch_size}: run {job.run_id}, {len(nodes)} node(s)")
        for server, node in zip(job.servers, nodes):  # appended one by one: a failure removes those started
            job.containers.append(self._start(server, node, job, job.run_id if node["node_rank"] == "0" else None))
        codes = self._wait(job)
        if self.stopping.is_set():
            job.status = "KILLED"
            return
        run = get_run(job.run_id)
        if all(code == 0 for code in codes) and run is not None and run.info.status == "FINISHED":
            job.status = "FINISHED"
        else:
            job.status = "FAILED"
            job.detail = "container exit status " + ", ".join(str(c) for c in codes)
            RunHandle(job.run_id).end_if_running("FAILED")
        self.say(job.label, f"batch {job.batch_size}: {job.status} ({job.detail or 'run ' + job.run_id})")

    def _run_tags(self, job: Job) -> dict[str, str]:
        tags = {SERVER_TAG: job.label, INPUT_DIGEST_TAG: self.digest, "mlflow.project.entryPoint": "train",
                "mlflow.source.type": "PROJECT", "persondet.launch_id": self.launch_id}
        if self.runner.commit:
            tags["mlflow.source.git.commit"] = self.runner.commit
        if self.launch_run:
            tags["persondet.launch_run"] = self.launch_run
        return tags

    def _start(self, server: Server, node: dict[str, str], job: Job, run_id: str | None):
        """Create the node's container, put the tracking credentials in it, start it, stream its log."""
        client = self.clients[server.name]
        command = ["python", "entrypoints/train.py"]
        for key, value in node.items():
            command += [dashed(key), value]
        volumes = {host: {"bind": inside, "mode": "ro"} for host, inside in server.data_roots}
        volumes.update({host: {"bind": inside, "mode": "rw"} for host, inside in server.writable_mounts})
        environment, credentials = self._environment(server, run_id)
        name = f"persondet-train-{server.name}-bs{job.batch_size}-{self.launch_id}-n{node['node_rank']}"
        container = client.containers.create(
            self.config.image, command, name=name, environment=environment, network_mode="host",
            shm_size=server.shm_size, volumes=volumes, device_requests=device_requests(server), init=True,
            labels={LAUNCH_LABEL: self.launch_id, SERVER_TAG: server.name, "persondet.run_id": job.run_id or ""})
        with self.lock:
            self.started.append(container)
        if self.stopping.is_set():
            raise PersondetError("stopped")
        if credentials:
            container.put_archive("/root", credentials)
        container.start()
        prefix = server.name if len(job.servers) == 1 else f"{server.name} node {node['node_rank']}"
        self.say(prefix, f"container {name} started")
        thread = threading.Thread(target=self._stream, args=(container, prefix), daemon=True)
        thread.start()
        container.log_thread = thread
        return container

    def _environment(self, server: Server, run_id: str | None) -> tuple[dict[str, str], bytes | None]:
        env = {"MLFLOW_TRACKING_URI": server.tracking_uri or self.tracking_uri,
               "MLFLOW_EXPERIMENT_NAME": self.config.experiment, "PYTHONUNBUFFERED": "1"}
        env.update({name: os.environ[name] for name in PASSED_ON if os.environ.get(name)})
        if run_id:
            env["MLFLOW_RUN_ID"] = run_id
        env.update(dict(server.environment))
        user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
        if not (user or password):
            return env, None
        return env, credentials_archive(user or "", password or "")

    def _stream(self, container, prefix: str) -> None:
        """The container's output, line by line, with ``[prefix]``; progress bars at most every 10 s."""
        buffer, shown = b"", 0.0
        try:
            for chunk in container.logs(stream=True, follow=True):
                *lines, buffer = (buffer + chunk).split(b"\n")
                for raw in lines:  # a progress bar's last state only
                    text = raw.decode(errors="replace").rstrip("\r").rsplit("\r", 1)[-1].rstrip()
                    if text:
                        self.say(prefix, text)
                if b"\r" in buffer and time.monotonic() - shown > PROGRESS_EVERY_S:
                    shown = time.monotonic()
                    self.say(prefix, buffer.decode(errors="replace").rstrip("\r").rsplit("\r", 1)[-1])
        except Exception:  # noqa: BLE001 - the container was removed (Ctrl-C): its log ends here
            pass
        if buffer.strip():
            self.say(prefix, buffer.decode(errors="replace").rstrip("\r").rsplit("\r", 1)[-1])

    def _wait(self, job: Job) -> list[int]:
        """Exit statuses of the job's containers, which are then removed. When one node fails, the others
        are stopped (they would wait for it until torch.distributed's timeout)."""
        codes: dict[int, int] = {}
        while len(codes) < len(job.containers) and not self.stopping.is_set():
            for i, container in enumerate(job.containers):
                if i in codes:
                    continue
                try:
                    codes[i] = int(container.wait(timeout=2).get("StatusCode", -1))
                except Exception:  # noqa: BLE001 - still running (read timeout), or removed by stop()
                    if self.stopping.is_set():
                        break
                    continue
                if codes[i] != 0:
                    for other in job.containers:
                        _quietly(other.kill)
        for container in job.containers:
            container.log_thread.join(timeout=30)
        _remove(job.containers)
        return [codes.get(i, -1) for i in range(len(job.containers))]

    def stop(self, jobs: list[Job]) -> None:
        """Ctrl-C: remove every container this launch started; their runs end KILLED."""
        self.stopping.set()
        with self.lock:
            started = list(self.started)
        _remove(started)
        for job in jobs:
            if job.run_id and job.status in ("PENDING", "KILLED"):  # KILLED: its lane saw the stop first
                job.status = "KILLED"
                _quietly(lambda: RunHandle(job.run_id).end_if_running("KILLED"))
        print(f"persondet launch: interrupted; removed {len(started)} container(s)", file=sys.stderr, flush=True)


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def _join(thread: threading.Thread) -> None:
    while thread.is_alive():
        thread.join(timeout=0.5)  # short waits: Ctrl-C reaches the main thread


def _quietly(action) -> None:
    try:
        action()
    except Exception:  # noqa: BLE001 - already gone
        pass


def _remove(containers) -> None:
    """Force-remove the containers side by side (each removal waits for its engine to kill the process)."""
    removals = [threading.Thread(target=_quietly, args=(lambda c=c: c.remove(force=True),), daemon=True)
                for c in containers]
    for thread in removals:
        thread.start()
    for thread in removals:
        thread.join()


def _input_digest(data: str) -> str:
    """A prepare run id -> ``prepare:<id>`` (what ``main`` tags its trainings with); a path as given
    (the file is on the hosts, not here)."""
    from persondet.data import RUN_ID

    return f"prepare:{data.strip()}" if RUN_ID.match(data.strip()) else f"data:{data}"


def launch(config: LaunchConfig) -> dict:
    """Run every (server x batch size) training of ``config`` on its Docker host; returns the jobs.
    Raises a one-line PersondetError naming the trainings that failed (after all others ran)."""
    servers = read_servers(config.servers)
    if config.multi_node and len({s.gpu_count for s in servers}) > 1:
        raise PersondetError(f"servers={config.servers!r}: multi_node needs the same gpus on every server "
                             f"({', '.join(f'{s.name}={s.gpu_count}' for s in servers)})")
    uri = tracking_uri()
    if not uri.startswith(("http://", "https://")):
        raise PersondetError(f"launch needs a tracking server the hosts can reach: MLFLOW_TRACKING_URI={uri!r} "
                             "is local to this machine; set it to the server's http(s):// URL (docs/SERVER.md)")
    os.environ["MLFLOW_EXPERIMENT_NAME"] = config.experiment
    start = time.time()
    with open_run("launch", run_name="launch") as run:
        run.log_params(config.to_params())
        run.log_artifact(os.path.expanduser(config.servers))
        launcher = Launcher(config, servers, uri, run.run_id)
        jobs = launcher.run(launcher.plan())
        summary = [{"server": j.label, "batch_size": j.batch_size, "status": j.status, "run_id": j.run_id,
                    "detail": j.detail} for j in jobs]
        counts = {s: sum(j.status == s for j in jobs) for s in ("FINISHED", "RE-USED", "FAILED")}
        run.log_metrics({"launch_time_s": time.time() - start, "trainings_run": counts["FINISHED"],
                         "trainings_reused": counts["RE-USED"], "trainings_failed": counts["FAILED"]})
        run.set_tags({"persondet.launch_runs": json.dumps(summary)[:5000]})
        for row in summary:
            print(f"persondet launch: {row['server']} batch {row['batch_size']}: {row['status']} "
                  f"{row['run_id'] or ''} {row['detail']}".rstrip(), flush=True)
        failed = [j for j in jobs if j.status != "FINISHED" and j.status != "RE-USED"]
        if failed:
            raise PersondetError(f"{len(failed)} of {len(jobs)} trainings failed: " + "; ".join(
                f"{j.label} batch {j.batch_size}: {j.detail or j.status}" for j in failed))
    return {"run_id": run.run_id, "jobs": jobs}
