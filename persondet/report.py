"""The ``report`` step: the study's tables and figures rebuilt from an experiment's runs.

Sections: dataset statistics (prepare runs' ``stats.json``, and the test set itself from the
``evaluation/test_stats.json`` its evaluation logged); training speed as time per batch for every hardware
(gpu_type x gpu_count) and training setup (model, input size, amp) and batch size (bar chart + ratio tables
between hardware of one setup: a small CPU model is never averaged with a ResNet-50, nor 256 px with 800 px);
AP50 by dataset mix (rows) and batch size (columns) from the training runs' ``<test_name>/AP50``, only runs
of one model evaluated on one version of the test set (``comparable_runs``: the caption says which); and the
coco-only and merged models' detections side by side on the same test images (the detections ``evaluate``
logged: nothing is re-run).  Written as one static ``report.html`` (images embedded) and logged, with the
figures and tables, as artifacts of a report run.
"""

from __future__ import annotations

import base64
import html
import json
import os
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from persondet.config import PrepareConfig, ReportConfig
from persondet.datasets import BASELINE_MIX, SOURCES, is_merged, mix_name, mix_problem, mix_sort_key
from persondet.errors import PersondetError
from persondet.servers import SERVER_TAG
from persondet.tracking import open_run, run_name
from persondet.tracking.search import download_artifact, get_run, search_runs
from persondet.summary import (ap50_cells, ap50_table, as_number, champion_text, compare_runs_url,
                               experiment_url, markdown_table, ui_hint)


# --- tables ---------------------------------------------------------------------------------------

def dataset_label(name: str, params: dict[str, str]) -> str:
    """A source's row name: the source, plus the reader settings that change its data when not at their
    defaults (``citypersons (reasonable)``, ``crowdhuman (val, vbox)``); CUHK-SYSU always shows its split."""
    source = SOURCES.get(name)
    if source is None:
        return name
    defaults = PrepareConfig.__dataclass_fields__
    shown = [params[o] for o in source.options if params.get(o) and
             (o == "cuhk_split" or o not in defaults or params[o] != str(defaults[o].default))]
    return f"{name} ({', '.join(shown)})" if shown else name


def datasets_table(prepare_runs, workdir: str) -> list[list[str]]:
    """One row per dataset (each source with its settings, each merged mix), the newest prepare run winning."""
    rows: dict[str, list[str]] = {}
    for run in prepare_runs:  # newest first
        target = os.path.join(workdir, run.info.run_id)
        local = (download_artifact(run.info.run_id, "prepared/stats.json", target)
                 or download_artifact(run.info.run_id, "stats.json", target))
        if not local:
            continue
        stats = json.loads(Path(local).read_text())
        mix = run.data.params.get("mix", "")
        mix = mix if mix_problem(mix) else mix_name(mix)  # cuhk+coco: the coco+cuhk row
        for key, value in stats.items():
            if not isinstance(value, dict) or "images" not in value:
                continue
            if key == "merged" and not is_merged(mix):  # one source: its own row says it all
                continue
            name = mix if key in ("merged", "all", "total") else dataset_label(key, run.data.params)
            if name not in rows:
                rel = as_number(value.get("avg_rel_size"))
                rows[name] = [name, str(value.get("images", "")), str(value.get("objects", "")),
                              "" if rel is None else f"{rel:.4f}"]
    ordered = sorted(rows.values(), key=lambda r: mix_sort_key(r[0].split(" ")[0]))
    return [["dataset", "images", "objects", "avg_rel_size"], *ordered]


def training_setup(params: dict[str, str]) -> str:
    """What a time per batch depends on besides the hardware: model, input size (shorter/longer side) and
    amp, as a label (``small 320/512px``, ``fasterrcnn_resnet50_fpn 800/1333px bf16``); '' when the run
    logged none of them."""
    model = params.get("model_resolved") or params.get("model", "")
    low = params.get("min_size_resolved") or params.get("min_size", "")
    high = params.get("max_size_resolved") or params.get("max_size", "")
    size = f"{low}/{high}px" if as_number(low) is not None and as_number(high) is not None else ""
    amp = params.get("amp", "none")
    return " ".join(part for part in (model, size, "" if amp in ("", "none") else amp) if part)


SETUP_SEPARATOR = " | "


