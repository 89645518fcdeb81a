"""The detector as an MLflow model: logged (and registered) by training, loaded by evaluation."""

from __future__ import annotations

import os
from typing import Any, Mapping

from persondet.errors import PersondetError
from persondet.tracking.registry import set_version_tags
from persondet.tracking.runs import RunHandle
from persondet.tracking.store import one_line, tracking_uri


def log_detector(run: RunHandle, module, input_example, output_example, registered_name: str | None,
                 version_tags: Mapping[str, Any]) -> str | None:
    """Log the serving module to ``run`` as ``model`` (signature, input example); register it under
    ``registered_name`` (when given) and tag the version.  Returns the version (None when not registered,
    or on a rank other than 0)."""
    if run.run_id is None:
        return None
    import mlflow
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    # Any batch size and image size: only the channel count and the output row layout are fixed.
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1,) + tuple(output_example.shape[1:]))]))
    info = mlflow.pytorch.log_model(module, name="model", signature=signature, input_example=input_example,
                                    registered_model_name=registered_name, serialization_format="pickle",
                                    run_id=run.run_id)
    version = getattr(info, "registered_model_version", None)
    if registered_name and version is not None:
        set_version_tags(registered_name, str(version), version_tags)
    return None if version is None else str(version)


def load_pytorch_model(model_uri: str):
    """``mlflow.pytorch.load_model`` on CPU, with a one-line PersondetError for a URI that does not resolve."""
    import mlflow

    tracking_uri()
    known_scheme = model_uri.startswith(("runs:/", "models:/")) or "://" in model_uri
    if not known_scheme and not os.path.isdir(model_uri):
        raise PersondetError(f"model_uri={model_uri!r} is not a model URI (runs:/<run_id>/model, "
                             "models:/<name>/<version> or models:/<name>@<alias>)")
    try:
        return mlflow.pytorch.load_model(model_uri, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - MlflowException, OSError...: all mean "no such model"
        raise PersondetError(f"model_uri={model_uri!r} cannot be loaded: {one_line(exc)}") from None
