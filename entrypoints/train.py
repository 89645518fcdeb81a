"""MLflow entry point `train`; `TrainConfig` in persondet/config/ describes the step and its options
(`python entrypoints/train.py --help`, docs/PARAMETERS.md)."""

from persondet.cli import parse_config, run_cli
from persondet.config import TrainConfig


def main(argv=None):
    config = parse_config(TrainConfig, argv)
    from persondet.training import launch

    launch(config)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
