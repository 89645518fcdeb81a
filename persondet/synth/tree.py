"""The demo tree: the sources written once per seed under ``$PERSONDET_DEMO_HOME``, atomically, and the CLI.

``coco/``, ``cuhk/`` and ``inhouse/`` are written together (the demo ``main`` needs them); the extra
sources (``citypersons/``, ``crowdhuman/``) are added to a finished tree when first asked for, each one
built in a temporary folder and renamed into place, so the tree's bytes for the first three never change.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from persondet.errors import PersondetError
from persondet.folders import replace_folder
from persondet.synth.citypersons import write_citypersons
from persondet.synth.coco import write_coco
from persondet.synth.crowdhuman import write_crowdhuman
from persondet.synth.cuhk import write_cuhk
from persondet.synth.inhouse import write_inhouse

FORMAT_VERSION = "2"  # 2: COCO persons 0.2-0.8 of the image height (the in-house set's sizes too)
MARKER = ".persondet-demo-complete"
EXTRA_SOURCES = ("citypersons", "crowdhuman")


@dataclass(frozen=True)
class DemoProfile:
    """How much demo data to write.  The defaults are small enough for CPU training in about a minute."""

    name: str = "default"
    coco_train_images: int = 240
    coco_val_images: int = 60
    coco_person_fraction: float = 0.75
    # persons as tall as the in-house set's (0.25-0.6 of the image) and taller: a COCO-only demo model meets them
    coco_person_height: tuple[float, float] = (0.2, 0.8)
    cuhk_images: int = 160
    cuhk_pool_images: int = 60
    inhouse_images: int = 80
    citypersons_train_images: int = 24  # extra sources: written only when asked for
    citypersons_val_images: int = 8
    crowdhuman_train_images: int = 24
    crowdhuman_val_images: int = 8
    cheap_images: bool = False


@dataclass(frozen=True)
class DemoData:
    coco_root: Path
    cuhk_root: Path
    inhouse_annotations: Path
    inhouse_images: Path
    citypersons_root: Path | None = None  # None until asked for (extra_sources)
    crowdhuman_root: Path | None = None


def _demo_home(root) -> Path:
    if root is not None:
        return Path(root)
    env = os.environ.get("PERSONDET_DEMO_HOME")
    return Path(env) if env else Path.home() / ".cache" / "persondet" / "demo"


def _demo_data(target: Path) -> DemoData:
    extra = {f"{name}_root": target / name for name in EXTRA_SOURCES if (target / name).is_dir()}
    return DemoData(coco_root=target / "coco", cuhk_root=target / "cuhk",
                    inhouse_annotations=target / "inhouse" / "annotations.json",
                    inhouse_images=target / "inhouse" / "images", **extra)


def _format_of(target: Path) -> str | None:
    """The FORMAT_VERSION a complete demo tree was written with; None when ``target`` holds none."""
    marker = target / MARKER
    return marker.read_text().strip() if marker.is_file() else None


def _is_complete(target: Path) -> bool:
    return _format_of(target) == FORMAT_VERSION


def build_demo_tree(target: str | Path, seed: int = 0, profile: DemoProfile | None = None,
                    extra_sources: Sequence[str] = ()) -> DemoData:
    """Write coco/, cuhk/ and inhouse/ into ``target`` atomically (temp sibling, then rename); reuse if complete.

    ``extra_sources`` (names from ``EXTRA_SOURCES``) are added to the tree if missing.
    """
    target = Path(target).absolute()
    profile = profile or DemoProfile()
    unknown = [name for name in extra_sources if name not in EXTRA_SOURCES]
    if unknown:
        raise PersondetError(f"demo data: unknown extra source {unknown[0]!r} (extra sources: "
                             f"{', '.join(EXTRA_SOURCES)})")
    if not _is_complete(target):
        _build_base(target, seed, profile)
    for name in extra_sources:
        _add_source(target, name, seed, profile)
    return _demo_data(target)


def _build_base(target: Path, seed: int, profile: DemoProfile) -> None:
    outdated = _format_of(target) not in (None, FORMAT_VERSION)  # persondet's own cache: replaced
    if target.exists() and any(target.iterdir()) and not outdated:
        raise PersondetError(f"{target}: exists, is not empty and holds no complete demo data; "
                             "remove it or choose another directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        cheap = profile.cheap_images
        write_coco(tmp / "coco", seed=seed, train_images=profile.coco_train_images,
                   val_images=profile.coco_val_images, person_fraction=profile.coco_person_fraction,
                   person_height=profile.coco_person_height, cheap_images=cheap)
        write_cuhk(tmp / "cuhk", seed=seed, images=profile.cuhk_images, pool_images=profile.cuhk_pool_images,
                   cheap_images=cheap)
        write_inhouse(tmp / "inhouse", seed=seed, images=profile.inhouse_images, cheap_images=cheap)
        (tmp / MARKER).write_text(FORMAT_VERSION + "\n")
        if target.exists() and not outdated:
            target.rmdir()  # empty (checked above)
        try:
            if outdated:
                replace_folder(tmp, target)
            else:
                os.rename(tmp, target)
        except OSError:
            if not _is_complete(target):  # another process did not finish it either
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _add_source(target: Path, name: str, seed: int, profile: DemoProfile) -> None:
    """One extra source folder, built beside its final place and renamed into it (reused when there)."""
    if (target / name).is_dir():
        return
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=target))
    try:
        if name == "citypersons":
            write_citypersons(tmp, seed=seed, train_images=profile.citypersons_train_images,
                              val_images=profile.citypersons_val_images, cheap_images=profile.cheap_images)
        else:
            write_crowdhuman(tmp, seed=seed, train_images=profile.crowdhuman_train_images,
                             val_images=profile.crowdhuman_val_images, cheap_images=profile.cheap_images)
        try:
            os.rename(tmp, target / name)
        except OSError:
            if not (target / name).is_dir():  # not another process's finished copy either
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_demo_data(seed: int = 0, root: str | Path | None = None, profile: DemoProfile | None = None,
                     extra_sources: Sequence[str] = ()) -> DemoData:
    """The built-in demo data for ``seed``, written once under ``root`` (default ``$PERSONDET_DEMO_HOME`` or
    ``~/.cache/persondet/demo``) / ``seed<seed>`` (plus ``-<profile name>`` for a non-default profile);
    ``extra_sources`` (``citypersons``, ``crowdhuman``) are added to it when first asked for."""
    profile = profile or DemoProfile()
    name = f"seed{seed}" + ("" if profile.name == "default" else f"-{profile.name}")
    return build_demo_tree(_demo_home(root) / name, seed=seed, profile=profile, extra_sources=extra_sources)


# --------------------------------------------------------------------------------------------------- CLI

def _main(argv: Sequence[str] | None = None) -> None:
    d = DemoProfile()
    p = argparse.ArgumentParser(prog="persondet-demo-data", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="directory to write coco/, cuhk/ and inhouse/ into")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--coco-images", type=int, default=d.coco_train_images, help="COCO train2017 images")
    p.add_argument("--coco-val-images", type=int, default=d.coco_val_images)
    p.add_argument("--cuhk-images", type=int, default=d.cuhk_images)
    p.add_argument("--cuhk-pool-images", type=int, default=None, help="test pool size (default: 3/8 of the images)")
    p.add_argument("--inhouse-images", type=int, default=d.inhouse_images)
    p.add_argument("--citypersons-images", type=int, default=0,
                   help="CityPersons train images (val: a quarter); 0: no citypersons/")
    p.add_argument("--crowdhuman-images", type=int, default=0,
                   help="CrowdHuman train images (val: a quarter); 0: no crowdhuman/")
    p.add_argument("--cheap-images", action="store_true", help="solid-colour hard-linked images (benchmarks)")
    args = p.parse_args(argv)
    for flag in ("coco_images", "coco_val_images", "cuhk_images", "inhouse_images", "citypersons_images",
                 "crowdhuman_images"):
        if getattr(args, flag) < 0:
            raise PersondetError(f"--{flag.replace('_', '-')}: must be >= 0, got {getattr(args, flag)}")
    pool = args.cuhk_pool_images if args.cuhk_pool_images is not None else max(1, args.cuhk_images * 3 // 8)
    profile = replace(d, name="cli", coco_train_images=args.coco_images, coco_val_images=args.coco_val_images,
                      cuhk_images=args.cuhk_images, cuhk_pool_images=pool, inhouse_images=args.inhouse_images,
                      citypersons_train_images=args.citypersons_images,
                      citypersons_val_images=max(1, args.citypersons_images // 4),
                      crowdhuman_train_images=args.crowdhuman_images,
                      crowdhuman_val_images=max(1, args.crowdhuman_images // 4), cheap_images=args.cheap_images)
    extra = [name for name in EXTRA_SOURCES if getattr(args, f"{name}_images")]
    data = build_demo_tree(args.out, seed=args.seed, profile=profile, extra_sources=extra)
    print(f"COCO 2017 layout:  {data.coco_root}")
    print(f"CUHK-SYSU layout:  {data.cuhk_root}")
    print(f"in-house test set: {data.inhouse_annotations} (images in {data.inhouse_images})")
    if data.citypersons_root:
        print(f"CityPersons layout: {data.citypersons_root}")
    if data.crowdhuman_root:
        print(f"CrowdHuman layout: {data.crowdhuman_root}")


def cli(argv: Sequence[str] | None = None) -> int:
    from persondet.cli import run_cli

    return run_cli(_main, argv)
