"""Benchmark: the whole ``prepare`` at the real scale against pycocotools' ``COCO(annotation_file)`` load.

The data (generated once by ``persondet.synth`` and cached under ``--work``) has the real sizes: a COCO
``instances_train2017.json`` of 118,287 images and about 860,000 annotations of all 80 categories with
polygon segmentations (about 450 MB), 64,115 images holding persons; a CUHK-SYSU tree of 18,184 image
files (cheap solid-colour JPEGs, hard-linked, so prepare must read sizes from their headers) with 96,143
boxes.  Each measurement runs in a fresh Python process, which reports the wall time of the call and its CPU
time (its worker processes' included); its peak resident memory is that of the process and all its workers
together (``measure``).  A third
measurement times the image-header reads prepare makes (every kept image) with persondet's header parser
and with ``PIL.Image.open(path).size``.  Goal (issue 15 point 7): prepare in at most 0.25x the time of
the COCO load alone, in at most 0.3x its peak memory.

A fourth measurement times the floor (``FLOOR``): the library work prepare cannot do without (importing
MLflow and opening its store, importing matplotlib, loading the .mat files with scipy, decoding the COCO
file with msgspec, reading the image headers), each step alone in one fresh process.  Its CPU time divided
by the machine's cores is the least wall time any prepare could take here; prepare's CPU time beyond it is
persondet's own work.

A second prepare adds the two newer sources at their real sizes (issue 13 point 5): CrowdHuman's 15,000
train images with about 340,000 person boxes (``.odgt``) and CityPersons' 2,975 train images (``.mat``),
mix ``coco+cuhk+citypersons+crowdhuman``.  Goal: still faster than the COCO load alone, at most 0.5x its
peak memory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

NAME = "prepare_scale"

# The real sizes (DATASETS.md / issue 2); --smoke uses tiny ones.
FULL = dict(coco_images=118_287, coco_person_images=64_115, cuhk_images=18_184, cuhk_boxes=96_143,
            cuhk_pool=6_978, cuhk_identities=8_432)
SMOKE = dict(coco_images=400, coco_person_images=217, cuhk_images=60, cuhk_boxes=318, cuhk_pool=23,
             cuhk_identities=28)
# CrowdHuman train (arXiv:1805.00123): 15,000 images, ~22.6 persons each; 10-38 people, 5 % of them ignored,
# gives ~22.8 person boxes per image.  CityPersons train: 2,975 images of 2048 x 1024.
FULL_EXTRA = dict(crowdhuman_images=15_000, crowdhuman_persons=(10, 38), citypersons_images=2_975)
SMOKE_EXTRA = dict(crowdhuman_images=30, crowdhuman_persons=(10, 38), citypersons_images=12)
FOUR = "coco+cuhk+citypersons+crowdhuman"

# Runs in the fresh process: time the call only (wall and CPU), then report the peak RSS of the process.
_CHILD = textwrap.dedent("""
    import json, os, resource, sys, time

    def cpu():
        return sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                   for f in ("ru_utime", "ru_stime"))

    task, args = sys.argv[1], json.loads(sys.argv[2])
    extra = {}
    t_import = time.perf_counter()
    if task == "coco_load":
        from pycocotools.coco import COCO
        t0, c0 = time.perf_counter(), cpu()
        COCO(args["annotation_file"])
    elif task in ("prepare", "prepare_profile"):
        from persondet.config import PrepareConfig
        from persondet.prepare import prepare
        config = PrepareConfig(**args["roots"], mix=args.get("mix", "coco+cuhk"))
        t0, c0 = time.perf_counter(), cpu()
        if task == "prepare":
            prepare(config)
        else:  # cumulative time of the named functions (all calls), and of imports, under cProfile
            import cProfile, pstats
            profiler = cProfile.Profile()
            profiler.runcall(prepare, config, worker=False)  # one process: the profiler sees every stage
            stages = dict.fromkeys(args["stages"], 0.0)
            for (file, _, name), (_, _, _, cumulative, _) in pstats.Stats(profiler).stats.items():
                key = file.rsplit("/", 1)[-1] + ":" + name
                if key in stages:
                    stages[key] += cumulative
            extra = {"stages": stages}
    elif task == "floor":  # the library work prepare cannot do without, alone and in turn (FLOOR)
        import gc
        gc.disable()  # as prepare has it while it imports and reads
        from persondet.formats.coco import load_instances
        from persondet.formats.imagesize import image_size

        def tracking():
            import mlflow
            mlflow.MlflowClient().get_experiment_by_name("persondet")  # opens the SQLite store

        def plotting():
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot  # noqa: F401

        def matlab():
            import scipy.io
            for name in ("Images.mat", "Person.mat"):
                scipy.io.loadmat(os.path.join(args["cuhk_annotation"], name))

        paths = [line for line in open(args["list"]).read().splitlines() if line]
        work = {"tracking": tracking, "plotting": plotting, "matlab": matlab,
                "coco": lambda: load_instances(args["annotation_file"]),
                "headers": lambda: [image_size(p) for p in paths]}
        t0, c0 = time.perf_counter(), cpu()
        steps = {}
        for key, step in work.items():
            wall, used = time.perf_counter(), cpu()
            step()
            steps[key] = [time.perf_counter() - wall, cpu() - used]
        extra = {"steps": steps}
    else:  # image_headers: every file prepare reads, with persondet's parser and with PIL
        from PIL import Image
        from persondet.formats.imagesize import image_size
        paths = [line for line in open(args["list"]).read().splitlines() if line]
        t0, c0 = time.perf_counter(), cpu()
        ours = [image_size(p) for p in paths]
        t_ours = time.perf_counter()
        theirs = []
        for p in paths:
            with Image.open(p) as im:
                theirs.append(im.size)
        extra = {"files": len(paths), "pil_seconds": time.perf_counter() - t_ours, "same": ours == theirs}
        t1 = t_ours
    if task != "image_headers":
        t1 = time.perf_counter()
    c1 = cpu()
    peak_kb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print("RESULT " + json.dumps({"seconds": t1 - t0, "cpu_seconds": c1 - c0, "import_seconds": t0 - t_import,
                                  "peak_mb": peak_kb / 1024, **extra}))
