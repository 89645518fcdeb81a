"""Benchmark: training throughput (images/s) of fasterrcnn_resnet50_fpn on one GPU.

Same generated JPEGs (4:3 photos of COCO-like and CUHK-SYSU-like sizes, resized by the detector to the
study's input size: shorter side 800, longer at most 1333), per batch size (default 8 and 16):
  (a) the anchor, a plain loop in the style of torchvision's detection reference recipe: fp32, default
      memory layout, PIL decoding to float tensors in DataLoader workers, SGD;
  (b) persondet's ``train`` itself (``persondet.training.train`` with a TrainConfig: the loader of
      persondet.data, the step of persondet.engine) with its speed options, bf16 autocast and
      channels_last, in two input variants: JPEG decoding on the GPU (decode=torchvision-cuda, nvJPEG,
      workers=0) and decoding in pinned-memory DataLoader workers (decode=torchvision, workers=N).
Images/s counts only iterations after a warm-up.  Prints one table; fits in about 5 minutes on one
H100/H200.  ``--smoke`` runs the same code on CPU at a tiny input size (it proves the script, not speed).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

NAME = "gpu_train_throughput"
SIZES = [(640, 480), (800, 600), (1000, 750), (1200, 900)]  # all 4:3: every batch has one padded shape
GOAL_RATIO = 2.0
GOAL_IMAGES_PER_S = 100.0  # per H100 at batch 16
# Speed does not depend on the learning rate; a small one keeps a randomly initialised detector from
# diverging within the few measured iterations (train() stops on a non-finite loss).
LR = 0.001


def parse_batch_sizes(text: str) -> list[int]:
    from persondet.errors import PersondetError

    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(s < 1 for s in sizes):
        raise PersondetError(f"--batch-sizes={text!r} must be a comma-separated list of integers >= 1")
    return sizes


def reference_loop(json_path: Path, batch_size: int, iters: int, warmup: int, device, workers: int,
                   min_size: int, max_size: int) -> float:
    """(a) images/s of a plain fp32 loop as in torchvision's detection reference recipe."""
    import torch
    import torchvision
    from torch.utils.data import DataLoader

    from persondet.data import PersonDataset, collate, load_prepared

    dataset, path = load_prepared(str(json_path))
    files = _common.ReferenceStyleDataset(PersonDataset(dataset, path.parent, train=True, decode="pil"))
    loader = DataLoader(files, batch_size=batch_size, shuffle=True, num_workers=workers, collate_fn=collate,
                        drop_last=True)
    torch.manual_seed(0)
    model = torchvision.models.detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=2, min_size=min_size, max_size=max_size).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=LR, momentum=0.9, weight_decay=1e-4)
    model.train()
    done, started = 0, None
    while done < warmup + iters:
        for images, targets in loader:
            if done == warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                started = time.perf_counter()
            images = [image.to(device) for image in images]
            targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
            loss_dict = model(images, targets)
            losses = sum(loss_dict.values())
            optimizer.zero_grad()
            losses.backward()
            optimizer.step()
            losses.item()  # the recipe reads the loss every step for its logger
            done += 1
            if done == warmup + iters:
                break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return iters * batch_size / (time.perf_counter() - started)


def persondet_train(json_path: Path, batch_size: int, iters: int, device: str, decode: str, workers: int,
                    min_size: int, max_size: int, amp: str) -> float:
    """(b) images/s that ``persondet.training.train`` itself measures and logs (``images_per_s``)."""
    from persondet.config import TrainConfig
    from persondet.training import TIMING_WARMUP_ITERS, train

    config = TrainConfig(data=str(json_path), model="fasterrcnn_resnet50_fpn", batch_size=batch_size,
                         epochs=1, lr=LR, warmup_iters=0, max_iters_per_epoch=TIMING_WARMUP_ITERS + iters,
                         amp=amp, channels_last=True, decode=decode, workers=workers,
                         # Images decoded on the GPU are already there: nothing to pin.
                         pin_memory=decode != "torchvision-cuda",
                         min_size=min_size, max_size=max_size, register=False, device=device,
                         # random initialisation, as the anchor: speed does not depend on it, and a GPU
                         # machine without a network cannot download the ImageNet file (weights_backbone=auto)
                         weights_backbone="none")
    return float(train(config)["images_per_s"])


