"""MLflow entry point `evaluate`: a model (runs:/, models:/name/version, models:/name@alias) on a
COCO-format test set; COCO metrics, AP50 first."""

import argparse
import sys

from persondet.cli import add_config_arguments, config_from_args, run_cli
from persondet.config import EvaluateConfig


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    add_config_arguments(parser, EvaluateConfig)
    config = config_from_args(EvaluateConfig, parser.parse_args(argv))
    from persondet.evaluation import evaluate

    evaluate(config)


if __name__ == "__main__":
    sys.exit(run_cli(main))
