"""MLflow entry point `main`; `MainConfig` in persondet/config/ describes the step and its options
(`python entrypoints/main.py --help`, docs/PARAMETERS.md)."""

import sys

from persondet.cli import parse_config, run_cli
from persondet.config import MainConfig


def main(argv=None):
    config = parse_config(MainConfig, argv)
    from persondet.pipeline import main as run_main

    run_main(config)


if __name__ == "__main__":
    sys.exit(run_cli(main))
