"""The ``prepare`` step: the sources of a mix in their on-disk layouts -> one prepared set.

The sources are those of the registry (``persondet.datasets.SOURCES``); the COCO and CUHK-SYSU readers
are here (``read_coco_source``, ``read_cuhk_source``).

Everything is read and checked before anything is written; outputs are built in a temporary folder,
logged to the run under ``prepared/`` and, with ``output_dir``, renamed into place.  In a process of its
own (the entry point) the reading and writing (``build_outputs``) run in a forked worker while this process
imports MLflow, checks COCO's image files and draws the size histogram (``prepare``).
"""

from __future__ import annotations

import contextlib
import gc
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import msgspec

from persondet.config import PrepareConfig
from persondet.datasets import SOURCES, mix_name, mix_sources
from persondet.errors import PersondetError
from persondet.folders import replace_folder
from persondet.formats import cuhk_sysu
from persondet.formats.coco import read_coco_persons
from persondet.formats.imagefiles import ImageFilesCheck, image_sizes
from persondet.formats.merge import SourceSet, merge, person_annotation, records_digest, write_dataset
from persondet.stats import describe, draw_checks, plot_relative_sizes, preload_plotting, write_stats
from persondet.tracking import open_run, run_name
from persondet.tracking.store import experiment_id, preload as preload_tracking
from persondet.worker import Worker, can_fork, hold_until_exit

ARTIFACT_DIR = "prepared"
TRAIN_JSON = "train.json"
PLOT = "rel_size_hist.png"


@dataclass
class PrepareResult:
    run_id: str | None
    digest: str
    stats: dict[str, dict]
    counts: dict[str, dict]  # per source: what the readers dropped, clipped, left out
    artifacts: dict[str, str] = field(default_factory=dict)  # name -> artifact path in the run
    output_dir: Path | None = None  # local copy of the outputs, when output_dir was given

    def __str__(self) -> str:
        merged = self.stats["merged"]
        where = f", files in {self.output_dir}" if self.output_dir else ""
        return (f"run {self.run_id}: {merged['images']} images, {merged['objects']} persons "
                f"(artifact {self.artifacts.get('train')}{where})")


def prepare(config: PrepareConfig, *, worker: bool | None = None) -> PrepareResult:
    """Read the sources of ``config.mix``, merge them into one prepared set, describe it and log it all to
    a prepare run (and, with ``output_dir``, place the files there).

    ``worker``: read and write the outputs in a forked worker process (``persondet.worker``) while this
    process imports MLflow, checks the first source's image files, draws the size histogram and opens the
    store; None (the default) does so when MLflow is not imported yet (the one case with something to
    overlap) and no other thread runs (``worker.can_fork``).  Either way the outputs are the same, and no
    run is started before every input is read and checked.
    """
    mix = mix_name(config.mix)
    roots = resolve_roots(config)
    parent = Path(config.output_dir).resolve().parent if config.output_dir else None
    if worker is None:
        worker = "mlflow" not in sys.modules and can_fork()
    built = staged = None
    try:
        if worker:
            with Worker(build_outputs, config, mix, roots, parent, plot=False, in_worker=True,
                        background=True) as process:  # its notes come while this process imports
                with _cyclic_gc_paused():  # imports build long-lived objects: 0.45 s less CPU without collections
                    preload_plotting()
                    preload_tracking()
                check = process.wait_for("check")  # the first source's image files, while the worker merges
                check_error = _outcome(check.run) if check else None
                if check_error is not None:  # the first source's error: before any the worker may raise
                    with contextlib.suppress(Exception):
                        built = process.result()  # once it is done, so its temporary folder goes too
                    raise check_error
                staged = process.wait_for("plot")  # the worker writes the rest meanwhile
                plot_error = _plot_outputs(*staged) if staged else None
                if staged and plot_error is None:  # every input read and checked: the store, not yet a run
                    experiment_id()
                built = process.result()  # its error first: the earlier one
                if plot_error is not None:
                    raise plot_error
                run_id = _log_run(config, mix, built)  # while the worker's process ends (frees its memory)
        else:
            built = build_outputs(config, mix, roots, parent)
            run_id = _log_run(config, mix, built)
        output_dir = replace_folder(built.stage, Path(config.output_dir)) if config.output_dir else None
    finally:
        if built is not None or staged:
            shutil.rmtree((built.stage if built is not None else staged[0]).parent, ignore_errors=True)
    return PrepareResult(run_id=run_id, digest=built.meta["digest"], stats=built.stats, counts=built.counts,
                         artifacts={k: f"{ARTIFACT_DIR}/{v}" for k, v in built.artifacts.items()},
                         output_dir=output_dir)


