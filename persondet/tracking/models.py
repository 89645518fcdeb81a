"""The detector as an MLflow model: logged (and registered) by training, loaded by evaluation, as data only.

A logged model (``<run>/model``) is an MLflow pyfunc "models from code" model: the code file
``served_model.py`` of this package, and two artifacts: ``weights.pt``, the torchvision detector's state
dict (tensors only), and ``detector.json``, the plain values that rebuild it (``model.detector_spec``).
Nothing is pickled.  persondet itself (``load_detector`` for evaluation, ``load_detector_weights`` and
``describe_detector`` for training's ``init``) reads the two artifacts with ``json`` and
``torch.load(weights_only=True)`` and never runs the logged code file; ``mlflow models serve`` and
``mlflow.pyfunc.load_model`` do run it (docs/SERVER.md, "What is trusted").
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
from persondet.tracking.store import one_line, opened_store_uri

MODEL_NAME = "model"  # the run artifact: runs:/<run id>/model
WEIGHTS_FILE, SPEC_FILE = "weights.pt", "detector.json"
SERVED_MODEL = Path(__file__).with_name("served_model.py")
EXAMPLE_SHAPE = (1, 64, 64, 3)


def log_detector(run: RunHandle, module, model_name: str, registered_name: str | None = None,
                 version_tags: Mapping[str, Any] | None = None, weights_backbone: str = "none") -> str | None:
    """Log ``module`` (a ``PersonDetector`` of ``model_name``, built with ``weights_backbone``, resolved) to
    ``run``, MLflow's active run, as ``model`` (weights, description, signature, input example); register it
    under ``registered_name`` (when given) and tag the version.  Returns the version (None when not
    registered, or on a rank other than 0)."""
    if run.run_id is None:
        return None
    import mlflow
    import numpy as np
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    from persondet.model import detector_spec

    active = mlflow.active_run()
    if active is None or active.info.run_id != run.run_id:
        raise RuntimeError(f"log_detector: run {run.run_id} must be MLflow's active run (open_run makes it so)")
    example = np.zeros(EXAMPLE_SHAPE, dtype=np.uint8)
    output = module(torch.from_numpy(example)).numpy()
    # Any batch size and image size: only the channel count and the output row layout are fixed.
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1,) + tuple(output.shape[1:]))]))
    with tempfile.TemporaryDirectory() as tmp:
        weights, spec = Path(tmp, WEIGHTS_FILE), Path(tmp, SPEC_FILE)
        state = {k: v.detach().cpu().contiguous() for k, v in module.detector.state_dict().items()}
        torch.save(state, weights)
        spec.write_text(json.dumps(detector_spec(module, model_name, weights_backbone), indent=1))
        info = mlflow.pyfunc.log_model(name=MODEL_NAME, python_model=str(SERVED_MODEL),
                                       artifacts={"weights": str(weights), "detector": str(spec)},
                                       signature=signature, input_example=example,
                                       pip_requirements=_requirements(), registered_model_name=registered_name)
    version = getattr(info, "registered_model_version", None)
    if registered_name and version is not None:
        set_version_tags(registered_name, str(version), version_tags or {})
    return None if version is None else str(version)


def _requirements() -> list[str]:
    """The libraries the served model imports, at this environment's versions (persondet itself must be
    installed where the model is served: it is not on PyPI)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("mlflow", "torch", "torchvision", "numpy")]


