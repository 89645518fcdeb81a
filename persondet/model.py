"""Detectors: torchvision Faster R-CNN variants, a small CPU model, and the module that gets logged.

``build_detector`` returns a torchvision ``FasterRCNN`` (two classes: background, person), its backbone
initialised as ``weights_backbone`` says (``backbone_state``: ImageNet weights from torch's hub cache,
downloaded once, or a local file; always read with ``weights_only=True``).
``PersonDetector`` wraps it for serving: uint8 ``[N, H, W, 3]`` in, ``[N, max_detections, 6]`` out.
A logged model is data only: ``detector_spec`` (plain values: the model name and the settings that shape
the outputs) and the detector's state dict; ``person_detector_from(spec, weights)`` builds it back from the
code of this package, so nothing is unpickled.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator, Mapping
from urllib.parse import urlparse

import torch
from torch import nn

from persondet.distributed import is_main_process
from persondet.errors import PersondetError
from persondet.model_names import MODELS, resolve_weights_backbone

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
    # one sample per bin (torchvision's detectors take 2): a sixth less CPU per training step at 160 px
    roi_pool = MultiScaleRoIAlign(featmap_names=["p8", "p16"], output_size=7, sampling_ratio=1)
    box_head = TwoMLPHead(backbone.out_channels * 7 * 7, 256)
    return FasterRCNN(
        backbone, num_classes=None, rpn_anchor_generator=anchors, box_roi_pool=roi_pool,
        box_head=box_head, box_predictor=FastRCNNPredictor(256, num_classes),
        min_size=min_size or SMALL_MIN_SIZE, max_size=max_size or SMALL_MAX_SIZE,
        rpn_pre_nms_top_n_train=1000, rpn_post_nms_top_n_train=500,
        rpn_pre_nms_top_n_test=500, rpn_post_nms_top_n_test=300,
        # 64 sampled proposals per image (torchvision's default is 512): on CPU the RoIAlign backward pass
        # grows with the sampled proposals and took half of a training step at 256 (docs/TRAINING.md)
        box_batch_size_per_image=64, box_detections_per_img=100)


def imagenet_weights(name: str):
    """torchvision's ImageNet weights (an enum member with the file's url) of model ``name``'s backbone."""
    from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights

    if name == "fasterrcnn_mobilenet_v3_large_fpn":
        return MobileNet_V3_Large_Weights.IMAGENET1K_V1
    if name.startswith("fasterrcnn_resnet50_fpn"):
        return ResNet50_Weights.IMAGENET1K_V1
    raise PersondetError(f"weights_backbone=imagenet is not available for model={name!r} "
                         "(it has no ImageNet backbone); use weights_backbone=none")


def _classifier(name: str) -> nn.Module:
    """The classification network whose feature layers are model ``name``'s backbone (random weights)."""
    import torchvision

    if name == "fasterrcnn_mobilenet_v3_large_fpn":
        return torchvision.models.mobilenet_v3_large(weights=None)
    return torchvision.models.resnet50(weights=None)


def fetch_imagenet_file(name: str, setting: str = "weights_backbone=imagenet") -> Path:
    """The ImageNet weights file of model ``name``'s backbone in torch's hub cache (``$TORCH_HOME/hub/
    checkpoints``), downloaded (hash-checked) when missing.  Offline: one line naming the setting and its
    alternatives."""
    weights = imagenet_weights(name)
    target = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
    if target.is_file():
        return target
    match = torch.hub.HASH_REGEX.search(target.name)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(weights.url, str(target), match.group(1) if match else None,
                                       progress=is_main_process())
    except Exception as exc:  # noqa: BLE001 - URLError, timeouts, a bad hash: the download failed
        reason = " ".join(str(getattr(exc, "reason", exc)).split())[:160]
        raise PersondetError(
            f"{setting} (torchvision's ImageNet weights of model={name}) cannot be downloaded from "
            f"{weights.url} ({reason}); without a network put that file at {target}, or set "
            "weights_backbone=<a local state-dict file of the backbone> or weights_backbone=none (random "
            "initialisation)") from None
    return target


