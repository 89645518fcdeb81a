"""Benchmark: authenticated requests per second of the shared tracking server (issue 10, point 17).

The server is the one tests/native_services.py starts (PostgreSQL from the machine's binaries, the start
script, basic-auth, the bootstrap's team member ``member`` with EDIT on the ``persondet`` experiment).
Several threads each log one metric per request (``MlflowClient.log_metric``, no client retries) to their
own run; every value is read back. The anchor is MLflow's default: every request re-runs the password
hash (``auth_cache_ttl_s=0``), measured with an eighth of the calls (it is slow; a rate needs no more);
persondet's setting caches a verified credential per worker for 60 s.
"""

from __future__ import annotations

import signal
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import _common  # noqa: E402

NAME = "auth_throughput"
GOAL_REQUESTS_PER_S = 50.0


def measure(postgres, team: dict, ttl_s: int, workers: int, clients: int, calls: int) -> dict:
    from native_services import TrackingServer, log_metric_load

    with tempfile.TemporaryDirectory(prefix="persondet-bench-server-") as workdir:
        server = TrackingServer(postgres, workdir, workers=workers, auth_cache_ttl_s=ttl_s)
        server.team = team  # one auth database for every row: the member keeps its first password
        server.start()
        try:
            return log_metric_load(server.uri, "member", server.team["member"], clients=clients, calls=calls)
        finally:
            server.kill()


def main(argv=None) -> None:
    from persondet.errors import PersondetError

    parser = _common.base_parser(NAME, __doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--calls", type=int, default=200, help="log_metric calls per client (default 200)")
    parser.add_argument("--workers", default="1,2", help="server worker counts to measure with the cache")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout` and CI stop it: clean up the servers
    if args.clients < 1 or args.calls < 1:
        raise PersondetError(f"--clients={args.clients}, --calls={args.calls}: both must be >= 1")
    try:
        workers = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError:
        raise PersondetError(f"--workers={args.workers!r} must be comma-separated integers") from None
    if args.smoke:
        args.clients, args.calls, workers = 2, 10, workers[:1]
    from native_services import NativePostgres, find_postgres_bin

    bin_dir = find_postgres_bin()
    if bin_dir is None:
        raise PersondetError("PostgreSQL server binaries not found (scripts/system-deps.sh installs them)")
    load_before = _common.load_average()
    postgres = NativePostgres(bin_dir).start()
    try:
        import secrets

        team = {"member": secrets.token_urlsafe(16)}
        anchor_calls = max(2, args.calls // 8)
        rows = [(f"no cache (MLflow's default, anchor; {anchor_calls} calls per client)", 1,
                 measure(postgres, team, 0, 1, args.clients, anchor_calls))]
        rows += [(f"cache 60 s (persondet), {w} worker{'s' if w > 1 else ''}", w,
                  measure(postgres, team, 60, w, args.clients, args.calls)) for w in workers]
    finally:
        postgres.stop()
    anchor = rows[0][2]["requests_per_s"]
    table = _common.markdown_table(
        ["server", "requests", "requests/s", "vs anchor", "p50 latency", "p95 latency", "errors", "lost values"],
        [(label, r["requests"], f"{r['requests_per_s']:.1f}", f"**{r['requests_per_s'] / anchor:.2f}x**",
          f"{r['p50_s'] * 1000:.0f} ms", f"{r['p95_s'] * 1000:.0f} ms", r["errors"], r["lost"])
         for label, _, r in rows])
    best = max(r["requests_per_s"] for _, _, r in rows)
    notes = (f"Goal: at least {GOAL_REQUESTS_PER_S:.0f} requests/s with 0 errors and 0 lost values "
             f"({args.clients} clients x {args.calls} calls); best measured: {best:.1f} requests/s.")
    _common.write_result(args.output, "Authenticated throughput of the tracking server",
                         __doc__.split("\n\n", 1)[1].replace("\n", " ").strip()
                         + f" {args.clients} clients x {args.calls} calls per row (the anchor: fewer).", table,
                         notes, load_before)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    _common.run(main)