def read_logged_detector(model_uri: str, setting: str = "model_uri") -> tuple[dict[str, Any], dict[str, Any]]:
    """(spec, state dict) of the detector logged at ``model_uri`` (runs:/, models:/ or a local folder),
    read as data: ``json`` and ``torch.load(weights_only=True)``; a one-line PersondetError naming
    ``setting`` otherwise."""
    import mlflow
    import torch
    from mlflow.models import Model

    opened_store_uri()
    known_scheme = model_uri.startswith(("runs:/", "models:/")) or "://" in model_uri
    if not known_scheme and not os.path.isdir(model_uri):
        raise PersondetError(f"{setting}={model_uri!r} is not a model URI (runs:/<run_id>/model, "
                             "models:/<name>/<version> or models:/<name>@<alias>)")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp)
            flavor = Model.load(local).flavors.get("python_function", {})
        except Exception as exc:  # noqa: BLE001 - MlflowException, OSError...: all mean "no such model"
            raise PersondetError(f"{setting}={model_uri!r} cannot be loaded: {one_line(exc)}") from None
        files = {key: (flavor.get("artifacts") or {}).get(key, {}).get("path") for key in ("weights", "detector")}
        if not all(files.values()):
            raise PersondetError(f"{setting}={model_uri!r} is not a persondet model with {WEIGHTS_FILE} and "
                                 f"{SPEC_FILE} (a model logged as a pickle by an older persondet is not "
                                 "loaded: unpickling runs code); log it again")
        try:
            spec = json.loads(Path(local, files["detector"]).read_text(encoding="utf-8"))
            weights = torch.load(Path(local, files["weights"]), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - UnpicklingError for anything but tensors, bad JSON, ...
            raise PersondetError(f"{setting}={model_uri!r}: {WEIGHTS_FILE} / {SPEC_FILE} are not plain "
                                 f"weights and values ({type(exc).__name__}: {one_line(exc)[:160]})") from None
    if not isinstance(spec, dict) or not isinstance(weights, dict):
        raise PersondetError(f"{setting}={model_uri!r}: {SPEC_FILE} or {WEIGHTS_FILE} is not a mapping")
    return spec, weights


def load_detector(model_uri: str):
    """The logged ``PersonDetector`` on CPU (``.detector`` is the torchvision detector), built from the
    installed persondet with the logged weights: what evaluate (and every other step) loads."""
    from persondet.model import person_detector_from

    spec, weights = read_logged_detector(model_uri)
    return person_detector_from(spec, weights, where=f"model_uri={model_uri!r}")


def load_detector_weights(init: str) -> tuple[dict[str, Any], dict]:
    """(spec, state dict) of a whole detector to start a training from (``init``), read as data only.

    ``init``: a logged model (``runs:/<run_id>/model``, ``models:/<name>/<version>``, ``models:/<name>@<alias>``:
    its ``detector.json`` and ``weights.pt``), or a state-dict file (a detector's ``state_dict()``, e.g. such
    a ``weights.pt``; the spec is then empty)."""
    from persondet.model import read_state_dict

    if not init.startswith(("runs:/", "models:/")):
        info = describe_detector(init)
        return info, _detector_keys(read_state_dict(Path(init).expanduser(), f"init={init!r}"))
    return read_logged_detector(init, setting="init")


def describe_detector(init: str) -> dict[str, Any]:
    """What ``load_detector_weights(init)`` would start from, without its weights: a logged model's
    ``detector.json`` (read from the tracking store), ``{}`` for a state-dict file (checked to exist).
    One-line errors as ``load_detector_weights``'s, for checking a study's inputs before it starts."""
    if not init.startswith(("runs:/", "models:/")):
        if not Path(init).expanduser().is_file():
            raise PersondetError(f"init={init!r} is neither a model URI (runs:/<run_id>/model, "
                                 "models:/<name>/<version>, models:/<name>@<alias>) nor an existing file")
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        spec = json.loads(Path(_download_model_file(init, f"artifacts/{SPEC_FILE}", tmp)).read_text())
    if not isinstance(spec, dict):
        raise PersondetError(f"init={init!r}: {SPEC_FILE} is not a mapping")
    return spec


def _detector_keys(state: dict) -> dict:
    """A ``PersonDetector``'s state dict as its detector's (``detector.`` prefix dropped)."""
    return {key.removeprefix("detector."): value for key, value in state.items()}


def _download_model_file(model_uri: str, path: str, dst: str) -> str:
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    opened_store_uri()
    try:
        return get_artifact_repository(model_uri).download_artifacts(path, dst)
    except Exception as exc:  # noqa: BLE001 - no such run, version or file
        raise PersondetError(f"init={model_uri!r}: cannot read the model's {path} ({one_line(exc)}); a model "
                             "logged by persondet's train holds it") from None
