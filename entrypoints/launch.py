"""MLflow entry point `launch`; `LaunchConfig` in persondet/config/ describes the step and its options
(`python entrypoints/launch.py --help`, docs/PARAMETERS.md, docs/LAUNCH.md)."""

import sys

from persondet.cli import parse_config, run_cli
from persondet.config import LaunchConfig


def main(argv=None):
    config = parse_config(LaunchConfig, argv)
    from persondet.launch import launch

    launch(config)


if __name__ == "__main__":
    sys.exit(run_cli(main))
