"""MLflow entry point `evaluate`: a model (runs:/, models:/name/version, models:/name@alias) on a
COCO-format test set; COCO metrics, AP50 first."""

import sys

from persondet.cli import parse_config, run_cli
from persondet.config import EvaluateConfig


def main(argv=None):
    config = parse_config(EvaluateConfig, argv, __doc__)
    from persondet.evaluation import evaluate

    evaluate(config)


if __name__ == "__main__":
    sys.exit(run_cli(main))
