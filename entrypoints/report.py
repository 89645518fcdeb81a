"""MLflow entry point `report`: rebuild the study's tables and figures (dataset statistics, time per
batch by GPU configuration, AP50 by dataset mix and batch size, coco-only vs merged detections) from an
experiment's runs, as one static report.html logged to a report run."""

import sys

from persondet.cli import parse_config, run_cli
from persondet.config import ReportConfig


def main(argv=None):
    config = parse_config(ReportConfig, argv, __doc__)
    from persondet.report import report

    report(config)


if __name__ == "__main__":
    sys.exit(run_cli(main))
