"""MLflow entry point `main` (the default): the whole study end to end: prepare (three mixes), train
(each mix at each batch size), evaluate on the in-house set, promote, report; finished runs re-used."""

import argparse
import sys

from persondet.cli import add_config_arguments, config_from_args, run_cli
from persondet.config import MainConfig


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    add_config_arguments(parser, MainConfig)
    config = config_from_args(MainConfig, parser.parse_args(argv))
    from persondet.pipeline import main as run_main

    run_main(config)


if __name__ == "__main__":
    sys.exit(run_cli(main))
