"""Benchmark: the training input pipeline on CPU, images/s per DataLoader worker.

What one worker does per image in ``train``: read the JPEG, decode it, random horizontal flip, person
boxes as tensors, and batching by ``persondet.data.collate`` (resizing and normalising happen on the
training device inside the detector).  It is measured through ``persondet.data.PersonDataset`` and
``persondet.data.make_loader`` with one worker process, for ``decode=pil`` and ``decode=torchvision``,
against the anchor: the torchvision detection reference recipe's CPU pipeline (PIL decode, conversion
to a float tensor, flip) in a plain DataLoader, on the same files in the same run.
"""

from __future__ import annotations

import math
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

NAME = "data_loading"
# (width, height) choices: COCO 2017 images are at most 640 px on the longer side; CUHK-SYSU scenes are
# larger (street photos and movie frames, 800x600 and up).
SIZE_SETS = {
    "COCO-like": [(640, 480), (640, 427), (480, 640), (640, 512)],
    "CUHK-SYSU-like": [(800, 600), (1000, 750), (1200, 900), (600, 800)],
}
GPU_GOAL_IMAGES_PER_S = 100.0  # the goal for one H100 at batch 16, until bench/gpu_train_throughput.py runs


def images_per_second(loader, passes: int) -> float:
    """Median over ``passes`` of images/s, not counting the first batch (worker start-up)."""
    rates = []
    for _ in range(passes):
        iterator = iter(loader)
        next(iterator)
        count = 0
        with _common.Timer() as timer:
            for images, _targets in iterator:
                count += len(images)
        rates.append(count / timer.seconds)
    return statistics.median(rates)


def measure(json_path: Path, batch_size: int, passes: int) -> dict[str, float]:
    from torch.utils.data import DataLoader

    from persondet.data import PersonDataset, collate, load_prepared, make_loader

    dataset, path = load_prepared(str(json_path))
    rates = {}
    reference = _common.ReferenceStyleDataset(PersonDataset(dataset, path.parent, train=True, decode="pil"))
    rates["reference"] = images_per_second(
        DataLoader(reference, batch_size=batch_size, shuffle=True, num_workers=1, collate_fn=collate), passes)
    for decode in ("pil", "torchvision"):
        persons = PersonDataset(dataset, path.parent, train=True, decode=decode)
        rates[decode] = images_per_second(make_loader(persons, batch_size, workers=1), passes)
    return rates


def main(argv=None) -> None:
    parser = _common.base_parser(NAME, __doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=160, help="images per size set (default 160)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--passes", type=int, default=3, help="passes over the images; the median counts")
    parser.add_argument("--gpu-images-per-s", type=float, default=GPU_GOAL_IMAGES_PER_S,
                        help="training throughput of one GPU to feed (default: the goal, 100)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.images, args.passes = 3 * args.batch_size, 1

    from persondet.errors import PersondetError

    if args.images < 2 * args.batch_size or args.batch_size < 1:
        raise PersondetError(f"--images={args.images} must be at least twice --batch-size={args.batch_size} (>= 1)")
    if args.passes < 1 or args.gpu_images_per_s <= 0:
        raise PersondetError("--passes must be >= 1 and --gpu-images-per-s > 0")
    import torch

    torch.set_num_threads(1)
    load_before = _common.load_average()
    rows = []
    with tempfile.TemporaryDirectory(prefix="persondet-bench-data-") as tmp:
        for index, (label, sizes) in enumerate(SIZE_SETS.items()):
            print(f"{label}: writing {args.images} JPEGs ...", flush=True)
            json_path = _common.write_jpeg_set(Path(tmp) / label, args.images, sizes, seed=index)
            mean_kb = statistics.mean(p.stat().st_size for p in (Path(tmp) / label / "images").iterdir()) / 1024
            rates = measure(json_path, args.batch_size, args.passes)
            best = max(("pil", "torchvision"), key=rates.get)
            print(f"{label}: {rates}", flush=True)
            rows.append([label, ", ".join(f"{w}x{h}" for w, h in sizes), f"{mean_kb:.0f} KiB",
                         f"{rates['reference']:.1f}", f"{rates['pil']:.1f}", f"{rates['torchvision']:.1f}",
                         f"**{rates[best] / rates['reference']:.2f}x** (decode={best})",
                         str(math.ceil(args.gpu_images_per_s / rates[best]))])
    table = _common.markdown_table(
        ["images", "sizes (w x h)", "mean JPEG", "anchor: reference recipe (img/s/worker)",
         "persondet decode=pil (img/s/worker)", "persondet decode=torchvision (img/s/worker)",
         "persondet best / anchor", f"workers for {args.gpu_images_per_s:g} img/s"],
        rows)
    print(table)
    method = ("One DataLoader worker process (`num_workers=1`, torch threads 1) iterates over generated "
              f"photo-like JPEGs, batch {args.batch_size}; images/s is the median of {args.passes} passes, "
              "without the first batch (worker start-up); files are in the page cache. persondet's path is "
              "`PersonDataset` + `make_loader` (decode, flip, uint8 tensors, `collate`); the anchor is the "
              "reference recipe's CPU work (PIL decode, float conversion, flip) on the same files. Workers "
              f"needed = ceil({args.gpu_images_per_s:g} img/s / best images/s per worker).")
    notes = ("The GPU throughput to feed is the issue's goal (100 img/s per H100 at batch 16) until "
             "`bench/gpu_train_throughput.py` is measured on a GPU; with `decode=torchvision-cuda` the JPEG "
             "is decoded on the GPU (nvJPEG) and the CPU only reads the file, so fewer workers are needed.")
    _common.write_result(args.output, "Data loading: training input pipeline on CPU", method, table,
                         notes=notes, load_before=load_before)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    _common.run(main)
