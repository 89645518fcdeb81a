"""MLflow entry point `tune`: an optuna study over lr, batch size and the CUHK-SYSU:COCO sampling ratio."""

import argparse
import sys

from persondet.cli import add_config_arguments, config_from_args, run_cli
from persondet.config import TuneConfig


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    add_config_arguments(parser, TuneConfig)
    config = config_from_args(TuneConfig, parser.parse_args(argv))
    from persondet.tuning import tune

    summary = tune(config)
    print(f"persondet: study {summary['study_name']}: {summary['trials']} trials "
          f"({summary['complete']} complete, {summary['pruned']} pruned, {summary['fail']} failed); "
          f"best val/AP50 {summary.get('best_value', float('nan')):.4f} with {summary.get('best_params', {})}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