def speed_table(train_runs) -> dict[tuple[str, int], float]:
    """(configuration, batch size) -> mean time per batch (s) over the runs of that configuration: the
    hardware (a launch's server first) and the training setup (``training_setup``), so that only runs of
    the same hardware, model, input size and amp are averaged."""
    values: dict[tuple[str, int], list[float]] = defaultdict(list)
    for run in train_runs:
        t = run.data.metrics.get("time_per_iter_s")
        bs = as_number(run.data.params.get("batch_size"))
        if t is None or bs is None:
            continue
        gpu = run.data.params.get("gpu_type", "?")
        count = run.data.params.get("gpu_count", "0")
        label = gpu if gpu == "cpu" or count in ("", "0") else f"{gpu} x{count}"
        if run.data.tags.get(SERVER_TAG):  # a launch's run: the servers side by side
            label = f"{run.data.tags[SERVER_TAG]}: {label}"
        setup = training_setup(run.data.params)
        values[(label + (SETUP_SEPARATOR + setup if setup else ""), int(bs))].append(float(t))
    return {k: sum(v) / len(v) for k, v in values.items()}


def _setup_of(config: str) -> str:
    return config.split(SETUP_SEPARATOR, 1)[1] if SETUP_SEPARATOR in config else ""


def speed_rows(speed: dict[tuple[str, int], float]) -> tuple[list[list[str]], list[list[list[str]]]]:
    """The time-per-batch table and, per batch size and training setup, a matrix of speed ratios between
    the hardware configurations that ran that setup (never a ratio between two models or input sizes)."""
    configs = sorted({c for c, _ in speed}, key=lambda c: (_setup_of(c), c))
    sizes = sorted({b for _, b in speed})
    table = [["configuration", *[f"batch {b}: s/batch" for b in sizes]]]
    for c in configs:
        table.append([c, *[f"{speed[(c, b)]:.4f}" if (c, b) in speed else "-" for b in sizes]])
    ratios = []
    for b in sizes:
        for setup in sorted({_setup_of(c) for c in configs}):
            present = [c for c in configs if (c, b) in speed and _setup_of(c) == setup]
            title = f"batch {b}{', ' + setup if setup else ''}: row is N x faster than column"
            matrix = [[title, *present]]
            for row in present:
                matrix.append([row, *[f"{speed[(col, b)] / speed[(row, b)]:.2f}" for col in present]])
            ratios.append(matrix)
    return table, ratios


def choose_test_name(train_runs, wanted: str = "") -> str:
    if wanted:
        return wanted
    counts = Counter(key[: -len("/AP50")] for run in train_runs for key in run.data.metrics
                     if key.endswith("/AP50"))
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] if counts else ""


def comparable_runs(train_runs, test_name: str) -> tuple[list, str]:
    """The training runs whose ``<test_name>/AP50`` may share one table: one model (``model_resolved``)
    evaluated on one version of the test set (the ``<test_name>/digest`` tag ``evaluate`` sets), the group
    with the most runs (the newest run's on a tie); and a caption saying which, and what was left out."""
    scored = [r for r in train_runs if f"{test_name}/AP50" in r.data.metrics]
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for run in scored:  # newest first
        model = run.data.params.get("model_resolved") or run.data.params.get("model", "?")
        groups[(model, run.data.tags.get(f"{test_name}/digest", "?"))].append(run)
    if not groups:
        return [], ""
    (model, digest), runs = max(groups.items(), key=lambda kv: len(kv[1]))  # max keeps the first on a tie
    left = len(scored) - len(runs)
    caption = (f"model {model}, test set {test_name} digest {digest}"
               + (f"; {left} run(s) of another model or test-set version left out" if left else ""))
    return runs, caption


def test_set_row(train_runs, test_name: str, workdir: Path) -> list[str] | None:
    """The test set as a dataset-table row (images, objects, avg_rel_size), from the ``test_stats.json``
    the newest evaluation of these runs logged; None when none did."""
    for run in train_runs:
        run_id = run.data.tags.get(f"{test_name}/evaluation_run_id", "")
        local = download_artifact(run_id, "evaluation/test_stats.json", str(workdir / run_id)) if run_id else None
        if local:
            stats = json.loads(Path(local).read_text())
            rel = as_number(stats.get("avg_rel_size"))
            return [f"{test_name} (test set)", str(stats.get("images", "")), str(stats.get("objects", "")),
                    "" if rel is None else f"{rel:.4f}"]
    return None


# --- figures --------------------------------------------------------------------------------------

