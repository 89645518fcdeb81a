"""MLflow entry point `prepare`; `PrepareConfig` in persondet/config/ describes the step and its options
(`python entrypoints/prepare.py --help`, docs/PARAMETERS.md)."""

import sys

from persondet.cli import parse_config, run_cli
from persondet.config import PrepareConfig


def main(argv=None):
    config = parse_config(PrepareConfig, argv)
    from persondet.prepare import prepare

    result = prepare(config)
    print(f"prepared {result}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