def _log_run(config: PrepareConfig, mix: str, built: "BuiltOutputs") -> str | None:
    """The prepare run: parameters, digests, statistics, inputs and the outputs as artifacts; its id."""
    meta = built.meta
    with open_run("prepare", run_name=run_name("prepare", mix=mix), tags={"dataset_mix": mix}) as run:
        run.log_params(config.to_params())
        run.set_tags({"persondet.data_digest": meta["digest"], "dataset_mix": mix,
                      **{f"persondet.root.{k}": v for k, v in meta["roots"].items()}})
        run.log_metrics(_metrics(built.stats, built.counts))
        for name, digest in meta["source_digests"].items():
            run.log_dataset_input(name, digest, meta["roots"][name], context="prepare")
        run.log_dataset_input(f"prepared:{mix}", meta["digest"], f"{ARTIFACT_DIR}/{TRAIN_JSON}",
                              context="prepare")
        run.log_artifacts(str(built.stage), artifact_path=ARTIFACT_DIR)
    return run.run_id


@dataclass
class BuiltOutputs:
    """What ``build_outputs`` hands back: the files are in ``stage`` (inside a temporary folder)."""

    stage: Path
    stats: dict[str, dict]
    counts: dict[str, dict]
    meta: dict  # the prepared set's ``persondet`` key
    artifacts: dict[str, str]


def build_outputs(config: PrepareConfig, mix: str, roots: dict[str, Path], parent: Path | None,
                  note: Callable[..., None] = lambda key, value=None: None, plot: bool = True,
                  in_worker: bool = False) -> BuiltOutputs:
    """Read every source, merge, describe, and write the outputs into a new temporary folder in ``parent``
    (the output folder's parent, so the finished folder is renamed into place; None: the system's temporary
    folder).  ``in_worker`` (prepare's worker process): the sources after the first are read in worker
    processes of their own meanwhile, and the first source's image check is handed to the caller,
    ``note("check", check)`` (``_read_sources``).  ``plot=False`` leaves the size histogram to the caller:
    ``note("plot", (stage, sizes))`` before the other files are written."""
    with _cyclic_gc_paused():
        sources, counts = _read_sources(roots, config, concurrent=in_worker, hand_over=note if in_worker else None)
        dataset = merge(sources, mix, config.cuhk_split, consume=True)
        del sources
        sizes, stats = describe(dataset)
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".persondet-prepare-", dir=parent))
    try:
        stage = tmp / "prepared"
        stage.mkdir()
        if not plot:
            note("plot", (stage, sizes))
        artifacts = _write_outputs(dataset, stats, sizes if plot else None, counts, stage, config.check_images)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    hold_until_exit(dataset)  # in a worker: its exit drops it at once
    return BuiltOutputs(stage, stats, counts, dataset["persondet"], artifacts)


def _read_sources(roots: dict[str, Path], config: PrepareConfig, concurrent: bool,
                  hand_over: Callable[..., None] | None = None) -> tuple[list[SourceSet], dict[str, dict]]:
    """Every source of the mix, in order, and what each reader counted.  ``concurrent`` (and a process that
    may fork): the sources after the first are read in worker processes while this one reads the first;
    their results come back in order, so the first source's error is still the one reported.

    The image files a reader left to check (``SourceSet.image_check``: COCO's, whose sizes are in its json)
    are checked here, source after source, except the first source's with ``hand_over``: then
    ``hand_over("check", check)`` gives it to the caller (prepare's main process, idle while this worker
    merges), and it is the caller's to run before any run starts; its error comes before any other, as the
    first source's."""
    names = list(roots)
    with contextlib.ExitStack() as stack:
        workers = {}
        if concurrent and len(names) > 1 and can_fork():
            workers = {name: stack.enter_context(Worker(_read_source, name, roots[name], config))
                       for name in names[1:]}
        sources, counts = [], {}
        for name in names:
            if name in workers:
                root, records, counts[name], digest, prepared_form = workers[name].result()
                source = SourceSet(name, root, *msgspec.msgpack.decode(records), digest=digest,
                                   prepared_form=prepared_form)  # msgpack keeps the keys' order
            else:
                source, counts[name] = SOURCES[name].read(roots[name], config)
                if hand_over is not None and not sources:
                    hand_over("check", source.image_check)  # None too: the caller waits for this note
                elif source.image_check is not None:
                    source.image_check.run()
            sources.append(source)
    return sources, counts