def read_state_dict(path: str | Path, where: str) -> dict[str, torch.Tensor]:
    """A state dict file read as data only (``torch.load(weights_only=True)``: no object is unpickled);
    unwrapped from ``{"model": ...}`` / ``{"state_dict": ...}`` and from DDP's ``module.`` prefix."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - an unreadable file, or one holding objects: not weights
        raise PersondetError(f"{where} is not a readable state-dict file (only tensors are read, "
                             f"{type(exc).__name__})") from None
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise PersondetError(f"{where} does not hold a state dict (names -> tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def as_backbone_state(name: str, state: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """``state`` as the classification network's state dict (what ``build_detector`` takes as ``backbone``):
    its own keys, or a whole detector's ``backbone.body.`` ones; the classification head (unused by the
    detector) filled in when absent."""
    template = _classifier(name).state_dict()
    body_prefix = "features." if name == "fasterrcnn_mobilenet_v3_large_fpn" else ""
    result = {}
    for key, value in state.items():
        target = body_prefix + key.removeprefix("backbone.body.") if key.startswith("backbone.body.") else key
        if target in template and template[target].shape == value.shape:
            result[target] = value
    head = ("fc.", "classifier.")
    missing = [k for k in template if k not in result and not k.startswith(head)
               and not k.endswith("num_batches_tracked")]
    if missing:
        raise PersondetError(f"{where} does not fit the backbone of model={name}: {len(missing)} of "
                             f"{len(template)} tensors missing or of another shape (e.g. {missing[0]})")
    return {**template, **result}


def backbone_state(name: str, weights_backbone: str) -> dict[str, torch.Tensor] | None:
    """The backbone's initial weights as a classifier state dict, read as data only (None for none).

    ``weights_backbone``: auto (imagenet for the torchvision models, none for small), none, imagenet
    (torchvision's file, downloaded into torch's hub cache when missing) or a local state-dict file."""
    resolved = resolve_weights_backbone(weights_backbone, name)
    if resolved == "none":
        return None
    shown = f"weights_backbone={weights_backbone}" + (f" ({resolved} for model={name})"
                                                       if resolved != weights_backbone else "")
    if name == "small":
        raise PersondetError(f"{shown}: model=small has no pretrained backbone; use weights_backbone=none")
    if resolved == "imagenet":
        path = fetch_imagenet_file(name, shown)
    else:
        path = Path(resolved).expanduser()
        if not path.is_file():
            raise PersondetError(f"weights_backbone={weights_backbone!r} is neither auto, none, imagenet nor an "
                                 "existing file")
    return as_backbone_state(name, read_state_dict(path, shown), shown)


@contextlib.contextmanager
def _hub_holding(weights, state: dict[str, torch.Tensor]) -> Iterator[None]:
    """For the duration, torch's hub cache is a temporary folder whose copy of ``weights``' file holds
    ``state``: torchvision's builder then builds its pretrained network from these tensors."""
    previous = getattr(torch.hub, "_hub_dir", None)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "checkpoints").mkdir()
        torch.save(state, Path(tmp) / "checkpoints" / Path(urlparse(weights.url).path).name)
        torch.hub.set_dir(tmp)
        try:
            yield
        finally:
            torch.hub._hub_dir = previous  # set_dir's variable: None again means "from $TORCH_HOME"


def build_detector(name: str, num_classes: int = 2, weights_backbone: str = "none",
                   min_size: int | None = None, max_size: int | None = None,
                   backbone: dict[str, torch.Tensor] | None = None):
    """A torchvision FasterRCNN named ``name``; ``weights_backbone`` is auto, none, imagenet or a file
    (``backbone_state``), or ``backbone`` gives those weights already read.

    With backbone weights, from ImageNet or a file, the network is the one torchvision builds for a
    pretrained backbone (its builder builds it, from these tensors): frozen first stages
    (``trainable_backbone_layers`` 3), FrozenBatchNorm2d (except the v2 model); without, every layer
    trains and BatchNorm2d learns."""
    import torchvision.models.detection as det

    if name not in MODELS:
        raise PersondetError(f"model={name!r} is not known; choose one of {', '.join(MODELS)}")
    if backbone is None:
        backbone = backbone_state(name, weights_backbone or "none")
    if name == "small":
        return _build_small(num_classes, min_size, max_size)

    kwargs = {}
    if min_size:
        kwargs["min_size"] = min_size
    if max_size:
        kwargs["max_size"] = max_size
    builder = getattr(det, name)
    if backbone is None:
        return builder(weights=None, weights_backbone=None, num_classes=num_classes, **kwargs)
    weights = imagenet_weights(name)
    with _hub_holding(weights, backbone):
        return builder(weights=None, weights_backbone=weights, num_classes=num_classes, **kwargs)


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