def speed_chart(speed: dict[tuple[str, int], float], out_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    configs = sorted({c for c, _ in speed})
    sizes = sorted({b for _, b in speed})
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(configs) + 2), 4))
    width = 0.8 / max(1, len(sizes))
    x = np.arange(len(configs))
    for i, b in enumerate(sizes):
        ax.bar(x + i * width, [speed.get((c, b), 0.0) for c in configs], width, label=f"batch {b}")
    ax.set_xticks(x + width * (len(sizes) - 1) / 2)
    ax.set_xticklabels(configs, rotation=15, ha="right")
    ax.set_ylabel("time per batch (s)")
    ax.set_title("training speed by GPU configuration")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)


def _best_run(train_runs, accept, test_name: str):
    scored = [r for r in train_runs if accept(r.data.params.get("dataset_mix", ""))
              and f"{test_name}/AP50" in r.data.metrics]
    return max(scored, key=lambda r: r.data.metrics[f"{test_name}/AP50"], default=None)


def _logged_evaluation(train_run, test_name: str, workdir: Path):
    """(evaluation run, its detections) that ``evaluate`` logged for a training run on ``test_name``."""
    run_id = train_run.data.tags.get(f"{test_name}/evaluation_run_id", "")
    evaluation = get_run(run_id) if run_id else None
    local = download_artifact(run_id, "evaluation/detections.json", str(workdir / run_id)) if evaluation else None
    return (evaluation, json.loads(Path(local).read_text())) if local else (None, None)


def side_by_side(train_runs, test_name: str, examples: int, out_dir: Path, workdir: Path) -> list[Path]:
    """The best baseline (coco-only) and best merged-data models' detections side by side on the same test
    images: the detections ``evaluate`` logged (``evaluation/detections.json`` of the evaluation run each
    training run names in its ``<test_name>/evaluation_run_id`` tag), drawn, not recomputed."""
    from PIL import Image

    from persondet.evaluation import detections_by_image, draw_example, gt_boxes_by_image, load_test_set

    best = [_best_run(train_runs, lambda mix: mix == BASELINE_MIX, test_name),
            _best_run(train_runs, is_merged, test_name)]
    if not (all(best) and examples):
        return []
    logged = [_logged_evaluation(run, test_name, workdir) for run in best]
    evaluations = [evaluation for evaluation, _ in logged]
    if not all(evaluations) or len({e.data.params.get("test_digest") for e in evaluations}) != 1:
        return []  # not evaluated by this version of `evaluate`, or on two versions of the test set
    p = evaluations[0].data.params
    test_set = load_test_set(p["test_annotations_path"], p.get("test_images_path", ""),
                             p.get("person_category_id") or p.get("person_category", "person"), test_name,
                             digest=False)  # only a few images are drawn: no need to hash every one
    ids = sorted(test_set.image_paths)[:examples]
    gt = gt_boxes_by_image(test_set)
    panels: dict[int, list[Path]] = defaultdict(list)
    for run, (_, detections) in zip(best, logged):
        label = run.data.params.get("dataset_mix", "")
        by_image = detections_by_image(detections)
        ap = run.data.metrics[f"{test_name}/AP50"]
        for i in ids:
            path = out_dir / f"panel_{label.replace('+', '_')}_{i}.png"
            draw_example(test_set.image_paths[i], gt.get(i, []), by_image.get(i, []),
                         path, title=f"{label} (AP50 {ap:.3f})")
            panels[i].append(path)
    outputs = []
    for i in ids:
        left, right = (Image.open(p).convert("RGB") for p in panels[i])
        canvas = Image.new("RGB", (left.width + right.width + 8, max(left.height, right.height)), "white")
        canvas.paste(left, (0, 0))
        canvas.paste(right, (left.width + 8, 0))
        out = out_dir / f"side_by_side_{i}.png"
        canvas.save(out)
        outputs.append(out)
        for p in panels[i]:
            p.unlink()
    return outputs


# --- html -----------------------------------------------------------------------------------------

def _html_table(rows: list[list[str]]) -> str:
    if len(rows) < 2:
        return "<p><em>no runs with this information</em></p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:])
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def outcome_html(champion: str, compare_url: str, compared: int, runs_url: str) -> str:
    """The study's outcome: the champion and why, and links to the MLflow UI: the experiment's runs and the
    comparison of the runs in the AP50 table."""
    parts = ["<h2>Outcome</h2>", f"<p id='champion'>{html.escape(champion)}</p>"]
    if compare_url:
        hint = ui_hint()
        parts.append(f"<p>In the MLflow UI{f' (after <code>{html.escape(hint)}</code>)' if hint else ''}: "
                     f"<a id='experiment-runs' href='{html.escape(runs_url)}'>the experiment's runs</a>, "
                     f"<a id='compare-runs' href='{html.escape(compare_url)}'>Compare the {compared} training "
                     "runs</a></p>")
    return "".join(parts)


