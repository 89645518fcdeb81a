"""MLflow entry point `train`: train a person detector on a prepared set (see docs/TRAINING.md)."""

from persondet.cli import parse_config, run_cli
from persondet.config import TrainConfig


def main(argv=None):
    config = parse_config(TrainConfig, argv, "Train a Faster R-CNN person detector, tracked in MLflow.")
    from persondet.training import launch

    launch(config)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
