"""MLflow entry point `prepare`: read COCO and CUHK-SYSU, convert, merge, describe, log."""

import sys

from persondet.cli import parse_config, run_cli
from persondet.config import PrepareConfig


def main(argv=None):
    config = parse_config(PrepareConfig, argv, __doc__)
    from persondet.prepare import prepare

    result = prepare(config)
    print(f"prepared {result}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
