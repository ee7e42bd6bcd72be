"""The stage-two scale benchmark's device script in its DRY_RUN mode (what CI can run of it)."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_stage_two_script_dry_run(tmp_path):
    """bench/gpu_stage_two.sh DRY_RUN=1: a CIFAR-100-LT-shaped bank, generate and every stage-two step, one table."""
    out = tmp_path / "out"
    env = dict(os.environ, DRY_RUN="1", OUT=str(out), WORK=str(tmp_path / "work"), PYTHON=sys.executable)
    done = subprocess.run(["bash", "bench/gpu_stage_two.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = json.loads((out / "scale.json").read_text())["rows"]
    steps = {r["step"]: r for r in rows}
    assert set(steps) == {"generate (defaults)", "GLAG (defaults)", "post-hoc LA", "cRT", "tau-norm"}
    assert all(r["exit"] == 0 and r["seconds"] > 0 and r["peak_gib"] > 0 for r in rows)
    assert steps["generate (defaults)"]["store_gib"] < 2 * steps["generate (defaults)"]["bank_train_gib"]
    assert steps["GLAG (defaults)"]["projected"] and "projected from 1 epoch" in (out / "scale.md").read_text()
