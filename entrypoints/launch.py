"""MLflow entry point `launch`: `train` for every (server x batch size) in containers on Docker hosts,
all reporting to the shared tracking server (see docs/LAUNCH.md)."""

import sys

from persondet.cli import parse_config, run_cli
from persondet.config import LaunchConfig


def main(argv=None):
    config = parse_config(LaunchConfig, argv, __doc__)
    from persondet.launch import launch

    launch(config)


if __name__ == "__main__":
    sys.exit(run_cli(main))