def _read_source(name: str, root: Path, config: PrepareConfig, note: Callable[..., None]) -> tuple:
    """One source read in a worker process (``_read_sources``): (its root, its images and annotations as
    msgpack, its counts, their digest, whether they are in the prepared form).  msgpack costs half of what
    pickle does for these records (0.17 s against 0.34 s to send and take CUHK-SYSU's at full scale); the
    records are plain JSON values, so they come back equal, keys in order.  The digest is taken here,
    beside the other reading (``merge.records_digest``); a check the reader left is run here too."""
    with _cyclic_gc_paused():
        source, counts = SOURCES[name].read(root, config)
        if source.image_check is not None:
            source.image_check.run()
        hold_until_exit(source)
        return source.root, msgspec.msgpack.encode((source.images, source.annotations)), counts, \
            records_digest(source), source.prepared_form


def resolve_roots(config: PrepareConfig) -> dict[str, Path]:
    """The root of each source of the mix, in canonical order; an empty root setting means its demo copy."""
    roots = {}
    for name in mix_sources(config.mix):
        source = SOURCES[name]
        given = getattr(config, source.root_param)
        root = Path(given).expanduser().resolve() if given.strip() else source.demo_root(config.demo_seed)
        if not root.is_dir():
            raise PersondetError(f"{source.root_param}={given!r}: folder not found")
        roots[name] = root
    return roots


# ------------------------------------------------------------------------------------------------ sources
def read_coco_source(root: Path, split: str = "train2017") -> tuple[SourceSet, dict]:
    """COCO 2017 in its layout: the person annotations of ``annotations/instances_<split>.json``; its images
    are left to check (``SourceSet.image_check``)."""
    annotation = root / "annotations" / f"instances_{split}.json"
    persons = read_coco_persons(annotation, annotation=person_annotation)
    # sizes come from the json: the image files are checked present and readable by the caller
    check = ImageFilesCheck(root / split, [im["file_name"] for im in persons.images], annotation)
    images = [{**im, "file_name": f"{split}/{im['file_name']}",
               "original_file_name": im["file_name"]} for im in persons.images]
    return SourceSet("coco", root, images, persons.annotations, image_check=check, prepared_form=True), \
        dict(persons.counts)


def read_cuhk_source(root: Path, split: str = "all") -> tuple[SourceSet, dict]:
    """CUHK-SYSU in its layout: ``annotation/Images.mat`` boxes of the split, converted to COCO records."""
    folder = root / cuhk_sysu.ANNOTATION_DIR
    images = cuhk_sysu.read_scenes_mat(folder / "Images.mat")
    pool = cuhk_sysu.read_pool_mat(folder / "pool.mat") if split != "all" else None
    identities = read_cuhk_identities(folder)
    selected = cuhk_sysu.select_split(images, pool, split)
    image_dir = root / cuhk_sysu.IMAGE_DIR
    sizes = image_sizes(image_dir, selected.names, folder / "Images.mat")
    coco, counts = cuhk_sysu.cuhk_to_coco(selected, sizes, identities, source=folder / "Images.mat")
    for image in coco["images"]:
        image["original_file_name"] = image["file_name"].rsplit("/", 1)[-1]
    counts["images_total"] = len(images)
    counts["images_in_split"] = len(selected)
    return SourceSet("cuhk", root, coco["images"], coco["annotations"], prepared_form=True), counts


def check_coco_root(root: Path, split: str = "train2017") -> None:
    """In seconds, before a study: the annotation file is there and starts as a JSON object, the image folder
    exists (the 450 MB file is parsed by ``prepare``, not here)."""
    annotation = root / "annotations" / f"instances_{split}.json"
    layout = "the COCO 2017 layout is annotations/instances_<split>.json and <split>/*.jpg"
    try:
        with open(annotation, "rb") as f:
            head = f.read(4096).lstrip()
    except OSError as exc:
        raise PersondetError(f"coco_root={str(root)!r}: cannot read {annotation} ({exc.strerror}); "
                             f"{layout}") from None
    if not head.startswith(b"{"):
        raise PersondetError(f"{annotation}: not a COCO annotation file (it does not start as a JSON object)")
    if not (root / split).is_dir():
        raise PersondetError(f"coco_root={str(root)!r}: no image folder {split}/; {layout}")


