"""Shared command-line plumbing for the thin entry point scripts."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from persondet.errors import PersondetError


def run_cli(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> int:
    """Run ``main``; a PersondetError becomes one line on stderr and exit status 2."""
    try:
        main(argv)
    except PersondetError as exc:
        message = " ".join(str(exc).split())  # always one line
        print(f"persondet: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("persondet: interrupted", file=sys.stderr)
        return 130
    return 0


def dashed(name: str) -> str:
    return "--" + name.replace("_", "-")


def parse_config(config_cls, argv: Sequence[str] | None, description: str | None):
    """One flag per config field (``batch_size`` -> ``--batch-size``), kept as the typed string, then the
    validated config; the thin entry point scripts call only this and one library function."""
    import dataclasses

    parser = argparse.ArgumentParser(description=description)
    names = [f.name for f in dataclasses.fields(config_cls) if f.name != "raw"]
    for name in names:
        parser.add_argument(dashed(name), dest=name, default=None)
    args = parser.parse_args(argv)
    return config_cls.from_strings({name: getattr(args, name) for name in names})
