"""The detector as an MLflow model: logged (and registered) by training, loaded by evaluation.

Beside the MLflow flavour's files the logged model holds the detector's weights as a plain state dict,
``extra_files/weights.pt`` (the torchvision detector's ``state_dict()``), and ``extra_files/persondet.json``
(``model``, ``min_size``, ``max_size``, ``weights_backbone``: what rebuilds the network):
``load_detector_weights`` reads these two as data (``torch.load(weights_only=True)``), so training's
``init`` never unpickles a logged object.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

from persondet.errors import PersondetError
from persondet.tracking.registry import set_version_tags
from persondet.tracking.runs import RunHandle
from persondet.tracking.store import one_line, tracking_uri


WEIGHTS_FILE = "extra_files/weights.pt"  # inside the logged model: the detector's state dict
INFO_FILE = "extra_files/persondet.json"  # model name, input size, backbone initialisation


def log_detector(run: RunHandle, module, input_example, output_example, registered_name: str | None,
                 version_tags: Mapping[str, Any], info: Mapping[str, Any] | None = None) -> str | None:
    """Log the serving module to ``run`` as ``model`` (signature, input example), with its detector's
    state dict and ``info`` (module docstring) as extra files; register it under ``registered_name`` (when
    given) and tag the version.  Returns the version (None when not registered, or on a rank other than 0)."""
    if run.run_id is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return _log_detector(run, module, input_example, output_example, registered_name, version_tags,
                             _weights_files(module, info or {}, Path(tmp)))


def _weights_files(module, info: Mapping[str, Any], folder: Path) -> list[str]:
    import torch

    detector = getattr(module, "detector", module)
    weights, described = folder / Path(WEIGHTS_FILE).name, folder / Path(INFO_FILE).name
    torch.save(detector.state_dict(), weights)
    described.write_text(json.dumps({"format": 1, **info}, indent=2))
    return [str(weights), str(described)]


def _log_detector(run: RunHandle, module, input_example, output_example, registered_name: str | None,
                  version_tags: Mapping[str, Any], extra_files: list[str]) -> str | None:
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
                                    run_id=run.run_id, extra_files=extra_files)
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


def load_detector_weights(init: str) -> tuple[dict[str, Any], dict]:
    """(info, state dict) of a whole detector to start a training from, read as data only.

    ``init``: a logged model (``runs:/<run_id>/model``, ``models:/<name>/<version>``,
    ``models:/<name>@<alias>``: its ``extra_files/weights.pt`` and ``persondet.json``), or a state-dict
    file (a detector's ``state_dict()``, e.g. such a ``weights.pt``; info is then empty)."""
    from persondet.model import read_state_dict

    info = describe_detector(init)
    if not init.startswith(("runs:/", "models:/")):
        return info, _detector_keys(read_state_dict(Path(init).expanduser(), f"init={init!r}"))
    with tempfile.TemporaryDirectory() as tmp:
        weights_path = _download_model_file(init, WEIGHTS_FILE, tmp)
        return info, _detector_keys(read_state_dict(weights_path, f"init={init!r}"))


def describe_detector(init: str) -> dict[str, Any]:
    """What ``load_detector_weights(init)`` would start from, without its weights: a logged model's
    ``persondet.json`` (read from the tracking store), ``{}`` for a state-dict file (checked to exist).
    One-line errors as ``load_detector_weights``'s, for checking a study's inputs before it starts."""
    if not init.startswith(("runs:/", "models:/")):
        if not Path(init).expanduser().is_file():
            raise PersondetError(f"init={init!r} is neither a model URI (runs:/<run_id>/model, "
                                 "models:/<name>/<version>, models:/<name>@<alias>) nor an existing file")
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(Path(_download_model_file(init, INFO_FILE, tmp)).read_text())


def _detector_keys(state: dict) -> dict:
    """A ``PersonDetector``'s state dict as its detector's (``detector.`` prefix dropped)."""
    return {key.removeprefix("detector."): value for key, value in state.items()}


def _download_model_file(model_uri: str, path: str, dst: str) -> str:
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    tracking_uri()
    try:
        return get_artifact_repository(model_uri).download_artifacts(path, dst)
    except Exception as exc:  # noqa: BLE001 - no such run, version or file
        raise PersondetError(f"init={model_uri!r}: cannot read the model's {path} ({one_line(exc)}); a model "
                             "logged by persondet's train holds it") from None
