"""Everything persondet says to MLflow, by concern.

- ``runs``: the run handle a step opens (new, resumed or nested) and logs through; its ending status.
- ``search``: finding runs and reading what they logged.
- ``registry``: registered model versions, aliases, stages and version tags.
- ``models``: the detector logged (and registered) as an MLflow model, and loaded back.
- ``projects``: running this project's entry points as MLflow project runs (``main``).
- ``store``: which tracking store and experiment; the one-line error when the server is away.

Nothing else in persondet imports mlflow.  Only global rank 0 logs: a handle has no run elsewhere.
"""

from persondet.tracking.runs import RunHandle, create_run, hardware_label, open_run, run_name

__all__ = ["RunHandle", "create_run", "hardware_label", "open_run", "run_name"]