def main(argv=None) -> None:
    parser = _common.base_parser(NAME, __doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", default="8,16", help="comma-separated (default 8,16)")
    parser.add_argument("--iters", type=int, default=15, help="timed iterations per measurement (default 15)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed iterations of the anchor loop")
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers (anchor and variant b2)")
    args = parser.parse_args(argv)
    batch_sizes = parse_batch_sizes(args.batch_sizes)

    import torch

    from persondet.errors import PersondetError

    if args.iters < 1 or args.warmup < 0 or args.workers < 0:
        raise PersondetError("--iters must be >= 1, --warmup and --workers >= 0")
    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        raise PersondetError("no CUDA device is visible: run on a GPU machine, or pass --smoke to check the "
                             "script on CPU")
    min_size, max_size, sizes, amp = 800, 1333, SIZES, "bf16"
    device = torch.device("cuda" if cuda else "cpu")
    variants = [("b1", "GPU JPEG decode (torchvision-cuda), workers 0", "torchvision-cuda", 0),
                ("b2", f"decode in {args.workers} pinned-memory workers (torchvision)", "torchvision",
                 args.workers)]
    if args.smoke:
        batch_sizes, args.iters, args.warmup = [2], 1, 1
        min_size, max_size, sizes = 96, 128, [(64, 48), (96, 72)]
        if not cuda:  # bf16 autocast is emulated (slow) on most CPUs; the smoke run only proves the code
            amp = "none"
            variants = [("b2", "decode in the training process (torchvision), workers 0", "torchvision", 0)]
    load_before = _common.load_average()
    rows, results, failures = [], {}, []
    from persondet.training import TIMING_WARMUP_ITERS

    with tempfile.TemporaryDirectory(prefix="persondet-bench-gpu-") as tmp:
        tmp = Path(tmp)
        # train() logs its run: keep it in a throw-away store, never the user's.
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        os.environ["MLFLOW_EXPERIMENT_NAME"] = "persondet-bench-gpu"
        os.environ.pop("MLFLOW_RUN_ID", None)
        n_images = max(batch_sizes) * (max(args.warmup, TIMING_WARMUP_ITERS) + args.iters + 1)
        print(f"writing {n_images} JPEGs ...", flush=True)
        json_path = _common.write_jpeg_set(tmp / "data", n_images, sizes)
        anchor_workers = min(args.workers, _common.cores())
        for batch_size in batch_sizes:
            anchor = reference_loop(json_path, batch_size, args.iters, args.warmup, device, anchor_workers,
                                    min_size, max_size)
            print(f"batch {batch_size}: (a) reference loop {anchor:.1f} img/s", flush=True)
            results[(batch_size, "a")] = anchor
            rows.append([batch_size, "(a) plain loop, reference recipe style: fp32, PIL, "
                         f"{anchor_workers} workers", f"{anchor:.1f}", "1.00x", ""])
            for key, label, decode, workers in variants:
                try:
                    rate = persondet_train(json_path, batch_size, args.iters, device.type, decode, workers,
                                           min_size, max_size, amp)
                except Exception as exc:  # noqa: BLE001 - keep the other measurements of this GPU session
                    reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
                    failures.append(f"batch {batch_size} ({key}): {reason}")
                    print(f"batch {batch_size}: ({key}) FAILED: {reason}", flush=True)
                    rows.append([batch_size, f"({key}) persondet `train`: {label}", "failed", "",
                                 reason.replace("|", "/")])
                    continue
                results[(batch_size, key)] = rate
                print(f"batch {batch_size}: ({key}) persondet train {rate:.1f} img/s", flush=True)
                goals = []
                if not args.smoke:
                    goals.append(f"ratio {'>=' if rate / anchor >= GOAL_RATIO else '<'} {GOAL_RATIO:g}x")
                    if batch_size == 16:
                        goals.append(f"{'>=' if rate >= GOAL_IMAGES_PER_S else '<'} {GOAL_IMAGES_PER_S:g} img/s")
                rows.append([batch_size, f"({key}) persondet `train`: {'fp32' if amp == 'none' else amp + ' autocast'}, "
                             f"channels_last, {label}",
                             f"{rate:.1f}", f"**{rate / anchor:.2f}x**", ", ".join(goals)])
    table = _common.markdown_table(["batch", "training loop", "images/s", "ratio to (a)", "goals"], rows)
    print(table)
    method = (f"fasterrcnn_resnet50_fpn (2 classes, random init), input resized by the detector to shorter "
              f"side {min_size}, longer <= {max_size}; {n_images} generated 4:3 JPEGs "
              f"({', '.join(f'{w}x{h}' for w, h in sizes)}); one GPU, one process. (a): the anchor loop in "
              f"this script, {args.warmup} warm-up + {args.iters} timed iterations; both SGD, lr {LR:g}; (b): "
              f"`persondet.training.train(TrainConfig(model='fasterrcnn_resnet50_fpn', amp='{amp}', "
              "channels_last=True, decode=..., workers=..., pin_memory=(decode != 'torchvision-cuda'), epochs=1, "
              f"max_iters_per_epoch={TIMING_WARMUP_ITERS + args.iters}))`, its own `images_per_s` (timed "
              f"after {TIMING_WARMUP_ITERS} warm-up iterations). Goals: (b)/(a) >= {GOAL_RATIO:g}x; "
              f">= {GOAL_IMAGES_PER_S:g} images/s per H100 at batch 16.")
    notes = "Smoke run on CPU at a tiny input size: proves the script runs, measures nothing." if args.smoke else ""
    _common.write_result(args.output, "GPU training throughput", method, table, notes=notes,
                         load_before=load_before)
    print(f"wrote {args.output}")
    if failures:
        raise PersondetError(f"{len(failures)} measurement(s) failed (recorded in {args.output}): "
                             + "; ".join(failures))


if __name__ == "__main__":
    _common.run(main)
