"""MLflow entry point `promote`: the best merged-data version of `persondet` (by --metric, default AP50,
on one test set) becomes stage Production and alias `champion` when it beats the current champion."""

import sys

from persondet.cli import parse_config, run_cli
from persondet.config import PromoteConfig


def main(argv=None):
    config = parse_config(PromoteConfig, argv, __doc__)
    from persondet.promotion import promote

    promote(config)


if __name__ == "__main__":
    sys.exit(run_cli(main))
