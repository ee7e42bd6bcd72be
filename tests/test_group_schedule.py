"""Scheduling stage one as groups: `glag-reproduce --group-stage-one` and the GPU matrix script's DRY_RUN mode."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from glag.data.bank import Bank
from tests.test_reproduce import InProcess, reproduce

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--recipe", "digits", "--losses", "ce,graloss", "--seeds", "1", "--methods", "crt",
        "--extract-args", "--epochs 1 --threads 1", "--jobs", "1"]


def test_cpu_default_runs_stage_one_alone_and_cuda_groups_it(tmp_path, monkeypatch):
    listing = reproduce([*ARGS, "--runs-root", tmp_path, "--dry-run"], monkeypatch).output
    assert "group" not in listing and "glag-extract --dataset digits --loss ce --seed 0" in listing
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)         # auto: groups on CUDA
    listing = reproduce([*ARGS, "--runs-root", tmp_path, "--dry-run"], monkeypatch).output
    assert "stage one in 1 group(s)" in listing
    assert (f"[group 1/1] stage one (ce,graloss x seeds 0): to run: glag-extract-group --dataset digits --im 10.0 "
            f"--epochs 1 --threads 1 --losses ce,graloss --seeds 0 --runs-root {tmp_path}") in listing
    assert "[1/4] ce seed0 stage one: to run: in group 1" in listing
    capped = reproduce([*ARGS, "--runs-root", tmp_path, "--dry-run", "--group-stage-one", "2"], monkeypatch).output
    assert "--max-group 2" in capped


def test_grouped_reproduction_trains_stage_one_in_one_call(tmp_path, monkeypatch):
    launcher = InProcess()
    result = reproduce([*ARGS, "--runs-root", tmp_path, "--group-stage-one", "0"], monkeypatch, launcher)
    assert result.exit_code == 0, result.output
    modules = [m for m, _ in launcher.calls]
    assert modules == ["glag.extract.group_cli", "glag.classify.cli", "glag.classify.cli"]
    assert result.output.count("stage one: done, skipped") == 2          # the group wrote both banks
    for loss in ("ce", "graloss"):
        with Bank(tmp_path / "digits-im10" / loss / "seed0" / "bank.h5") as bank:
            assert bank.config["loss"] == loss and bank.config["epochs"] == 1
    log = (tmp_path / "digits-im10" / "logs" / "stage-one-group-1.log").read_text()
    assert "epoch 1/1" in log and "[graloss seed0]" in log and "2 banks written" in log
    # one bank lost: only its run is grouped again
    (tmp_path / "digits-im10" / "graloss" / "seed0" / "bank.h5").unlink()
    listing = reproduce([*ARGS, "--runs-root", tmp_path, "--group-stage-one", "0", "--dry-run"], monkeypatch).output
    assert "stage one (graloss x seeds 0)" in listing and "[1/4] ce seed0 stage one: done" in listing


@pytest.mark.slow
def test_gpu_matrix_script_dry_run(tmp_path):
    """bench/gpu_matrix.sh DRY_RUN=1: the device script's steps on the CPU, banks under $OUT/runs."""
    out = tmp_path / "out"
    env = dict(os.environ, DRY_RUN="1", OUT=str(out), PYTHON=sys.executable, LOSSES="ce,ldam", SEEDS="0")
    done = subprocess.run(["bash", "bench/gpu_matrix.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = (out / "summary.md").read_text()
    assert "schedule: 2 of the recipe's 2 epochs, --views 8" in summary and "banks written: 2" in summary
    assert "| 2 |" in summary                                             # bench_group's table
    for loss in ("ce", "ldam"):
        bank = out / "runs" / "digits-im10" / loss / "seed0" / "bank.h5"
        with Bank(bank) as b:
            assert b.config["views"] == 8
        assert not bank.with_name("bank.ckpt.pt").exists()               # only banks travel back
