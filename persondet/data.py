"""Training data: the prepared COCO file as a torch Dataset, samplers and the DataLoader.

Images come out as uint8 ``[3, H, W]`` tensors (converted to float on the training device, which keeps
host-to-device copies small); targets hold person boxes ``[x1, y1, x2, y2]``: crowd and ignore regions
never (``datasets.is_person_box``).
"""

from __future__ import annotations

import json
import math
import os
import random
import re
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch.utils.data import Dataset, Sampler

from persondet.datasets import image_path, is_person_box, person_category_id, recorded_roots
from persondet.errors import PersondetError
from persondet.formats.cocosets import check_coco_set

RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def load_prepared(data: str) -> tuple[dict, Path]:
    """Read ``data``: a COCO json path, or a prepare run id whose ``prepared/train.json`` is fetched; checked
    (``formats.cocosets``) before use."""
    path = Path(data).expanduser()
    if not path.is_file():
        if not RUN_ID.match(data.strip()):
            raise PersondetError(f"data={data!r} is neither an existing COCO json file nor a run id")
        import tempfile

        from persondet.tracking.search import download_artifact

        fetched = download_artifact(data.strip(), "prepared/train.json", tempfile.mkdtemp())
        if fetched is None:
            raise PersondetError(f"data={data!r}: that run has no artifact prepared/train.json "
                                 "(not a finished prepare run?)")
        path = Path(fetched)
    try:
        with open(path, encoding="utf-8") as f:
            dataset = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise PersondetError(f"data={str(path)!r} is not a readable JSON file ({exc})") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            raise PersondetError(f"{path}: not a COCO file (no {key!r} list)")
    check_coco_set(dataset, str(path))
    return dataset, path.resolve()


def decode_image(path: Path, decode: str = "pil") -> torch.Tensor:
    """A uint8 RGB ``[3, H, W]`` tensor; ``decode``: pil, torchvision, torchvision-cuda (nvjpeg)."""
    try:
        if decode == "pil":
            import numpy as np
            from PIL import Image

            with Image.open(path) as img:
                array = np.asarray(img.convert("RGB"))
            return torch.from_numpy(array.copy()).permute(2, 0, 1)
        from torchvision.io import ImageReadMode, decode_image as tv_decode, decode_jpeg, read_file

        raw = read_file(str(path))
        if decode == "torchvision-cuda" and raw[:2].tolist() == [0xFF, 0xD8]:
            return decode_jpeg(raw, mode=ImageReadMode.RGB, device="cuda")
        return tv_decode(raw, mode=ImageReadMode.RGB)
    except (OSError, RuntimeError, ValueError) as exc:
        raise PersondetError(f"{path}: cannot read the image ({type(exc).__name__}: {exc})") from None


class PersonDataset(Dataset):
    """Images of a COCO dict with their person boxes (no crowd or ignore region); optional random
    horizontal flip."""

    def __init__(self, dataset: Mapping[str, Any], base_dir: Path, train: bool = True, seed: int = 0,
                 decode: str = "pil", where: str = "data") -> None:
        self.dataset = dataset
        self.base_dir = Path(base_dir)
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.decode = decode
        self.category_id = person_category_id(dataset.get("categories", []), "person", where, only_category=True)
        self.roots = recorded_roots(dataset)
        self.images = sorted(dataset["images"], key=lambda im: im["id"])
        self.paths = [image_path(im, self.roots, self.base_dir, where) for im in self.images]  # checked now
        boxes: dict[int, list[list[float]]] = {im["id"]: [] for im in self.images}
        for ann in dataset["annotations"]:
            if ann.get("category_id") != self.category_id or not is_person_box(ann):
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            if w > 1 and h > 1 and ann["image_id"] in boxes:
                boxes[ann["image_id"]].append([x, y, x + w, y + h])
        self.boxes = [boxes[im["id"]] for im in self.images]
        self.sources = [str(im.get("source", "")) for im in self.images]

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def aspect_groups(self) -> list[int]:
        """0 for portrait, 1 for landscape (from the json's width/height: no image is opened)."""
        return [int(im.get("width", 1) >= im.get("height", 1)) for im in self.images]

    def path(self, index: int) -> Path:
        return self.paths[index]

    def __getitem__(self, index: int):
        image = decode_image(self.path(index), self.decode)
        boxes = torch.tensor(self.boxes[index], dtype=torch.float32).reshape(-1, 4)
        # The flip depends only on (seed, epoch, index): the same with any worker count, and on resume.
        if self.train and random.Random(f"{self.seed}/{self.epoch}/{index}").random() < 0.5:
            width = image.shape[-1]
            image = image.flip(-1)
            boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)
        target = {"boxes": boxes, "labels": torch.ones(len(boxes), dtype=torch.int64),
                  "image_id": int(self.images[index]["id"])}
        return image, target


