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


def add_config_arguments(parser: argparse.ArgumentParser, config_cls, skip: Sequence[str] = ()) -> None:
    """One flag per config field (``batch_size`` -> ``--batch-size``), kept as the typed string."""
    import dataclasses

    for f in dataclasses.fields(config_cls):
        if f.name == "raw" or f.name in skip:
            continue
        parser.add_argument(dashed(f.name), dest=f.name, default=None, help=f.metadata.get("help"))


def config_from_args(config_cls, args: argparse.Namespace, skip: Sequence[str] = ()):
    import dataclasses

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)
              if f.name != "raw" and f.name not in skip and hasattr(args, f.name)}
    return config_cls.from_strings(values)
