"""Run by tests/test_validation_ddp.py under torchrun (gloo): the per-epoch validation of one small
detector (the same seeded weights on every rank) on a COCO file; rank 0 writes the metrics as JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist


def main(annotations: str, out: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import evalkit
    from persondet import engine
    from persondet.data import PersonDataset
    from persondet.distributed import get_rank, get_world_size
    from persondet.inference import ImageFiles, run_validation, shard
    from persondet.metrics import coco_metrics

    torch.set_num_threads(1)
    if "RANK" in __import__("os").environ:
        dist.init_process_group("gloo")
    dataset = json.loads(Path(annotations).read_text())
    val_set = PersonDataset(dataset, Path(annotations).parent / "images", train=False)
    detector = evalkit.untrained_detector(seed=4).detector
    metrics = engine.validate(detector, val_set, torch.device("cpu"), batch_size=2)
    gathered = run_validation(detector, ImageFiles.of_dataset(val_set), torch.device("cpu"), 2, 1,
                              lambda detections: {"detections": detections,
                                                  **coco_metrics(dataset, detections, 1)})
    mine = len(shard(len(ImageFiles.of_dataset(val_set))))
    Path(out).with_suffix(f".rank{get_rank()}").write_text(str(mine))
    if get_rank() == 0:
        Path(out).write_text(json.dumps({"metrics": metrics, "world_size": get_world_size(),
                                    "gathered": gathered}))
    else:
        assert metrics is None and gathered is None
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
