"""Pure readers, writers and converters of annotation formats (no torch, no mlflow)."""
