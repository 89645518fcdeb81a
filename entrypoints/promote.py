"""MLflow entry point `promote`; `PromoteConfig` in persondet/config/ describes the step and its options
(`python entrypoints/promote.py --help`, docs/PARAMETERS.md)."""

import sys

from persondet.cli import parse_config, run_cli
from persondet.config import PromoteConfig


def main(argv=None):
    config = parse_config(PromoteConfig, argv)
    from persondet.promotion import promote

    promote(config)


if __name__ == "__main__":
    sys.exit(run_cli(main))
