"""Per-epoch validation under DDP is shared by all ranks: each infers its shard, rank 0 scores the gathered
detections, and the numbers are those of one process (torchrun, gloo, CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import evalkit

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "ddp_validate_worker.py"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    return env


@pytest.mark.slow
def test_two_gloo_processes_give_the_val_ap50_of_one(tmp_path):
    annotations = evalkit.write_test_set(tmp_path / "val", n_images=9, category=(1, "person"), seed=5)
    one = subprocess.run([sys.executable, str(WORKER), str(annotations), str(tmp_path / "one.json")],
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    # its own process group: a hang is ended with its workers, not left behind as orphans
    launcher = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                 "--nproc_per_node", "2", str(WORKER), str(annotations), str(tmp_path / "two.json")],
                                env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    try:
        _, stderr = launcher.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(launcher.pid, signal.SIGKILL)
        launcher.communicate()
        raise
    assert launcher.returncode == 0, stderr[-3000:]
    alone, shared = json.loads((tmp_path / "one.json").read_text()), json.loads((tmp_path / "two.json").read_text())
    assert (alone["world_size"], shared["world_size"]) == (1, 2)
    assert shared["metrics"] == alone["metrics"]
    # the gathered detections are one process's, in its order (the untrained model's boxes seldom hit: the
    # detections themselves are what shows the union is complete)
    assert len(alone["gathered"]["detections"]) > 50
    assert shared["gathered"] == alone["gathered"]
    # each rank inferred its own part of the 9 images, not all of them
    assert [(tmp_path / f"two.rank{r}").read_text() for r in (0, 1)] == ["5", "4"]
    assert (tmp_path / "one.rank0").read_text() == "9"