def render_html(experiment: str, test_name: str, stats, speed_tab, ratios, ap_tab, chart, examples,
                caption: str = "", outcome: str = "") -> str:
    parts = [f"<h1>persondet study: {html.escape(experiment)}</h1>", outcome,
             "<h2>Datasets</h2>", _html_table(stats),
             "<h2>Training speed (time per batch)</h2>", _html_table(speed_tab)]
    parts += [_html_table(m) for m in ratios]
    if chart:
        parts.append(_img(chart))
    parts += [f"<h2>AP50 on {html.escape(test_name or '(no evaluated test set)')}</h2>",
              f"<p>{html.escape(caption)}</p>" if caption else "", _html_table(ap_tab),
              "<h2>coco-only vs merged model (green: ground truth, red: detections)</h2>"]
    parts += [_img(p) for p in examples] or [f"<p><em>needs a {BASELINE_MIX}-only and a merged-data model, "
                                            "both evaluated on this test set</em></p>"]
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #999;padding:4px 8px;text-align:right}img{max-width:100%;margin:4px}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>persondet report</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def report(config: ReportConfig) -> dict[str, Any]:
    train_runs = search_runs(config.experiment, "train", "FINISHED")
    prepare_runs = search_runs(config.experiment, "prepare", "FINISHED")
    if not (train_runs or prepare_runs):
        raise PersondetError(f"experiment={config.experiment!r} has no finished prepare or train runs to report on")
    test_name = choose_test_name(train_runs, config.test_name)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report"
        out.mkdir()
        stats = datasets_table(prepare_runs, str(Path(tmp) / "downloads"))
        speed = speed_table(train_runs)
        speed_tab, ratios = speed_rows(speed)
        chart = None
        if speed:
            chart = out / "time_per_batch.png"
            speed_chart(speed, chart)
        compared, caption = comparable_runs(train_runs, test_name)
        ap_tab = ap50_table(compared, test_name)
        test_row = test_set_row(compared, test_name, Path(tmp) / "test_stats")
        if test_row:
            stats.append(test_row)
        examples = side_by_side(compared, test_name, config.examples, out, Path(tmp) / "evaluations")
        in_table = list(ap50_cells(compared, test_name).values())
        promote_runs = search_runs(config.experiment, "promote", "FINISHED")
        champion = champion_text(promote_runs[0] if promote_runs else None)
        compare_url = compare_runs_url([r.info.run_id for r in in_table],
                                       [r.info.experiment_id for r in in_table]) if in_table else ""
        outcome = outcome_html(champion, compare_url, len(in_table),
                               experiment_url(in_table[0].info.experiment_id) if in_table else "")
        page = render_html(config.experiment, test_name, stats, speed_tab, ratios, ap_tab, chart, examples,
                           caption, outcome)
        (out / "report.html").write_text(page)
        (out / "tables.md").write_text(
            "## datasets\n\n" + markdown_table(stats) + "\n## time per batch\n\n" + markdown_table(speed_tab) + "\n"
            + "".join(markdown_table(m) + "\n" for m in ratios) + f"## AP50 on {test_name}\n\n{caption}\n\n"
            + markdown_table(ap_tab))
        with open_run("report", run_name=run_name("report"),
                      tags={"persondet.test_name": test_name}) as run:
            run.log_params(config.to_params())
            run.log_artifacts(str(out), "report")
            run_id = run.run_id
        html_path = None
        if config.output_dir:
            target = Path(config.output_dir)
            target.mkdir(parents=True, exist_ok=True)
            tmp_html = target / ".report.html.tmp"
            tmp_html.write_text(page)
            os.replace(tmp_html, target / "report.html")
            html_path = str(target / "report.html")
    print(markdown_table(ap_tab) if len(ap_tab) > 1 else "no AP50 results yet")
    return {"run_id": run_id, "test_name": test_name, "ap50": ap_tab, "ap50_caption": caption,
            "champion": champion, "compare_url": compare_url, "speed": speed_tab, "ratios": ratios,
            "stats": stats, "examples": len(examples), "html": html_path}
