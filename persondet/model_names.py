"""Model names: the detectors persondet builds, the ``auto`` rule, and the registered model's name.

Kept free of torch so that configuration can be checked (and ``prepare`` run) without importing it;
``persondet.model.build_detector`` builds each of ``MODELS``.
"""

from __future__ import annotations

MODELS = ("small", "fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2", "fasterrcnn_mobilenet_v3_large_fpn")
MODEL_CHOICES = ("auto", *MODELS)  # what the ``model`` setting accepts
REGISTERED_MODEL = "persondet"  # trained detectors are registered as versions of this model


def resolve_model(model: str, cuda: bool) -> str:
    """The detector ``model`` names: ``auto`` is fasterrcnn_resnet50_fpn on a CUDA device, else the small
    CPU model; any other name is itself."""
    if model != "auto":
        return model
    return "fasterrcnn_resnet50_fpn" if cuda else "small"


WEIGHTS_BACKBONE_WORDS = ("auto", "none", "imagenet")  # or the path of a local state-dict file


def resolve_weights_backbone(weights_backbone: str, model: str) -> str:
    """The backbone initialisation ``weights_backbone`` names for the detector ``model`` (resolved):
    ``auto`` (or empty) is imagenet for the torchvision models (every published torchvision Faster R-CNN
    recipe starts from ImageNet weights) and none for the small CPU model; anything else is itself."""
    if weights_backbone in ("", "auto"):
        return "none" if model == "small" else "imagenet"
    return weights_backbone
