"""MLflow entry point `evaluate`; `EvaluateConfig` in persondet/config/ describes the step and its options
(`python entrypoints/evaluate.py --help`, docs/PARAMETERS.md)."""

import sys

from persondet.cli import parse_config, run_cli
from persondet.config import EvaluateConfig


def main(argv=None):
    config = parse_config(EvaluateConfig, argv)
    from persondet.evaluation import evaluate

    evaluate(config)


if __name__ == "__main__":
    sys.exit(run_cli(main))
