"""Run the `prepare` entry point in this fresh interpreter and say which worker processes it forked.

Used by tests/test_prepare_worker.py: a fresh interpreter has not imported MLflow and runs no thread, the
case in which ``prepare`` reads in a worker process.  Each process that starts a worker prints ``WORKER <function>
FROM <its pid>`` (the workers' own workers too); ``MAIN <pid>`` first, ``WORKERS <n>`` (those this process
started) last; exits as the entry point.
"""

import importlib.util
import os
import sys
from pathlib import Path

import persondet.prepare
from persondet.cli import run_cli

started = []
_Worker = persondet.prepare.Worker


def counted(*args, **kwargs):
    started.append(args[0].__name__)
    print(f"WORKER {args[0].__name__} FROM {os.getpid()}", flush=True)
    return _Worker(*args, **kwargs)


print(f"MAIN {os.getpid()}", flush=True)


persondet.prepare.Worker = counted
spec = importlib.util.spec_from_file_location("prepare_entry", Path(__file__).resolve().parents[1] / "entrypoints"
                                              / "prepare.py")
entry = importlib.util.module_from_spec(spec)
spec.loader.exec_module(entry)
code = run_cli(entry.main, sys.argv[1:])
print(f"WORKERS {len(started)} {' '.join(started)}")
sys.exit(code)
