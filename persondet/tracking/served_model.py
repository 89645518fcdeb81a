"""The logged detector as an MLflow "models from code" pyfunc: this file is copied into every logged model.

``mlflow.pyfunc.load_model`` and ``mlflow models serve`` run this file (MLflow >= 2.12 "models from code":
nothing is pickled when the model is logged, nothing unpickled when it is loaded).  It rebuilds the detector
from the installed persondet package, the model's ``detector.json`` (plain values) and ``weights.pt`` (a
state dict read with ``torch.load(weights_only=True)``).  Contract: uint8 ``[N, H, W, 3]`` in, float32
``[N, max_detections, 6]`` rows ``(x1, y1, x2, y2, score, label)`` out, padded with score -1.

Not imported by persondet itself: importing it registers the model with ``mlflow.models.set_model``.
"""

from __future__ import annotations

import json

import mlflow
import numpy as np
import torch


class PersonDetectorModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper of ``persondet.model.PersonDetector``, built from data only."""

    def load_context(self, context) -> None:
        from persondet.model import person_detector_from

        with open(context.artifacts["detector"], encoding="utf-8") as f:
            spec = json.load(f)
        weights = torch.load(context.artifacts["weights"], map_location="cpu", weights_only=True)
        self.module = person_detector_from(spec, weights, where=context.artifacts["weights"])


def _predict(self, context, model_input, params=None):
    """uint8 [N, H, W, 3] -> float32 [N, max_detections, 6]."""
    images = np.asarray(model_input)
    if images.dtype != np.uint8:
        images = images.astype(np.uint8)
    return self.module(torch.from_numpy(np.ascontiguousarray(images))).numpy()


# Set after the class is made: MLflow inspects a subclass's own predict for type hints when the class is
# created and warns without them; the model's tensor signature is what validates the input here.
PersonDetectorModel.predict = _predict
mlflow.models.set_model(PersonDetectorModel())
