"""MLflow entry point `prepare`: read COCO and CUHK-SYSU, convert, merge, describe, log."""

import argparse
import sys

from persondet.cli import add_config_arguments, config_from_args, run_cli
from persondet.config import PrepareConfig


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    add_config_arguments(parser, PrepareConfig)
    config = config_from_args(PrepareConfig, parser.parse_args(argv))
    from persondet.prepare import prepare

    result = prepare(config)
    print(f"prepared {result}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
