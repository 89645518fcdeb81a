"""Benchmark: the cost of per-step MLflow tracking in the training loop, against a local MLflow server.

The small CPU model is trained by ``persondet.engine.train_one_epoch`` in three modes, interleaved in
rounds on the same batches: logging off (the anchor); logging as ``train`` does it (inside
``tracking.open_run(..., system_metrics=True)``, with the run handle's ``metric_logger()``: per-step
loss/lr buffered and sent as asynchronous batches, flushed at the end); and, for comparison, one
synchronous ``mlflow.log_metrics`` call per step.  The server is ``mlflow server`` on 127.0.0.1 with a
SQLite backend in a temporary directory, started and stopped by this script.
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

NAME = "tracking_overhead"
MODES = ("off", "persondet", "sync-per-step")
GOAL = 0.02


@contextmanager
def local_mlflow_server(directory: Path, timeout_s: float = 120.0):
    """``mlflow server`` on a free loopback port with a SQLite store; yields its URI."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow_bin) if mlflow_bin.exists() else "mlflow", "server",
               "--backend-store-uri", f"sqlite:///{directory}/mlflow.db",
               "--artifacts-destination", str(directory / "artifacts"),
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    directory.mkdir(parents=True, exist_ok=True)
    log = open(directory / "server.log", "w")
    # Its own session, so stopping it also stops the web server processes it starts.
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                from persondet.errors import PersondetError

                tail = " ".join((directory / "server.log").read_text().split()[-30:])
                raise PersondetError(f"the local mlflow server did not start on {uri}: {tail}")
            time.sleep(0.5)
        yield uri
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        log.close()


def main(argv=None) -> None:
    parser = _common.base_parser(NAME, __doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=15, help="training iterations per block (default 15)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of (off, persondet, sync) blocks")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.iters, args.rounds = 2, 1

    from persondet.errors import PersondetError

    for name in ("iters", "rounds", "batch_size", "threads"):
        if getattr(args, name) < 1:
            raise PersondetError(f"--{name.replace('_', '-')}={getattr(args, name)} must be >= 1")

    load_before = _common.load_average()
    with tempfile.TemporaryDirectory(prefix="persondet-bench-tracking-") as tmp:
        tmp = Path(tmp)
        json_path = _common.write_jpeg_set(tmp / "data", (args.iters + 1) * args.batch_size,
                                           [(320, 240), (240, 320), (400, 300)], persons_per_image=3)
        with local_mlflow_server(tmp / "server") as uri:
            os.environ["MLFLOW_TRACKING_URI"] = uri
            os.environ["MLFLOW_EXPERIMENT_NAME"] = "persondet-bench-tracking"
            per_iter, in_logging, flush_seconds = run_rounds(json_path, args)
    rows, ratios = [], {}
    anchor = statistics.median(per_iter["off"])
    for mode in MODES:
        # Per round, the ratio against that round's anchor block; the median over rounds is reported.
        ratios[mode] = statistics.median(on / off for on, off in zip(per_iter[mode], per_iter["off"]))
    labels = {"off": "logging off (anchor)",
              "persondet": "persondet `train` logging (open_run + MetricLogger: async batches)",
              "sync-per-step": "one synchronous `mlflow.log_metrics` per step (for comparison)"}
    for mode in MODES:
        overhead = ratios[mode] - 1.0
        inside = statistics.median(in_logging[mode]) if in_logging[mode] else 0.0
        share = inside / anchor
        verdict = "" if mode == "off" else ("meets the 2% goal" if share <= GOAL else "misses the 2% goal")
        rows.append([labels[mode], f"{statistics.median(per_iter[mode]) * 1000:.1f} ms",
                     f"{ratios[mode]:.3f}x ({overhead * 100:+.1f}%)",
                     "" if mode == "off" else f"{inside * 1000:.2f} ms = **{share * 100:.2f}%**", verdict])
    table = _common.markdown_table(
        ["mode", "time per iteration (median)", "end-to-end ratio to anchor",
         "training thread blocked in per-step logging calls, per iteration (share of the anchor's iteration)",
         "goal <= 2%"], rows)
    print(table)
    spread = max(per_iter["off"]) / min(per_iter["off"]) - 1
    method = (f"Small CPU model (`build_detector('small')`), batch {args.batch_size}, generated 320x240-class "
              f"JPEGs, `workers=0`, torch threads {args.threads}; `engine.train_one_epoch` for {args.iters} "
              f"iterations per block; {args.rounds} rounds, each running the three modes on the same batches "
              "(same epoch seed) in alternating order; a block's time includes the final flush of its "
              "metrics; overhead = median over rounds of (block time / the round's logging-off block time). "
              f"Tracking server: `mlflow server` on 127.0.0.1, SQLite backend, 1 worker.")
    notes = (f"Two measures. End to end: block times against the same round's logging-off block; the "
             f"logging-off blocks alone spread by {spread * 100:.1f}% (max/min) on this shared machine, so an "
             f"end-to-end difference inside that spread is noise. Blocked in logging: the time the training "
             f"thread spends inside the per-step logging calls, divided by the anchor's {anchor * 1000:.1f} ms per "
             f"iteration: precise, and the goal's verdict; it leaves out the CPU that the background sender and "
             f"the server take from other processes. persondet's synchronous flush at the end of each epoch "
             f"(in the block times above, over {args.iters} iterations) took "
             f"{statistics.median(flush_seconds) * 1000:.0f} ms (median): once per epoch, negligible over an "
             f"epoch of thousands of iterations.")
    _common.write_result(args.output, "Tracking overhead: per-step MLflow logging in the training loop",
                         method, table, notes=notes, load_before=load_before)
    print(f"wrote {args.output}")


