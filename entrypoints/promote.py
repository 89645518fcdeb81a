"""MLflow entry point `promote`: the best merged-data version of `persondet` (by --metric, default AP50,
on one test set) becomes stage Production and alias `champion` when it beats the current champion."""

import argparse
import sys

from persondet.cli import add_config_arguments, config_from_args, run_cli
from persondet.config import PromoteConfig


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    add_config_arguments(parser, PromoteConfig)
    config = config_from_args(PromoteConfig, parser.parse_args(argv))
    from persondet.registry import promote

    promote(config)


if __name__ == "__main__":
    sys.exit(run_cli(main))
