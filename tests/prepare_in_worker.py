"""Run the `prepare` entry point in this fresh interpreter and say how many worker processes it forked.

Used by tests/test_prepare_worker.py: a fresh interpreter has not imported MLflow and runs no thread, the
case in which ``prepare`` reads in a worker process.  Prints ``WORKERS <n>`` last; exits as the entry point.
"""

import importlib.util
import sys
from pathlib import Path

import persondet.prepare
from persondet.cli import run_cli

started = []
_Worker = persondet.prepare.Worker


def counted(*args, **kwargs):
    started.append(args[0].__name__)
    return _Worker(*args, **kwargs)


persondet.prepare.Worker = counted
spec = importlib.util.spec_from_file_location("prepare_entry", Path(__file__).resolve().parents[1] / "entrypoints"
                                              / "prepare.py")
entry = importlib.util.module_from_spec(spec)
spec.loader.exec_module(entry)
code = run_cli(entry.main, sys.argv[1:])
print(f"WORKERS {len(started)} {' '.join(started)}")
sys.exit(code)