def run_rounds(json_path: Path, args) -> tuple[dict[str, list[float]], dict[str, list[float]], list[float]]:
    import mlflow
    import torch

    from persondet import data, engine
    from persondet.model import build_detector
    from persondet.tracking import open_run
    from persondet.tracking.store import client

    torch.set_num_threads(args.threads)
    dataset, path = data.load_prepared(str(json_path))
    persons = data.PersonDataset(dataset, path.parent, train=True, decode="pil")
    loader = data.make_loader(persons, args.batch_size, workers=0)
    torch.manual_seed(0)
    model = build_detector("small")
    optimizer = engine.make_optimizer(model, 0.01)
    scheduler = engine.make_scheduler(optimizer, 1, len(loader), warmup_iters=0)
    device = torch.device("cpu")

    def block(epoch: int, log_step) -> float:
        data.set_epoch(loader, epoch)
        torch.manual_seed(epoch)
        started = time.perf_counter()
        engine.train_one_epoch(model, optimizer, loader, device, epoch, scheduler, max_iters=args.iters,
                               log_step=log_step, progress=False)
        return started

    # One untimed block first: allocator and kernel warm-up must not count against the first mode.
    block(0, None)
    per_iter: dict[str, list[float]] = {mode: [] for mode in MODES}
    in_logging: dict[str, list[float]] = {mode: [] for mode in MODES}  # seconds inside per-step calls
    flush_seconds: list[float] = []  # persondet's end-of-epoch synchronous flush

    def timed(log_step, mode: str):
        def wrapper(metrics, step):
            started = time.perf_counter()
            log_step(metrics, step)
            in_logging[mode][-1] += time.perf_counter() - started
        return wrapper

    for round_index in range(args.rounds):
        order = MODES if round_index % 2 == 0 else MODES[::-1]
        for mode in order:
            epoch = round_index + 1
            if mode == "off":
                started = block(epoch, None)
                per_iter[mode].append((time.perf_counter() - started) / args.iters)
                continue
            in_logging[mode].append(0.0)
            with open_run("train", run_name=f"bench-{mode}-{round_index}", system_metrics=True) as run:
                if mode == "persondet":
                    logger = run.metric_logger()
                    started = block(epoch, timed(logger.log, mode))
                    flushed = time.perf_counter()
                    logger.flush(synchronous=True)
                    flush_seconds.append(time.perf_counter() - flushed)
                else:
                    started = block(epoch, timed(lambda metrics, step: mlflow.log_metrics(
                        metrics, step=step, synchronous=True), mode))
                per_iter[mode].append((time.perf_counter() - started) / args.iters)
            in_logging[mode][-1] /= args.iters
            logged = client().get_metric_history(run.run_id, "loss")
            if len(logged) != args.iters:  # the logging under test must actually have happened
                from persondet.errors import PersondetError

                raise PersondetError(f"mode {mode}: {len(logged)} loss values in the run, expected {args.iters}")
        print(f"round {round_index + 1}/{args.rounds}: " + ", ".join(
            f"{m} {per_iter[m][-1] * 1000:.1f} ms/iter" for m in MODES), flush=True)
    return per_iter, in_logging, flush_seconds


if __name__ == "__main__":
    _common.run(main)
