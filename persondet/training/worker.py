"""A torchrun worker: ``python -m persondet.training.worker <config.json> <result.json>``.

Every worker trains (``train``, joining the process group); global rank 0 writes the metrics, or the
one-line error, to the result file the launcher reads.  A worker dies with torchrun (SIGTERM when its
parent goes: never an orphan that trains on).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

from persondet.distributed import is_main_process
from persondet.errors import PersondetError
from persondet.training.torchrun import LOST_A_PEER, TORCHRUN_PID, die_with_parent, lost_a_peer


def main(argv: list[str]) -> int:
    """Train with the launcher's config file; 0 on success, 2 on a PersondetError (rank 0 reports it)."""
    # torchrun starts workers in sessions of their own: without this they outlive it as orphans
    die_with_parent(signal.SIGTERM, int(os.environ.get(TORCHRUN_PID) or os.getppid()))
    from persondet.training.launcher import read_worker_config
    from persondet.training.trainer import train  # torch: imported after the line above

    config_file, result_file = Path(argv[0]), Path(argv[1])
    try:
        config, run_id = read_worker_config(config_file.read_text())
        metrics = train(config, run_id=run_id)
    except PersondetError as exc:
        message = " ".join(str(exc).split())
        if is_main_process():  # the launcher prints it, once
            result_file.write_text(json.dumps({"error": message}))
        return 2
    except Exception as exc:  # noqa: BLE001 - only the peer-lost case is handled
        if lost_a_peer(exc):  # another worker died first: torchrun's report names that one, no traceback here
            return LOST_A_PEER
        raise
    if is_main_process():
        result_file.write_text(json.dumps({"metrics": metrics}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
