"""Detectors: torchvision Faster R-CNN variants, a small CPU model, and the module that gets logged.

``build_detector`` returns a torchvision ``FasterRCNN`` (two classes: background, person).
``PersonDetector`` wraps it for serving: uint8 ``[N, H, W, 3]`` in, ``[N, max_detections, 6]`` out.
A logged model is data only: ``detector_spec`` (plain values: the model name and the settings that shape
the outputs) and the detector's state dict; ``person_detector_from(spec, weights)`` builds it back from the
code of this package, so nothing is unpickled.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any, Mapping

import torch
from torch import nn

from persondet.errors import PersondetError
from persondet.model_names import MODELS
WEIGHTS_BACKBONE = ("none", "imagenet")  # or a path to a local state-dict file

# Input size of the small model when the caller gives none (the demo images are small).
SMALL_MIN_SIZE = 320
SMALL_MAX_SIZE = 512


class _SmallBackbone(nn.Module):
    """A few conv blocks giving stride-8 and stride-16 maps, merged top-down like a tiny FPN."""

    def __init__(self, width: int = 32, out_channels: int = 96) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                                 nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        w = width
        self.stem = nn.Sequential(block(3, w, 2), block(w, w, 1), block(w, 2 * w, 2))  # stride 4
        self.stage8 = nn.Sequential(block(2 * w, 3 * w, 2), block(3 * w, 3 * w, 1))  # stride 8
        self.stage16 = nn.Sequential(block(3 * w, 4 * w, 2), block(4 * w, 4 * w, 1))  # stride 16
        self.lateral8 = nn.Conv2d(3 * w, out_channels, 1)
        self.lateral16 = nn.Conv2d(4 * w, out_channels, 1)
        self.smooth8 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        c8 = self.stage8(self.stem(x))
        c16 = self.stage16(c8)
        p16 = self.lateral16(c16)
        up = nn.functional.interpolate(p16, size=c8.shape[-2:], mode="nearest")
        p8 = self.smooth8(self.lateral8(c8) + up)
        return OrderedDict([("p8", p8), ("p16", p16)])


def _build_small(num_classes: int, min_size: int | None, max_size: int | None):
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    backbone = _SmallBackbone()
    anchors = AnchorGenerator(sizes=((16, 32, 64), (64, 128, 256)),
                              aspect_ratios=((0.5, 1.0, 2.0),) * 2)
    roi_pool = MultiScaleRoIAlign(featmap_names=["p8", "p16"], output_size=7, sampling_ratio=2)
    box_head = TwoMLPHead(backbone.out_channels * 7 * 7, 256)
    return FasterRCNN(
        backbone, num_classes=None, rpn_anchor_generator=anchors, box_roi_pool=roi_pool,
        box_head=box_head, box_predictor=FastRCNNPredictor(256, num_classes),
        min_size=min_size or SMALL_MIN_SIZE, max_size=max_size or SMALL_MAX_SIZE,
        rpn_pre_nms_top_n_train=1000, rpn_post_nms_top_n_train=500,
        rpn_pre_nms_top_n_test=500, rpn_post_nms_top_n_test=300,
        box_batch_size_per_image=256, box_detections_per_img=100)


def _imagenet_weights(name: str):
    from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights

    if name == "fasterrcnn_mobilenet_v3_large_fpn":
        return MobileNet_V3_Large_Weights.IMAGENET1K_V1
    if name.startswith("fasterrcnn_resnet50_fpn"):
        return ResNet50_Weights.IMAGENET1K_V1
    raise PersondetError(f"weights_backbone=imagenet is not available for model={name!r} "
                         "(it has no ImageNet backbone); use weights_backbone=none")


def build_detector(name: str, num_classes: int = 2, weights_backbone: str = "none",
                   min_size: int | None = None, max_size: int | None = None):
    """A torchvision FasterRCNN named ``name``; ``weights_backbone`` is none, imagenet or a file."""
    import torchvision.models.detection as det

    if name not in MODELS:
        raise PersondetError(f"model={name!r} is not known; choose one of {', '.join(MODELS)}")
    weights_backbone = weights_backbone or "none"
    local_file = weights_backbone not in WEIGHTS_BACKBONE
    if local_file and not os.path.isfile(weights_backbone):
        raise PersondetError(f"weights_backbone={weights_backbone!r} is neither none, imagenet nor an "
                             "existing file")
    if name == "small":
        if weights_backbone != "none":
            raise PersondetError(f"weights_backbone={weights_backbone!r}: model=small has no "
                                 "pretrained backbone; use weights_backbone=none")
        return _build_small(num_classes, min_size, max_size)

    kwargs = {}
    if min_size:
        kwargs["min_size"] = min_size
    if max_size:
        kwargs["max_size"] = max_size
    builder = getattr(det, name)
    if weights_backbone == "imagenet":
        weights = _imagenet_weights(name)
        try:
            return builder(weights=None, weights_backbone=weights, num_classes=num_classes, **kwargs)
        except (OSError, RuntimeError) as exc:  # URLError is an OSError
            reason = " ".join(str(getattr(exc, "reason", exc)).split())[:160]
            raise PersondetError(
                f"weights_backbone=imagenet: could not download {weights.url} ({reason}); "
                "without a network, download the file elsewhere and pass weights_backbone=<path>"
            ) from None
    model = builder(weights=None, weights_backbone=None, num_classes=num_classes, **kwargs)
    if local_file:
        _load_backbone_file(model, weights_backbone, freeze_bn=not name.endswith("_v2"))
    return model


def _load_backbone_file(model, path: str, freeze_bn: bool) -> None:
    """Load a classification network's state dict (as torchvision's weight files are) into the body."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input error
        raise PersondetError(f"weights_backbone={path!r} is not a readable torch state dict "
                             f"({type(exc).__name__})") from None
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise PersondetError(f"weights_backbone={path!r} does not hold a state dict")
    body = model.backbone.body
    wanted = body.state_dict()
    loaded = {}
    for key, value in state.items():
        for prefix in ("module.", "backbone.body.", "features.", ""):
            if key.startswith(prefix) and key[len(prefix):] in wanted:
                target = key[len(prefix):]
                if wanted[target].shape == value.shape:
                    loaded[target] = value
                break
    missing = [k for k in wanted if k not in loaded and not k.endswith("num_batches_tracked")]
    if missing:
        raise PersondetError(f"weights_backbone={path!r} does not fit the backbone: {len(missing)} of "
                             f"{len(wanted)} tensors missing or of another shape (e.g. {missing[0]})")
    body.load_state_dict(loaded, strict=False)
    if freeze_bn:  # as torchvision does for a pretrained backbone
        _freeze_batchnorm(body, FrozenBatchNorm2d)