def load_detector_state(detector: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """A whole detector's weights into ``detector``: the same network, tensor for tensor, or one line."""
    own = detector.state_dict()
    problems = {"missing": [k for k in own if k not in state],
                "unexpected": [k for k in state if k not in own and not k.endswith("num_batches_tracked")],
                "of another shape": [k for k in state if k in own and own[k].shape != state[k].shape]}
    if any(problems.values()):
        shown = "; ".join(f"{len(keys)} {what}, e.g. {keys[0]}" for what, keys in problems.items() if keys)
        raise PersondetError(f"{where}: the weights do not fit the network built ({shown}); train with the "
                             "model and weights_backbone they were trained with")
    detector.load_state_dict(state)


def check_backbone(name: str, weights_backbone: str) -> str:
    """For steps that start trainings later (``main``, ``tune``): ``weights_backbone`` of model ``name``
    resolved, its ImageNet file fetched into torch's hub cache now (so an offline machine fails before the
    first training) or its local file checked; returns the resolved value."""
    resolved = resolve_weights_backbone(weights_backbone, name)
    if resolved != "none":
        backbone_state(name, weights_backbone)  # downloads once, reads the file: every problem shows here
    return resolved


SPEC_FORMAT = 1  # the layout of detector_spec's dict


def detector_spec(module: PersonDetector, model_name: str, weights_backbone: str = "none") -> dict[str, Any]:
    """What rebuilds ``module`` besides its weights, as plain values (written as JSON next to them):
    ``weights_backbone`` (resolved) says the network's layout (frozen stages, FrozenBatchNorm2d)."""
    detector = module.detector
    heads = detector.roi_heads
    return {"format": SPEC_FORMAT, "model": model_name, "weights_backbone": weights_backbone,
            "num_classes": int(heads.box_predictor.cls_score.out_features),
            "min_size": int(detector.transform.min_size[0]), "max_size": int(detector.transform.max_size),
            "max_detections": module.max_detections, "score_thresh": float(heads.score_thresh),
            "nms_thresh": float(heads.nms_thresh), "detections_per_img": int(heads.detections_per_img)}


def person_detector_from(spec: Mapping[str, Any], weights: Mapping[str, torch.Tensor],
                         where: str = "model") -> PersonDetector:
    """The ``PersonDetector`` a spec and a state dict of its detector describe, built in the layout it was
    trained in (from its own backbone tensors: nothing downloaded); a PersondetError naming ``where`` when
    they do not fit each other."""
    weights = dict(weights)
    try:
        if spec.get("format") != SPEC_FORMAT:
            raise KeyError("format")
        name, layout = str(spec["model"]), str(spec.get("weights_backbone") or "none")
        backbone = None if layout == "none" or name == "small" else as_backbone_state(name, weights, where)
        detector = build_detector(name, int(spec["num_classes"]), min_size=int(spec["min_size"]),
                                  max_size=int(spec["max_size"]), backbone=backbone)
        heads = detector.roi_heads
        heads.score_thresh, heads.nms_thresh = float(spec["score_thresh"]), float(spec["nms_thresh"])
        heads.detections_per_img = int(spec["detections_per_img"])
        max_detections = int(spec["max_detections"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PersondetError(f"{where}: the model description lacks or mangles {exc}") from None
    load_detector_state(detector, weights, where)
    return PersonDetector(detector, max_detections=max_detections)
