"""The run guard: ``python guard.py <run id> <owner> <retry seconds>``, started by ``lease.Lease.guard``.

Run as a script (not ``-m``), so waiting costs no imports.  It blocks on stdin, the write end held by the
training.  ``done`` means the training ended its run: nothing to do.  End of file without it means the
training died (a signal) or could not reach the tracking server to end the run: the guard marks the run
FAILED if it is still RUNNING and its lease tag still names ``owner`` (no resume took it over), and removes
the tag, retrying with backoff for up to ``retry seconds`` while the server is away.  The tracking URI and
credentials come from the environment (never from the command line).  Its output goes nowhere (it may
outlive the training's terminal or pipe by an hour); what it did is the run's tag ``persondet.ended_by_guard``.
"""

from __future__ import annotations

import json
import signal
import sys
import time

LEASE_TAG = "persondet.lease"
GUARD_TAG = "persondet.ended_by_guard"


def end_failed(run_id: str, owner: str) -> str:
    """Mark the run FAILED when it is RUNNING and leased by ``owner``; what was done, for the log."""
    from mlflow import MlflowClient

    client = MlflowClient()
    run = client.get_run(run_id)
    try:
        lease_owner = json.loads(run.data.tags.get(LEASE_TAG) or "{}").get("owner")
    except (ValueError, AttributeError):
        lease_owner = None
    if lease_owner != owner:
        return "the lease belongs to another training: nothing to do"
    if run.info.status == "RUNNING":
        client.set_tag(run_id, GUARD_TAG, "the training process ended without ending this run (killed by a "
                                          "signal, or the tracking server was away); its guard marked it FAILED")
        client.set_terminated(run_id, "FAILED")
    client.delete_tag(run_id, LEASE_TAG)
    return f"run was {run.info.status}; marked FAILED" if run.info.status == "RUNNING" else "lease removed"


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the training's terminal is the training's
    run_id, owner, retry_s = argv[0], argv[1], float(argv[2])
    if sys.stdin.buffer.read().startswith(b"done"):  # blocks until the training closes the pipe
        return 0
    deadline, wait = time.monotonic() + retry_s, 1.0
    while True:
        try:
            print(f"persondet guard: run {run_id}: {end_failed(run_id, owner)}", file=sys.stderr)
            return 0
        except Exception as exc:  # noqa: BLE001 - the server away: try again later
            if time.monotonic() + wait > deadline:
                print(f"persondet guard: run {run_id} left as it is: {exc}", file=sys.stderr)
                return 1
            time.sleep(wait)
            wait = min(wait * 2, 60.0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