def _freeze_batchnorm(module: nn.Module, frozen_cls) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = frozen_cls(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            _freeze_batchnorm(child, frozen_cls)


class PersonDetector(nn.Module):
    """The logged model: uint8 ``[N, H, W, 3]`` -> float ``[N, max_detections, 6]``.

    Rows are ``(x1, y1, x2, y2, score, label)`` in input pixels, best first, padded with score -1.
    """

    def __init__(self, detector: nn.Module, max_detections: int = 100) -> None:
        super().__init__()
        self.detector = detector
        self.max_detections = int(max_detections)
        self.eval()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.detector.training:  # torchvision's training mode needs targets
            self.detector.eval()
        if images.dim() == 3:
            images = images.unsqueeze(0)
        device = next(self.detector.parameters()).device
        batch = images.to(device).permute(0, 3, 1, 2).float().div_(255.0)
        outputs = self.detector(list(batch))
        result = torch.full((len(outputs), self.max_detections, 6), -1.0, device=device)
        result[:, :, :4] = 0.0
        result[:, :, 5] = 0.0
        for i, out in enumerate(outputs):
            n = min(len(out["scores"]), self.max_detections)
            result[i, :n, :4] = out["boxes"][:n]
            result[i, :n, 4] = out["scores"][:n]
            result[i, :n, 5] = out["labels"][:n].float()
        return result


SPEC_FORMAT = 1  # the layout of detector_spec's dict


def detector_spec(module: PersonDetector, model_name: str) -> dict[str, Any]:
    """What rebuilds ``module`` besides its weights, as plain values (written as JSON next to them)."""
    detector = module.detector
    heads = detector.roi_heads
    return {"format": SPEC_FORMAT, "model": model_name,
            "num_classes": int(heads.box_predictor.cls_score.out_features),
            "min_size": int(detector.transform.min_size[0]), "max_size": int(detector.transform.max_size),
            "max_detections": module.max_detections, "score_thresh": float(heads.score_thresh),
            "nms_thresh": float(heads.nms_thresh), "detections_per_img": int(heads.detections_per_img)}


def person_detector_from(spec: Mapping[str, Any], weights: Mapping[str, torch.Tensor],
                         where: str = "model") -> PersonDetector:
    """The ``PersonDetector`` a spec and a state dict of its detector describe; a PersondetError naming
    ``where`` when they do not fit each other."""
    try:
        if spec.get("format") != SPEC_FORMAT:
            raise KeyError("format")
        detector = build_detector(str(spec["model"]), int(spec["num_classes"]), "none", int(spec["min_size"]),
                                  int(spec["max_size"]))
        heads = detector.roi_heads
        heads.score_thresh, heads.nms_thresh = float(spec["score_thresh"]), float(spec["nms_thresh"])
        heads.detections_per_img = int(spec["detections_per_img"])
        max_detections = int(spec["max_detections"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PersondetError(f"{where}: the model description lacks or mangles {exc}") from None
    try:
        detector.load_state_dict(weights)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:200]
        raise PersondetError(f"{where}: the weights do not fit model={spec['model']} ({first})") from None
    return PersonDetector(detector, max_detections=max_detections)
