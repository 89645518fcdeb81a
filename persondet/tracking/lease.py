"""Who trains a run: a lease tag on the run, renewed by a heartbeat, and a guard for a training that dies.

**The lease.**  Two trainings of one run (two resumes started at once, a resume while the first training
still runs) would log every step twice.  The tracking store is the one thing every machine shares, so the
lock lives there: the run tag ``persondet.lease`` = JSON ``{owner, host, pid, renewed, expires}``.  MLflow
has no compare-and-set, so a contended lease is taken by Fischer's timed mutual exclusion (L. Lamport, "A
fast mutual exclusion algorithm", ACM TOCS 5(1), 1987, section 1, credits it to M. Fischer):

1. read the tag; a live lease of another owner refuses (``LeaseHeld``);
2. write ours, and give up this attempt if the write did not complete within ``WRITE_WINDOW_S`` of the read;
3. wait ``SETTLE_S`` (> ``WRITE_WINDOW_S``) and read again: ours means taken; another's means a contender wrote
   after our read, and we are refused.

Since each contender's write lands within ``WRITE_WINDOW_S`` of its read, every write that could overtake ours
has landed before our second read.  A lease is live until ``expires`` (renewed every ``HEARTBEAT_S``, valid
for ``LEASE_S``; machines' clocks must agree to well within that, as NTP keeps them); on the same host a lease
whose process is gone is stale at once.  A new run's lease is written directly (nobody else knows its id).

**The guard.**  A training killed by a signal (SIGKILL from the out-of-memory killer, a segfault) cannot end
its run.  ``Lease.guard()`` starts a small process (``guard.py``, in its own session, so a signal to the
training's process group does not reach it) that waits on a pipe from the training.  When the training ends
its run it says so (``release``); when the pipe closes without that, the training died: the guard marks the
run FAILED if it is still RUNNING and still leased by that training, retrying for up to ``GUARD_RETRY_S``
while the tracking server is away.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from persondet.errors import PersondetError
from persondet.tracking.store import client, tracking_error, tracking_uri

LEASE_TAG = "persondet.lease"
HEARTBEAT_S = 20.0
LEASE_S = 90.0
WRITE_WINDOW_S = 0.5
SETTLE_S = 1.0
ATTEMPTS = 5
GUARD_RETRY_S = 3600
GUARD_SCRIPT = Path(__file__).with_name("guard.py")


class LeaseHeld(PersondetError):
    """Another training holds the run's lease."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder(value: str | None, now: float | None = None) -> dict | None:
    """The live holder a lease tag names, or None when there is none (no tag, expired, its process gone)."""
    try:
        lease = json.loads(value) if value else None
        live = isinstance(lease, dict) and float(lease["expires"]) > (time.time() if now is None else now)
    except (ValueError, KeyError, TypeError):
        return None
    if not live:
        return None
    if lease.get("host") == socket.gethostname() and not _pid_alive(int(lease.get("pid", 0))):
        return None
    return lease


class Lease:
    """This process's lease on one run (see the module docstring)."""

    def __init__(self, run_id: str, what: str) -> None:
        self.run_id, self.what = run_id, what  # what: how the refusal names the run (e.g. "resume=<id>")
        self.owner = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._guard: subprocess.Popen | None = None
        self.lost_to: dict | None = None

    def _value(self) -> str:
        now = time.time()
        return json.dumps({"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
                           "renewed": round(now, 3), "expires": round(now + LEASE_S, 3)})

    def _read(self) -> str | None:
        return client().get_run(self.run_id).data.tags.get(LEASE_TAG)

    def _write(self) -> None:
        client().set_tag(self.run_id, LEASE_TAG, self._value())

    def _refuse(self, lease: dict) -> LeaseHeld:
        age = time.time() - float(lease.get("renewed", 0))
        return LeaseHeld(f"{self.what}: run {self.run_id} is being trained by pid {lease.get('pid')} on host "
                         f"{lease.get('host')} (lease renewed {age:.0f} s ago, it expires {LEASE_S:.0f} s after "
                         "the last renewal); two trainings of one run would log every step twice")

    def take(self, contended: bool = True) -> "Lease":
        """Take the lease (Fischer's algorithm when ``contended``); ``LeaseHeld`` when another has it."""
        try:
            if not contended:
                self._write()
                return self
            for _ in range(ATTEMPTS):
                started = time.monotonic()
                current = holder(self._read())
                if current is not None and current.get("owner") != self.owner:
                    raise self._refuse(current)
                self._write()
                if time.monotonic() - started > WRITE_WINDOW_S:
                    time.sleep(random.uniform(SETTLE_S, 2 * SETTLE_S))  # too slow to be sure: try again
                    continue
                time.sleep(SETTLE_S)
                current = holder(self._read())
                if current is not None and current.get("owner") == self.owner:
                    return self
                if current is not None:
                    raise self._refuse(current)
            raise PersondetError(f"{self.what}: the tracking server answered too slowly (more than "
                                 f"{WRITE_WINDOW_S} s per request) to take the lease of run {self.run_id}; "
                                 "try again")
        except PersondetError:
            raise
        except Exception as exc:  # noqa: BLE001 - MlflowException, requests errors: the server
            raise tracking_error(exc) from None

    def start(self) -> "Lease":
        """Renew the lease every HEARTBEAT_S in a daemon thread, and start the guard."""
        self._thread = threading.Thread(target=self._heartbeat, name="persondet-lease", daemon=True)
        self._thread.start()
        self._start_guard()
        return self

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                current = holder(self._read())
                if current is not None and current.get("owner") != self.owner:
                    if self.lost_to is None:
                        print(f"persondet: warning: {self._refuse(current)}; this training lost the lease "
                              f"(it was not renewed for {LEASE_S:.0f} s)", file=sys.stderr)
                    self.lost_to = current
                    continue
                self._write()
            except Exception:  # noqa: BLE001 - the server away for a while: the next beat tries again
                continue

    def _start_guard(self) -> None:
        env = {**os.environ, "MLFLOW_TRACKING_URI": _absolute(tracking_uri())}
        try:
            self._guard = subprocess.Popen(
                [sys.executable, str(GUARD_SCRIPT), self.run_id, self.owner, str(GUARD_RETRY_S)],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                start_new_session=True)  # no output: it must not hold the training's pipes open
        except OSError as exc:  # no guard: a killed training then leaves its run RUNNING, as before
            print(f"persondet: warning: cannot start the run guard ({exc})", file=sys.stderr)

    def release(self, ended: bool = True) -> None:
        """Stop renewing and delete the tag (if still ours).  ``ended``: the run was ended by this process,
        so the guard has nothing to do; otherwise the guard takes over (the server was away)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if ended:
            try:
                current = holder(self._read())
                if current is None or current.get("owner") == self.owner:
                    client().delete_tag(self.run_id, LEASE_TAG)
            except Exception:  # noqa: BLE001 - left in place, it expires: the run itself was ended
                pass
        if self._guard is not None and self._guard.stdin is not None:
            try:
                if ended:
                    self._guard.stdin.write(b"done\n")
                self._guard.stdin.close()
            except OSError:
                pass
            if ended:
                self._guard.wait(timeout=10)


def _absolute(uri: str) -> str:
    """A relative SQLite URI made absolute (the guard runs in the same folder, but to be safe)."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + os.path.abspath(uri[len("sqlite:///"):])
    return uri
