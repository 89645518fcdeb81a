"""prepare's worker process (persondet.worker): same outputs as in one process, errors as one line, no run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import prepare_fixtures as fx
from persondet.config import PrepareConfig
from persondet.prepare import prepare

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def _run(args: list[str], tmp_path: Path, code: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
           "PERSONDET_DEMO_HOME": str(tmp_path / "demo"), "PYTHONPATH": f"{REPO}{os.pathsep}{TESTS}"}
    env.pop("MLFLOW_RUN_ID", None)
    command = [sys.executable, "-c", code] if code else [sys.executable, str(TESTS / "prepare_in_worker.py")]
    return subprocess.run([*command, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_worker_outputs_are_those_of_one_process(tmp_path, monkeypatch):
    """The entry point in a fresh interpreter reads and writes in a worker; every output file is the same,
    byte for byte, as a prepare that does everything in this process."""
    coco, cuhk = fx.make_coco_tree(tmp_path / "coco"), fx.make_cuhk_tree(tmp_path / "cuhk")
    proc = _run(["--coco-root", str(coco), "--cuhk-root", str(cuhk), "--output-dir", str(tmp_path / "worker")],
                tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[-1] == "WORKERS 1 build_outputs"
    main, started = _workers(proc.stdout)
    assert started[0] == ("build_outputs", main)  # and that worker reads CUHK-SYSU in one of its own
    assert [name for name, _ in started[1:]] == ["_read_source"] and started[1][1] != main
    run_id = re.search(r"prepared run (\w+):", proc.stdout).group(1)

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/here.db")
    monkeypatch.setenv("PERSONDET_DEMO_HOME", str(tmp_path / "demo"))
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    here = prepare(PrepareConfig(coco_root=str(coco), cuhk_root=str(cuhk), output_dir=str(tmp_path / "here")),
                   worker=False)
    files = sorted(p.relative_to(here.output_dir) for p in here.output_dir.rglob("*") if p.is_file())
    assert Path("train.json") in files and Path("rel_size_hist.png") in files and len(files) == 5 + 2 + 3  # and the check images: 2 COCO, 3 CUHK-SYSU
    for name in files:
        assert (tmp_path / "worker" / name).read_bytes() == (here.output_dir / name).read_bytes(), name
    import mlflow

    logged = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(run_id)
    assert logged.info.status == "FINISHED" and logged.data.tags["persondet.data_digest"] == here.digest
    stats = json.loads((tmp_path / "worker" / "stats.json").read_text())
    assert stats == json.loads(json.dumps(here.stats))


def _workers(stdout: str) -> tuple[str, list[tuple[str, str]]]:
    """(the main process's pid, (function, pid of the process that started it) of each worker)."""
    main = re.search(r"^MAIN (\d+)$", stdout, re.M).group(1)
    return main, re.findall(r"^WORKER (\w+) FROM (\d+)$", stdout, re.M)


@pytest.mark.parametrize("coco_case", ["malformed_json", "missing_images"])
def test_first_source_error_wins_when_both_are_bad(tmp_path, coco_case):
    """Both sources bad, read at the same time in two processes: the error is the first source's (COCO), as
    when they are read one after the other; also when it is found by the check of COCO's image files, which
    the main process runs while the worker merges."""
    from test_prepare import _break

    coco, cuhk = fx.make_coco_tree(tmp_path / "coco"), fx.make_cuhk_tree(tmp_path / "cuhk")
    _, coco_error = _break(coco_case, coco, cuhk)
    _, cuhk_error = _break("truncated_mat", coco, cuhk)
    proc = _run(["--coco-root", str(coco), "--cuhk-root", str(cuhk)], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and re.search(coco_error, err) and not re.search(cuhk_error, err), err
    assert [name for name, _ in _workers(proc.stdout)[1]] == ["build_outputs", "_read_source"]
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("case", ["malformed_json", "missing_images", "empty_coco_image", "unreadable_image",
                                  "nan_person_idlocate"])
def test_worker_error_is_one_line_and_nothing_is_written(tmp_path, case):
    """A bad first source (COCO; its image files checked by the main process) or second (CUHK-SYSU, read in a
    worker of its own meanwhile): the error is the same one line, exit status 2, no output, no temporary
    folder, no tracking store."""
    from test_prepare import _break

    coco, cuhk = fx.make_coco_tree(tmp_path / "coco"), fx.make_cuhk_tree(tmp_path / "cuhk")
    extra, expected = _break(case, coco, cuhk)
    out_parent = tmp_path / "outputs"
    out_parent.mkdir()
    proc = _run(["--coco-root", str(coco), "--cuhk-root", str(cuhk), "--output-dir", str(out_parent / "prepared"),
                 *extra], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("persondet: error: ") and re.search(expected, err), err
    assert proc.stdout.splitlines()[-1] == "WORKERS 1 build_outputs"
    assert list(out_parent.iterdir()) == []
    assert not (tmp_path / "mlflow.db").exists()


WORKER_CASES = textwrap.dedent("""
    import json, os, time
    from persondet.errors import PersondetError
    from persondet.formats.coco import CocoFormatError
    from persondet.formats.imagesize import ImageHeaderError
    from persondet.worker import Worker, can_fork

    def value(a, note, b=0):
        note("half", a)
        return a + b

    def raises(error, note):
        raise error

    def dies(note):
        os._exit(3)

    def sleeps(note):
        note("started")
        time.sleep(60)

    def big_note(marker, note):
        note("big", "x" * 1_000_000)  # far more than a pipe holds
        open(marker, "w").close()
        return "done"

    out = {"can_fork": can_fork()}
    with Worker(value, 2, b=3) as w:
        out["note"], out["value"] = w.wait_for("half"), w.result()
    for name, error in (("coco", CocoFormatError("x.json: bad")), ("header", ImageHeaderError("a.jpg", "empty")),
                        ("bug", ValueError("oops")), ("died", None)):
        with Worker(raises, error) if error else Worker(dies) as w:
            try:
                w.result()
            except Exception as exc:
                out[name] = [type(exc).__name__, isinstance(exc, PersondetError), str(exc)]
    start = time.monotonic()
    with Worker(sleeps) as w:
        w.wait_for("started")
    out["stopped_in"] = time.monotonic() - start
    out["missing_note"] = Worker(value, 1).wait_for("never")
    with Worker(big_note, "sent-marker", background=True) as w:  # this process busy, not reading: the worker
        for _ in range(200):                                     # goes on all the same
            if os.path.exists("sent-marker"):
                break
            time.sleep(0.05)
        out["went_on"] = os.path.exists("sent-marker")
        out["big"], out["big_result"] = len(w.wait_for("big")), w.result()
    with Worker(dies, background=True) as w:
        try:
            w.result()
        except Exception as exc:
            out["died_background"] = str(exc)
    print(json.dumps(out))
""")


def test_worker_hands_back_notes_values_and_errors(tmp_path):
    proc = _run([], tmp_path, code=WORKER_CASES)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["can_fork"] is True  # a fresh interpreter runs one thread
    assert out["note"] == 2 and out["value"] == 5
    assert out["coco"] == ["CocoFormatError", True, "x.json: bad"]  # the class comes back when it pickles
    assert out["header"] == ["PersondetError", True, "a.jpg: unreadable image: empty"]  # else the message
    assert out["bug"][:2] == ["RuntimeError", False] and "ValueError: oops" in out["bug"][2]
    assert out["died"][:2] == ["RuntimeError", False] and "exit status 3" in out["died"][2]
    assert out["stopped_in"] < 10  # leaving the block stops a worker still running
    assert out["missing_note"] is None
    assert out["went_on"] and out["big"] == 1_000_000 and out["big_result"] == "done"  # background=True
    assert "exit status 3" in out["died_background"]


def test_build_outputs_hands_the_first_sources_image_check_to_the_caller(tmp_path):
    """In prepare's worker the first source's image check goes to the main process as the "check" note,
    before "plot"; a first source without one sends None, so the main process never waits for the worker's
    end to learn that there is nothing to check."""
    from persondet.formats.imagefiles import ImageFilesCheck
    from persondet.prepare import build_outputs, resolve_roots

    roots = {"coco_root": str(fx.make_coco_tree(tmp_path / "coco")),
             "cuhk_root": str(fx.make_cuhk_tree(tmp_path / "cuhk"))}
    for mix in ("coco", "cuhk"):
        notes = []
        config = PrepareConfig(mix=mix, **roots)
        build_outputs(config, mix, resolve_roots(config), tmp_path / "out" / mix, plot=False, in_worker=True,
                      note=lambda key, value=None: notes.append((key, value)))
        assert [key for key, _ in notes] == ["check", "plot"], mix
        check = notes[0][1]
        if mix == "coco":
            assert isinstance(check, ImageFilesCheck) and sorted(check.names) == ["000000000001.jpg",
                                                                                 "000000000002.jpg"]
            check.run()  # the images are there
        else:
            assert check is None
