"""MLflow entry point `main` (the default): the whole study end to end: prepare (three mixes), train
(each mix at each batch size), evaluate on the in-house set, promote, report; finished runs re-used."""

import sys

from persondet.cli import parse_config, run_cli
from persondet.config import MainConfig


def main(argv=None):
    config = parse_config(MainConfig, argv, __doc__)
    from persondet.pipeline import main as run_main

    run_main(config)


if __name__ == "__main__":
    sys.exit(run_cli(main))