def check_cuhk_root(root: Path, split: str = "all") -> None:
    """In seconds, before a study: Images.mat (and pool.mat for a split) hold their variables by their
    headers, the image folder exists."""
    from persondet.formats.matlab import check_mat_variable

    folder = root / cuhk_sysu.ANNOTATION_DIR
    check_mat_variable(folder / "Images.mat", "Img")
    if split != "all":
        check_mat_variable(folder / "pool.mat", "pool")
    if not (root / cuhk_sysu.IMAGE_DIR).is_dir():
        raise PersondetError(f"cuhk_root={str(root)!r}: no image folder {cuhk_sysu.IMAGE_DIR}/")


def read_cuhk_identities(folder: Path) -> dict:
    """person_id per (image, box): Person.mat, else Train.mat + TestG50.mat, else none (all -1)."""
    person = folder / "Person.mat"
    if person.exists():
        return cuhk_sysu.identity_index_mat(person, "Person")
    protocol = folder / "test" / "train_test"
    index = {}
    if (protocol / "Train.mat").exists():
        index.update(cuhk_sysu.identity_index_mat(protocol / "Train.mat", "Train"))
    if (protocol / "TestG50.mat").exists():
        index.update(cuhk_sysu.identity_index(
            [(idname, [query, *gallery]) for idname, query, gallery in
             cuhk_sysu.read_query_gallery(protocol / "TestG50.mat", "TestG50")], protocol / "TestG50.mat"))
    return index


# ------------------------------------------------------------------------------------------------ outputs
def _write_outputs(dataset: dict, stats: dict, sizes: dict | None, counts: dict, stage: Path,
                   check_images: int) -> dict[str, str]:
    """Every output file in ``stage``; the size histogram only with ``sizes`` (else ``_plot_outputs``)."""
    write_dataset(dataset, stage / TRAIN_JSON)
    with _writing(stage):
        write_stats(stats, stage / "stats.json", stage / "stats.md")
        (stage / "counts.json").write_text(json.dumps(counts, indent=2, sort_keys=True))
        if sizes is not None:
            plot_relative_sizes(sizes, stage / PLOT)
        draw_checks(dataset, stage / "checks", check_images)
    return {"train": TRAIN_JSON, "stats": "stats.json", "stats_md": "stats.md",
            "counts": "counts.json", "plot": PLOT, "checks": "checks"}


def _plot_outputs(stage: Path, sizes: dict) -> PersondetError | None:
    """The size histogram into ``stage`` (while the worker writes the rest); its error returned, not raised."""
    def plot() -> None:
        with _writing(stage):
            plot_relative_sizes(sizes, stage / PLOT)

    return _outcome(plot)


def _outcome(step: Callable[[], None]) -> PersondetError | None:
    """``step()``'s PersondetError, returned rather than raised (None when it succeeds)."""
    try:
        step()
    except PersondetError as exc:
        return exc
    return None


@contextlib.contextmanager
def _writing(stage: Path):
    """An OSError while writing the outputs as one line."""
    try:
        yield
    except OSError as exc:
        if exc.errno is not None:  # a failed write: disk full, quota, read-only...
            raise PersondetError(f"{exc.filename or stage}: cannot write ({exc.strerror})") from None
        # PIL's UnidentifiedImageError and "image file is truncated" are OSErrors without errno
        raise PersondetError(f"annotation check: unreadable image ({' '.join(str(exc).split())})") from None


def _metrics(stats: dict[str, dict], counts: dict[str, dict]) -> dict[str, float]:
    metrics = {f"{name}/{key}": float(value) for name, row in stats.items() for key, value in row.items()}
    metrics.update({f"{name}/{key}": float(value) for name, row in counts.items() for key, value in row.items()})
    return metrics


@contextlib.contextmanager
def _cyclic_gc_paused():
    """Reading builds millions of small acyclic objects (dicts, lists, numpy arrays from the .mat files);
    the cyclic collector would re-scan all of them at every allocation burst: a sixth (COCO) to a quarter
    (CUHK-SYSU) of the reading time at full scale.  Reference counting still frees everything as usual.
    Importing matplotlib and MLflow is the same story (2.1 s of CPU instead of 2.55 s).

    On leaving, every tracked object, so what was built meanwhile (the merged set: ~1 M objects at full scale),
    is moved to the oldest generation unscanned (freeze, then unfreeze): else the first allocation after
    ``gc.enable`` would scan all of it as young objects (0.16 s at full scale), and again as it ages."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.freeze()
            gc.unfreeze()
            gc.enable()

