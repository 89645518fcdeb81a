"""MLflow entry point `train`: train a person detector on a prepared set (see docs/TRAINING.md)."""

import argparse

from persondet.cli import add_config_arguments, config_from_args, run_cli
from persondet.config import TrainConfig


def main(argv=None):
    parser = argparse.ArgumentParser(description="Train a Faster R-CNN person detector, tracked in MLflow.")
    add_config_arguments(parser, TrainConfig)
    config = config_from_args(TrainConfig, parser.parse_args(argv))
    from persondet.training import launch

    return launch(config)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