class WeightedDistributedSampler(Sampler[int]):
    """Per-source weighted sampling with replacement, split across ranks; reseeded by ``set_epoch``."""

    def __init__(self, weights: Sequence[float], num_replicas: int = 1, rank: int = 0, seed: int = 0):
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        self.num_replicas, self.rank, self.seed, self.epoch = num_replicas, rank, seed, 0
        self.num_samples = math.ceil(len(self.weights) / num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        total = self.num_samples * self.num_replicas
        drawn = torch.multinomial(self.weights, total, replacement=True, generator=generator)
        return iter(drawn[self.rank::self.num_replicas].tolist())


class GroupedBatchSampler(Sampler[list[int]]):
    """Batches of images of one aspect group; leftovers at the end are batched together.

    Yields exactly ``ceil(len(sampler) / batch_size)`` batches, so every DDP rank runs the same number
    of iterations.
    """

    def __init__(self, sampler: Sampler[int], groups: Sequence[int], batch_size: int) -> None:
        self.sampler, self.groups, self.batch_size = sampler, groups, batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        buffers: dict[int, list[int]] = {}
        for index in self.sampler:
            buffer = buffers.setdefault(self.groups[index], [])
            buffer.append(index)
            if len(buffer) == self.batch_size:
                yield list(buffer)
                buffer.clear()
        rest = [i for buffer in buffers.values() for i in buffer]
        for start in range(0, len(rest), self.batch_size):
            yield rest[start:start + self.batch_size]


def sample_weights(dataset: PersonDataset, source_weights: Mapping[str, float]) -> list[float]:
    """Per-image weights so that each source's share follows ``source_weights`` (by image count)."""
    known = set(dataset.sources)
    unknown = sorted(set(source_weights) - known)
    if unknown:
        raise PersondetError(f"source_weights names {', '.join(unknown)}, not a source of the training set "
                             f"(sources: {', '.join(sorted(known)) or 'none'})")
    counts = {s: dataset.sources.count(s) for s in known}
    # An unnamed source keeps weight 0: sampling by source weights means "only these, in this ratio".
    return [source_weights.get(s, 0.0) / counts[s] for s in dataset.sources]


def collate(batch):
    return tuple(zip(*batch))


def make_loader(dataset: PersonDataset, batch_size_per_device: int, world_size: int = 1, rank: int = 0,
                seed: int = 0, source_weights: Mapping[str, float] | None = None, workers: int = 0,
                pin_memory: bool = False):
    """DataLoader with the (distributed, optionally weighted) sampler and aspect-ratio grouping.

    Call ``loader.batch_sampler.sampler.set_epoch(e)`` and ``dataset.set_epoch(e)`` each epoch
    (``set_epoch(loader, e)`` does both).
    """
    from torch.utils.data import DataLoader, DistributedSampler

    if source_weights:
        sampler = WeightedDistributedSampler(sample_weights(dataset, source_weights), world_size, rank, seed)
    else:
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    batches = GroupedBatchSampler(sampler, dataset.aspect_groups(), batch_size_per_device)
    return DataLoader(dataset, batch_sampler=batches, num_workers=workers, collate_fn=collate,
                      pin_memory=pin_memory, persistent_workers=False)


def set_epoch(loader, epoch: int) -> None:
    loader.batch_sampler.sampler.set_epoch(epoch)
    loader.dataset.set_epoch(epoch)


def worker_count(requested: int) -> int:
    """Never more workers than CPUs (a 2-core laptop should not fork 8 decoders)."""
    return max(0, min(requested, os.cpu_count() or 1))
