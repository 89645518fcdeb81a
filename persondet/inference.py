"""One inference path: a detector over a list of images, as COCO result dicts, the same at any batch size.

Every step that runs a detector over images calls ``predict``: ``evaluate`` (on the test set) and the
per-epoch validation in ``train`` (each DDP rank on its shard, ``gather_detections`` to rank 0); ``report``
draws the detections ``evaluate`` logged.

**Batching does not change the result.**  torchvision's ``GeneralizedRCNNTransform`` resizes every image
and pads the batch to its largest image (rounded up to 32): an image batched with a larger one is seen
with more zero padding, which changes its features near the border and so its detections (measured on a
demo model: AP50 0.0656 / 0.0676 / 0.0688 at batch 1 / 4 / 8).  Here a batch only holds images that the
detector's own transform pads to one shape, so each image is computed exactly as when alone.  The shape
is found by running the transform on a ``meta`` tensor of the image's size (no pixels, no arithmetic),
so the rule is torchvision's and not a copy of it; the sizes come from the file headers, and a batch is
split again by the decoded images' real shapes, so a header that lies cannot mix shapes.  What remains is
floating-point noise of batched kernels (about 1e-5 pixel on CPU), far below the rounding of the results.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from persondet.distributed import get_rank, get_world_size, is_distributed, is_main_process

BOX_DECIMALS = 2  # result boxes in pixels, rounded: 0.01 px
SCORE_DECIMALS = 5


class ImageFiles(Dataset):
    """(image_id, uint8 ``[3, H, W]``) for each ``(image_id, path)``, decoded like the training images."""

    def __init__(self, items: Sequence[tuple[int, Path]], decode: str = "pil") -> None:
        self.items = list(items)
        self.decode = decode

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        from persondet.data import decode_image

        image_id, path = self.items[index]
        return image_id, decode_image(path, self.decode)

    @classmethod
    def of_dataset(cls, dataset) -> "ImageFiles":
        """The images of a ``data.PersonDataset`` (the validation set), decoded as it decodes."""
        return cls([(int(im["id"]), dataset.path(i)) for i, im in enumerate(dataset.images)], dataset.decode)


def padded_shape(detector, height: int, width: int) -> tuple[int, int]:
    """The ``(H, W)`` the detector's transform pads an image of this size to (in eval mode): computed on a
    meta tensor, so nothing is resized."""
    transform = detector.transform
    was_training = transform.training
    transform.eval()
    try:
        images, _ = transform([torch.empty((3, height, width), device="meta")])
    finally:
        transform.train(was_training)
    return tuple(images.tensors.shape[-2:])


def _header_size(path: Path) -> tuple[int, int] | None:
    """(height, width) from the file header; None when the header is not one we read (decoded later)."""
    from persondet.formats.imagesize import image_size

    try:
        width, height = image_size(str(path))
    except Exception:  # noqa: BLE001 - an unusual format is planned alone, and decoding will judge it
        return None
    return height, width


def plan_batches(detector, images: ImageFiles, positions: Sequence[int], batch_size: int) -> list[list[int]]:
    """Batches (lists of dataset positions) of at most ``batch_size`` images padded to one shape, in the
    order of each shape's first image."""
    shapes: dict[tuple[int, int], tuple[int, int]] = {}
    groups: dict[Any, list[int]] = {}
    for position in positions:
        size = _header_size(images.items[position][1])
        if size is None:
            key: Any = ("alone", position)
        else:
            if size not in shapes:
                shapes[size] = padded_shape(detector, *size)
            key = shapes[size]
        groups.setdefault(key, []).append(position)
    return [group[i:i + batch_size] for group in groups.values() for i in range(0, len(group), batch_size)]


def _to_results(image_id: int, output: dict, category_id: int, label: int) -> list[dict]:
    keep = output["labels"] == label
    boxes = output["boxes"][keep].detach().float().cpu()
    scores = output["scores"][keep].detach().float().cpu()
    results = []
    for (x1, y1, x2, y2), score in zip(boxes.tolist(), scores.tolist()):
        results.append({"image_id": image_id, "category_id": category_id,
                        "bbox": [round(x1, BOX_DECIMALS), round(y1, BOX_DECIMALS), round(x2 - x1, BOX_DECIMALS),
                                 round(y2 - y1, BOX_DECIMALS)],
                        "score": round(float(score), SCORE_DECIMALS)})
    return results


@torch.inference_mode()
def predict(detector, images: ImageFiles, device: torch.device, batch_size: int, category_id: int,
            positions: Iterable[int] | None = None, label: int = 1, workers: int = 0,
            desc: str = "inference") -> list[dict]:
    """COCO result dicts (``category_id``, boxes ``[x, y, w, h]``) of ``detector`` (a torchvision detector,
    put in eval mode, on ``device``) over ``images`` (``positions``: a subset, default all), keeping output
    ``label``; batches of at most ``batch_size`` images of one padded shape, decoded by ``workers``
    DataLoader processes.  The result does not depend on ``batch_size`` (module docstring)."""
    from tqdm import tqdm

    detector.eval()
    positions = list(range(len(images))) if positions is None else list(positions)
    batches = plan_batches(detector, images, positions, batch_size)
    loader = DataLoader(images, batch_sampler=batches, num_workers=workers, collate_fn=list,
                        pin_memory=device.type == "cuda")
    results: list[dict] = []
    with tqdm(total=len(positions), desc=desc, unit="img", file=sys.stderr, mininterval=1.0,
              disable=not is_main_process()) as bar:
        for batch in loader:
            for chunk in _same_shape(detector, batch):
                tensors = [image.to(device, non_blocking=True).float().div_(255.0) for _, image in chunk]
                for (image_id, _), output in zip(chunk, detector(tensors)):
                    results.extend(_to_results(image_id, output, category_id, label))
            bar.update(len(batch))
    return sorted(results, key=lambda d: d["image_id"])  # stable: each image's in the detector's order


def _same_shape(detector, batch: list[tuple[int, torch.Tensor]]) -> list[list[tuple[int, torch.Tensor]]]:
    """The batch split by the padded shape of the decoded images (normally one part)."""
    parts: dict[tuple[int, int], list] = {}
    for item in batch:
        parts.setdefault(padded_shape(detector, *item[1].shape[-2:]), []).append(item)
    return list(parts.values())


def shard(n: int) -> range:
    """This rank's positions of ``n`` items under DDP (every world_size-th), all of them otherwise."""
    return range(get_rank(), n, get_world_size())


def gather_detections(detections: list[dict]) -> list[dict] | None:
    """Every rank's detections on global rank 0, sorted by image id as ``predict`` sorts them (so the same
    list one process gets); None on the other ranks.  One process: ``detections`` itself."""
    if not is_distributed():
        return detections
    import torch.distributed as dist

    parts: list[Any] | None = [None] * get_world_size() if get_rank() == 0 else None
    dist.gather_object(detections, parts, dst=0)
    if parts is None:
        return None
    return sorted((d for part in parts for d in part), key=lambda d: d["image_id"])


def run_validation(detector, images: ImageFiles, device: torch.device, batch_size: int, category_id: int,
                   score: Callable[[list[dict]], dict[str, float]], workers: int = 0) -> dict[str, float] | None:
    """Each rank infers its shard of ``images``; rank 0 scores the union with ``score`` (None elsewhere)."""
    mine = predict(detector, images, device, batch_size, category_id, positions=shard(len(images)),
                   workers=workers, desc="validate")
    everything = gather_detections(mine)
    return None if everything is None else score(everything)
