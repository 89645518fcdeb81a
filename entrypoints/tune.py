"""MLflow entry point `tune`; `TuneConfig` in persondet/config/ describes the step and its options
(`python entrypoints/tune.py --help`, docs/PARAMETERS.md)."""

import sys

from persondet.cli import parse_config, run_cli
from persondet.config import TuneConfig


def main(argv=None):
    config = parse_config(TuneConfig, argv)
    from persondet.tuning import tune

    summary = tune(config)
    print(f"persondet: study {summary['study_name']}: {summary['trials']} trials "
          f"({summary['complete']} complete, {summary['pruned']} pruned, {summary['fail']} failed); "
          f"best val/AP50 {summary.get('best_value', float('nan')):.4f} with {summary.get('best_params', {})}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