""")
TIME_GOAL, MEMORY_GOAL = 0.25, 0.3
# The floor: what prepare cannot do without, each a library call (or the header reads, 12x faster than PIL's),
# timed alone in one fresh process.  Spread perfectly over every core of the machine with nothing else to do,
# it still takes sum(CPU) / cores: no prepare on this machine can be faster than that.
FLOOR = [
    ("tracking", "`import mlflow` and the SQLite store opened (`MlflowClient().get_experiment_by_name`)"),
    ("plotting", "`import matplotlib.pyplot` (Agg) for the size histogram"),
    ("matlab", "`import scipy.io`, `loadmat` of CUHK-SYSU's Images.mat and Person.mat"),
    ("coco", "COCO json read and decoded by msgspec into the typed structs (whole file, polygons skipped)"),
    ("headers", "image headers of the COCO images with persons and the CUHK-SYSU scenes"),
]
FOUR_TIME_GOAL, FOUR_MEMORY_GOAL = 1.0, 0.5  # issue 13: beats the COCO load at <= 1/2 its memory
# Where prepare's time goes: functions profiled by (file name, function name); a stage that a later
# version renames or moves shows 0.0.
STAGES = [
    ("json_chunks.py:decode_member_in_pieces", "COCO json decoded in pieces (msgspec typed structs)"),
    ("coco.py:read_coco_persons", "COCO persons (decoding included): ids, boxes, clipping"),
    ("imagefiles.py:image_sizes", "image headers (COCO images with persons + CUHK-SYSU)"),
    ("matlab.py:load_mat", "CUHK-SYSU .mat files loaded (scipy.io.loadmat, its import included)"),
    ("cuhk_sysu.py:read_scenes_mat", "CUHK-SYSU Images.mat read (loading included)"),
    ("prepare.py:read_cuhk_identities", "CUHK-SYSU identities (Person.mat, loading included)"),
    ("cuhk_sysu.py:cuhk_to_coco", "CUHK-SYSU converted"),
    ("merge.py:merge", "merge (digests included)"),
    ("merge.py:records_digest", "content digests (msgpack sorted encoding + sha256)"),
    ("stats.py:describe", "relative sizes and statistics (one pass)"),
    ("merge.py:write_dataset", "train.json written"),
    ("stats.py:plot_relative_sizes", "size histogram (matplotlib, its import included)"),
    ("stats.py:draw_checks", "annotation check images"),
    ("runs.py:open_run", "MLflow run started (mlflow import, experiment, run)"),
    ("runs.py:log_artifacts", "artifacts logged"),
    ("prepare.py:prepare", "whole prepare"),
]


def build_data(work: Path, sizes: dict, seed: int = 0) -> tuple[Path, Path]:
    """The COCO and CUHK-SYSU trees, written once per size set (temp dir + rename) and reused."""
    from persondet import synth

    tag = f"c{sizes['coco_images']}-k{sizes['cuhk_images']}-s{seed}"
    target = work / f"data-{tag}"
    marker = target / "COMPLETE"
    if not marker.exists():
        work.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".data-{tag}.", dir=work))
        try:
            # real COCO: ~4.1 persons per person image, ~5 other objects per image, ~640x480 photos
            synth.write_coco(tmp / "coco", seed=seed, train_images=sizes["coco_images"], val_images=50,
                             train_person_images=sizes["coco_person_images"], val_person_images=25,
                             size_range=((480, 360), (640, 480)), persons=(1, 7), others=(0, 10),
                             polygon_points=27, crowd_fraction=0.01, cheap_images=True)
            synth.write_cuhk(tmp / "cuhk", seed=seed, images=sizes["cuhk_images"], boxes=sizes["cuhk_boxes"],
                             pool_images=sizes["cuhk_pool"], identities=sizes["cuhk_identities"],
                             size_range=((640, 480), (960, 720)), person_height=(0.12, 0.4), cheap_images=True)
            (tmp / "COMPLETE").write_text(json.dumps(sizes))
            os.rename(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target / "coco", target / "cuhk"


def build_extra_data(work: Path, extra: dict, seed: int = 0) -> tuple[Path, Path]:
    """The CityPersons and CrowdHuman trees (train split at the given sizes), cached apart from COCO's."""
    from persondet import synth

    tag = f"p{extra['citypersons_images']}-h{extra['crowdhuman_images']}-s{seed}"
    target = work / f"extra-{tag}"
    if not (target / "COMPLETE").exists():
        work.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".extra-{tag}.", dir=work))
        try:
            synth.write_citypersons(tmp / "citypersons", seed=seed, train_images=extra["citypersons_images"],
                                    val_images=1, size=(2048, 1024), cheap_images=True)
            synth.write_crowdhuman(tmp / "crowdhuman", seed=seed, train_images=extra["crowdhuman_images"],
                                   val_images=1, size_range=((800, 600), (1400, 1000)),
                                   persons=extra["crowdhuman_persons"], cheap_images=True)
            (tmp / "COMPLETE").write_text(json.dumps(extra))
            os.rename(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target / "citypersons", target / "crowdhuman"


def count_odgt_boxes(path: Path) -> tuple[int, int]:
    """(lines, person boxes not ignored) of a CrowdHuman file, counted with json."""
    lines = persons = 0
    with open(path) as f:
        for line in f:
            lines += 1
            persons += sum(box["tag"] == "person" and not box.get("extra", {}).get("ignore", 0)
                           for box in json.loads(line)["gtboxes"])
    return lines, persons


def count_annotations(path: Path) -> int:
    """Annotations in a COCO file, counted as ``"iscrowd"`` keys without parsing it."""
    key, total, tail = b'"iscrowd"', 0, b""
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            chunk = tail + block
            total += chunk.count(key)
            tail = chunk[-(len(key) - 1):]  # too short to hold a whole key: nothing is counted twice
    return total


def measure(task: str, args: dict, cwd: Path, env: dict) -> dict:
    """Run one measurement in a fresh interpreter; returns seconds, import_seconds, peak_mb, process_seconds.

    ``peak_mb`` covers every process of the measurement at once: the largest total resident memory of the
    interpreter and all its descendants (prepare's worker process), sampled every ``SAMPLE_SECONDS``, and at
    least the ``getrusage`` max RSS the interpreter reports for itself and for its largest child.
    """
    with _common.Timer() as timer:
        proc = subprocess.Popen([sys.executable, "-c", _CHILD, task, json.dumps(args)], cwd=cwd, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        tree_peak = 0
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            import threading

            drains = [threading.Thread(target=shutil.copyfileobj, args=(src, dst)) for src, dst in
                      ((proc.stdout, out), (proc.stderr, err))]
            for drain in drains:
                drain.start()
            while proc.poll() is None:
                tree_peak = max(tree_peak, tree_rss(proc.pid))
                time.sleep(SAMPLE_SECONDS)
            for drain in drains:
                drain.join()
            out.seek(0), err.seek(0)
            stdout, stderr = out.read(), err.read()
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (stderr.strip().splitlines() or ["(no output)"])[-1]
        from persondet.errors import PersondetError

        raise PersondetError(f"{task} failed with exit status {proc.returncode}: {tail}")
    result = json.loads(lines[-1][len("RESULT "):])
    result["process_seconds"] = timer.seconds
    result["peak_mb"] = max(result["peak_mb"], tree_peak / 2**20)
    return result


SAMPLE_SECONDS = 0.01
_PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_rss(pid: int) -> int:
    """Resident bytes of process ``pid`` and all its descendants now (0 for a process that is gone)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/statm") as f:
                total += int(f.read().split()[1]) * _PAGE
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    todo.extend(int(child) for child in f.read().split())
        except (OSError, ValueError):  # it ended between two reads
            continue
    return total


def main(argv=None) -> None:
    parser = _common.base_parser(NAME, __doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/persondet-bench"),
                        help="cache for the generated data (default /tmp/persondet-bench)")
    parser.add_argument("--data-only", action="store_true", help="generate (or find) the cached data and stop")
    parser.add_argument("--repeat", type=int, default=1, help="measurements of each (best time, worst peak)")
    parser.add_argument("--compare", type=Path, help="an earlier result page of this benchmark to set side by side")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        from persondet.errors import PersondetError

        raise PersondetError(f"--repeat={args.repeat} must be >= 1")
    sizes = SMOKE if args.smoke else FULL
    extra = SMOKE_EXTRA if args.smoke else FULL_EXTRA

    load_before = _common.load_average()
    coco_root, cuhk_root = build_data(args.work, sizes)
    annotation_file = coco_root / "annotations" / "instances_train2017.json"
    file_mb = annotation_file.stat().st_size / 1e6
    n_annotations = count_annotations(annotation_file)
    citypersons_root, crowdhuman_root = build_extra_data(args.work, extra)
    odgt = crowdhuman_root / "annotation_train.odgt"
    crowdhuman_lines, crowdhuman_persons = count_odgt_boxes(odgt)
    if args.data_only:
        print(f"data: {coco_root} ({file_mb:.0f} MB annotation file), {cuhk_root}, {citypersons_root}, "
              f"{crowdhuman_root} ({crowdhuman_lines:,} images, {crowdhuman_persons:,} person boxes)")
        return
    roots = {"coco_root": str(coco_root), "cuhk_root": str(cuhk_root)}
    four_roots = {**roots, "citypersons_root": str(citypersons_root), "crowdhuman_root": str(crowdhuman_root)}

    runs = {"coco_load": [], "prepare": [], "prepare_four": []}
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="prepare-scale-", dir=args.work) as tmp:
            env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db",
                       PERSONDET_DEMO_HOME=str(Path(tmp) / "demo"), PYTHONPATH=str(_common.ROOT))
            env.pop("MLFLOW_RUN_ID", None)
            # a tracking store normally exists already: create the SQLite tables before measuring
            subprocess.run([sys.executable, "-c", "import mlflow; mlflow.MlflowClient().search_experiments()"],
                           cwd=tmp, env=env, check=True, capture_output=True)
            runs["coco_load"].append(measure("coco_load", {"annotation_file": str(annotation_file)}, Path(tmp), env))
            runs["prepare"].append(measure("prepare", {"roots": roots}, Path(tmp), env))
            runs["prepare_four"].append(measure("prepare", {"roots": four_roots, "mix": FOUR}, Path(tmp), env))
            if "headers" not in runs:
                listing = Path(tmp) / "images.txt"
                listing.write_text("\n".join(map(str, image_files(coco_root, cuhk_root))))
                runs["headers"] = [measure("image_headers", {"list": str(listing)}, Path(tmp), env)]
                runs["profile"] = [measure("prepare_profile", {"roots": roots, "stages": [key for key, _ in STAGES]},
                                           Path(tmp), env)]
                runs["floor"] = [measure("floor", {"list": str(listing), "annotation_file": str(annotation_file),
                                                   "cuhk_annotation": str(cuhk_root / "annotation")}, Path(tmp), env)]

    best = {k: min(v, key=lambda r: r["seconds"]) for k, v in runs.items()}
    peak = {k: max(r["peak_mb"] for r in v) for k, v in runs.items()}
    time_ratio = best["prepare"]["seconds"] / best["coco_load"]["seconds"]
    cpu_ratio = best["prepare"]["cpu_seconds"] / best["coco_load"]["cpu_seconds"]
    mem_ratio = peak["prepare"] / peak["coco_load"]
    goal = time_ratio <= TIME_GOAL and mem_ratio <= MEMORY_GOAL
    four_time = best["prepare_four"]["seconds"] / best["coco_load"]["seconds"]
    four_cpu = best["prepare_four"]["cpu_seconds"] / best["coco_load"]["cpu_seconds"]
    four_mem = peak["prepare_four"] / peak["coco_load"]
    four_goal = four_time < FOUR_TIME_GOAL and four_mem <= FOUR_MEMORY_GOAL
    header = ["measurement", "call wall time (s)", "call CPU time (s)", "process wall time (s)", "peak RSS (MB)"]
    rows = [[label, f"{best[k]['seconds']:.1f}", f"{best[k]['cpu_seconds']:.1f}", f"{best[k]['process_seconds']:.1f}",
             f"{peak[k]:.0f}"]
            for k, label in (("coco_load", "pycocotools `COCO(instances_train2017.json)` (anchor)"),
                             ("prepare", "persondet prepare, mix coco+cuhk (whole step, MLflow logging included)"),
                             ("prepare_four", f"persondet prepare, mix {FOUR} (whole step)"))]
    rows.insert(2, ["ratio prepare / anchor", f"{time_ratio:.2f}x", f"{cpu_ratio:.2f}x", "", f"{mem_ratio:.2f}x"])
    rows.append([f"ratio {FOUR} / anchor", f"{four_time:.2f}x", f"{four_cpu:.2f}x", "", f"{four_mem:.2f}x"])
    table = _common.markdown_table(header, rows)
    headers = best["headers"]
    table += "\n\n" + _common.markdown_table(
        ["image headers prepare reads", "files", "persondet `formats.imagesize` (s)", "`PIL.Image.open(p).size` (s)",
         "PIL / persondet", "same sizes"],
        [["COCO images with persons + CUHK-SYSU images", f"{headers['files']:,}", f"{headers['seconds']:.2f}",
          f"{headers['pil_seconds']:.2f}", f"{headers['pil_seconds'] / headers['seconds']:.1f}x",
          "yes" if headers["same"] else "NO"]])
    profile = best["profile"]["stages"]
    whole = profile["prepare.py:prepare"] or 1.0
    table += "\n\nWhere the time goes (one run under cProfile, all in one process (no worker), which slows " \
             "Python-heavy parts more than C calls; nested rows are included in the rows above them):\n\n" + _common.markdown_table(
                 ["stage", "function", "cumulative (s)", "share of prepare"],
                 [[label, f"`{key}`", f"{profile[key]:.2f}", f"{profile[key] / whole:.0%}"] for key, label in STAGES])
    floor_table, floor_note = floor_summary(best["floor"]["steps"], best["prepare"], best["coco_load"]["seconds"])
    table += "\n\n" + floor_table
    if args.compare:
        table += "\n\n" + compare_table(args.compare, best, peak, time_ratio, mem_ratio)
    niceness = os.nice(0)
    method = (f"Data generated by `persondet.synth` at {'smoke (tiny)' if args.smoke else 'the real'} scale: "
              f"COCO annotation file {file_mb:.0f} MB ({sizes['coco_images']:,} images, {n_annotations:,} annotations, "
              f"{sizes['coco_person_images']:,} with persons, all 80 categories, polygon segmentations); "
              f"CUHK-SYSU {sizes['cuhk_images']:,} image files, {sizes['cuhk_boxes']:,} boxes in Images.mat; "
              f"for the four-source prepare also CityPersons {extra['citypersons_images']:,} train images of "
              f"2048 x 1024 (anno_train.mat) and CrowdHuman {crowdhuman_lines:,} train images with "
              f"{crowdhuman_persons:,} person boxes in a {odgt.stat().st_size / 1e6:.0f} MB annotation_train.odgt. "
              f"Each measurement in a fresh Python process (call wall and CPU time, CPU = user + system; process "
              f"time adds interpreter start and imports; peak = the largest total resident memory of the process and all its worker processes together, sampled every 10 ms, and at least the getrusage max RSS of any one of them), "
              f"best of {args.repeat}; MLflow tracking to a SQLite store whose tables were created beforehand "
              f"(as a user's store would be; creating them costs a further ~8 s once)"
              f"{f'; processes at niceness {niceness}' if niceness else ''}.")
    notes = (f"**Goal** (issue 15: prepare in at most {TIME_GOAL}x the time of the COCO load alone, at most "
             f"{MEMORY_GOAL}x its peak memory): {'met' if goal else 'NOT met'} (time ratio {time_ratio:.2f}, "
             f"memory ratio {mem_ratio:.2f}; CPU-time ratio {cpu_ratio:.2f}). Absolute times vary with the "
             "machine's load (see the load average); the ratios come from the same run, and the CPU-time ratio "
             "moves least with the load.")
    notes += "\n\n" + floor_note
    notes += (f"\n\n**Goal** (issue 13: prepare of {FOUR} faster than the COCO load alone, at most "
              f"{FOUR_MEMORY_GOAL}x its peak memory): {'met' if four_goal else 'NOT met'} (time ratio {four_time:.2f}, "
              f"memory ratio {four_mem:.2f}; CPU-time ratio {four_cpu:.2f}).")
    out = _common.write_result(args.output, "Prepare at the real scale", method, table, notes, load_before)
    print(table)
    print(notes)
    print(f"written: {out}")


def floor_summary(steps: dict, prepare: dict, anchor_seconds: float) -> tuple[str, str]:
    """The floor's table (each step's wall and CPU time, their sum, the least wall time on this machine's
    cores) and a note setting it beside the goal and beside prepare's own work (its CPU time beyond it)."""
    cores = _common.cores()
    total = sum(cpu for _, cpu in steps.values())
    least = total / cores
    rows = [[label, f"{steps[key][0]:.2f}", f"{steps[key][1]:.2f}"] for key, label in FLOOR]
    rows.append(["**sum: the floor's CPU time**", f"{sum(w for w, _ in steps.values()):.2f}", f"{total:.2f}"])
    rows.append([f"least wall time on {cores} cores (CPU / cores), ratio to the anchor", "",
                 f"{least:.2f} s = {least / anchor_seconds:.2f}x"])
    table = ("The floor: the library work prepare cannot do without, each step alone in one fresh process "
             "(cyclic GC off, as prepare has it):\n\n"
             + _common.markdown_table(["step", "wall (s)", "CPU (s)"], rows))
    own = prepare["cpu_seconds"] - total
    note = (f"**The floor.** Those library steps alone take {total:.1f} s of CPU: on this machine's {cores} cores "
            f"no prepare can take less than {least:.1f} s ({least / anchor_seconds:.2f}x the anchor), against "
            f"{TIME_GOAL}x x {anchor_seconds:.1f} s = {TIME_GOAL * anchor_seconds:.1f} s allowed. prepare "
            f"used {prepare['cpu_seconds']:.1f} s of CPU: {own:.1f} s beyond the floor for persondet's own work "
            f"(records, checks, merge, statistics, digests, writing, the plot and check images, logging, worker "
            f"processes).")
    return table, note


def image_files(coco_root: Path, cuhk_root: Path) -> list[Path]:
    """The files whose headers prepare reads: COCO images holding persons, every CUHK-SYSU scene."""
    from persondet.formats.coco import read_coco_persons

    persons = read_coco_persons(coco_root / "annotations" / "instances_train2017.json")
    scenes = cuhk_root / "Image" / "SSM"
    return [coco_root / "train2017" / im["file_name"] for im in persons.images] + sorted(scenes.iterdir())


def compare_table(page: Path, best: dict, peak: dict, time_ratio: float, mem_ratio: float) -> str:
    """Before (an earlier page of this benchmark, e.g. measured on the previous commit) and now."""
    from persondet.errors import PersondetError

    text = page.read_text() if page.is_file() else ""
    header, rows = [], {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "measurement":
            header = cells
        for key, prefix in (("coco_load", "pycocotools"), ("prepare", "persondet prepare"), ("ratio", "ratio")):
            if cells[0].startswith(prefix) and key not in rows:  # the first: coco+cuhk
                rows[key] = dict(zip(header, cells))
    if set(rows) != {"coco_load", "prepare", "ratio"} or "call wall time (s)" not in header:
        raise PersondetError(f"--compare={str(page)!r}: not a result page of this benchmark")
    load = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("**CPU load")), "?")
    wall, cpu, rss = "call wall time (s)", "call CPU time (s)", "peak RSS (MB)"
    table = _common.markdown_table(
        ["", "anchor wall (s)", "prepare wall (s)", "prepare CPU (s)", "prepare peak RSS (MB)", "time ratio",
         "CPU-time ratio", "memory ratio"],
        [["before", rows["coco_load"][wall], rows["prepare"][wall], rows["prepare"].get(cpu, "-"),
          rows["prepare"][rss], rows["ratio"][wall], rows["ratio"].get(cpu, "-"), rows["ratio"][rss]],
         ["now", f"{best['coco_load']['seconds']:.1f}", f"{best['prepare']['seconds']:.1f}",
          f"{best['prepare']['cpu_seconds']:.1f}", f"{peak['prepare']:.0f}", f"{time_ratio:.2f}x",
          f"{best['prepare']['cpu_seconds'] / best['coco_load']['cpu_seconds']:.2f}x", f"{mem_ratio:.2f}x"]])
    return f"Before and after (the earlier page: {page.name}; its load {load.rstrip('.')}):\n\n{table}"


if __name__ == "__main__":
    _common.run(main)
