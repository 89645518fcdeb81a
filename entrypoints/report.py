"""MLflow entry point `report`; `ReportConfig` in persondet/config/ describes the step and its options
(`python entrypoints/report.py --help`, docs/PARAMETERS.md)."""

import sys

from persondet.cli import parse_config, run_cli
from persondet.config import ReportConfig


def main(argv=None):
    config = parse_config(ReportConfig, argv)
    from persondet.report import report

    report(config)


if __name__ == "__main__":
    sys.exit(run_cli(main))
