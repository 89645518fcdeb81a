"""torchrun as the launcher runs it: ``python -m persondet.training.torchrun <failure.json> <torchrun args>``.

Two things plain ``python -m torch.distributed.run`` does not do:

- **It dies with the launcher.**  It asks Linux for SIGTERM when its parent (the launcher, pid in
  ``LAUNCHER_PID``) dies (``PR_SET_PDEATHSIG``); torchrun's agent then stops its workers.  Each worker asks
  the same of torchrun (``worker.py``, pid in ``TORCHRUN_PID``), since torchrun starts them in sessions of
  their own: after a ``kill -9`` of the launcher nobody trains on as an orphan.
- **A worker's failure is data, not a traceback.**  torchrun reports failed workers by raising
  ``ChildFailedError`` (a traceback and a box of text on stderr).  Here the first failure (rank and exit
  code; a negative exit code is the signal that ended it) goes to ``failure.json`` for the launcher's one
  line, and the exit status is 1.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from pathlib import Path

LAUNCHER_PID = "PERSONDET_LAUNCHER_PID"
TORCHRUN_PID = "PERSONDET_TORCHRUN_PID"
PR_SET_PDEATHSIG = 1


def _load_prctl():
    """libc's prctl on Linux, None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def die_with_parent(sig: int, parent: int) -> None:
    """Ask Linux to send ``sig`` to this process when its parent (pid ``parent``) dies; if it already has,
    send it now.  A no-op where prctl(PR_SET_PDEATHSIG) does not exist."""
    prctl = _load_prctl()
    if prctl is None or prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return
    if os.getppid() != parent:
        os.kill(os.getpid(), sig)


# The exit status of a worker whose collective broke because another worker died first (worker.py).
LOST_A_PEER = 3


def lost_a_peer(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective failing because a peer process went away (its own failure is the
    cause). gloo raises a plain RuntimeError for it, so its message is what tells."""
    import torch.distributed as dist

    text = str(exc)
    return isinstance(exc, dist.DistError) or (isinstance(exc, RuntimeError) and (
        "closed by peer" in text or "reset by peer" in text or "remote worker crashing" in text))


def first_failure(failures: dict) -> tuple[int, int]:
    """(global rank, exit code) of the failure that started it: the earliest, and among failures of one
    moment not a SIGTERM (torchrun sends that to the other workers once one has failed) nor a worker that
    only lost its peer (``LOST_A_PEER``)."""
    def consequence(rank) -> bool:
        return failures[rank].exitcode in (-signal.SIGTERM, LOST_A_PEER)

    rank = min(failures, key=lambda r: (failures[r].timestamp, consequence(r), r))
    return int(rank), int(failures[rank].exitcode)


def main(argv: list[str]) -> int:
    """Run torchrun with ``argv[1:]``; 0 when every worker succeeded, 1 (and ``argv[0]`` written) otherwise."""
    die_with_parent(signal.SIGTERM, int(os.environ.get(LAUNCHER_PID) or os.getppid()))
    os.environ[TORCHRUN_PID] = str(os.getpid())  # the workers' parent, for their own die_with_parent
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(argv[1:])
    except ChildFailedError as exc:
        rank, exitcode = first_failure(exc.failures)
        Path(argv[0]).write_text(json.dumps({"rank": rank, "exitcode": exitcode}))
        return 1
    except SignalException as exc:  # the launcher died or was stopped: the agent stopped the workers
        return 128 + int(exc.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
