"""persondet: an MLflow-tracked experiment platform for person detection."""

__version__ = "0.1.0"
