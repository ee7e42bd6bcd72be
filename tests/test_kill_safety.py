"""kill -9 at several points of glag-generate, glag-classify run and glag-extract, then a rerun: the
result equals an uninterrupted run's, no stray file is left, and the rerun says which temp file of the
killed process it removed (glag.data.atomic names temps by PID and host, so a dead writer's are known).
"""
import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import pytest
from click.testing import CliRunner

from glag.classify.cli import main as classify
from glag.data.atomic import remove_stale_temps
from glag.generate.cli import main as generate
from glag.generate.toybank import exp_counts, write_toy_bank
from tests.conftest import write_tiny_bank

STALE = "temp file(s) of killed processes"


def as_in_a_terminal():
    """Run in a child before it starts: Ctrl-C's default action, whatever this runner inherited (a background
    job ignores SIGINT, and a Python started so never installs its KeyboardInterrupt handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Started:
    """A CLI in a fresh Python; `saw(pattern)` is true once a line of its output matched."""

    def __init__(self, module: str, *args, cwd=None):
        cmd = [sys.executable, "-c", f"from {module} import main; main()", *map(str, args)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
                                     preexec_fn=as_in_a_terminal)
        self.lines = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def saw(self, pattern: str) -> bool:
        """A line matched the regular expression `pattern`."""
        return any(re.search(pattern, line) for line in list(self.lines))

    def kill_when(self, ready, timeout=90) -> bool:
        """SIGKILL the process as soon as ready() holds; False if it finished first."""
        deadline = time.time() + timeout
        while self.proc.poll() is None:
            if ready():
                self.proc.kill()
                self.proc.wait()
                return True
            assert time.time() < deadline, "".join(self.lines)
            time.sleep(0.002)
        assert self.proc.returncode == 0, "".join(self.lines)
        return False


def temps(folder: Path) -> list:
    return sorted(p for p in folder.glob(".*.tmp")) if folder.is_dir() else []


def invoke(main, *args):
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res


# ---------------------------------------------------------------- glag-generate
GEN = ["--jobs", 1, "--sample-per-class", 200]
TOY = dict(counts=exp_counts(24, 500, 50), feature_dim=512, seed=1)   # a store of ~10 MB: time to kill mid-write


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """The store fingerprint of an uninterrupted run."""
    bank = write_toy_bank(tmp_path_factory.mktemp("ref") / "bank.h5", **TOY)
    invoke(generate, "--bank", bank, *GEN)
    latest = json.loads((bank.parent / "synthetic" / "latest.json").read_text())
    with h5py.File(bank.parent / "synthetic" / latest["store"], "r") as f:
        return f.attrs["fingerprint"]


def _store_half_written(synthetic: Path):
    return lambda: any(p.stat().st_size > 100_000 for p in temps(synthetic))


@pytest.mark.parametrize("point", ["after-fit", "mid-store"])
def test_generate_killed_then_rerun_equals_an_uninterrupted_run(point, generated, tmp_path):
    bank = write_toy_bank(tmp_path / "bank.h5", **TOY)
    synthetic = bank.parent / "synthetic"
    run = Started("glag.generate.cli", "--bank", bank, *GEN)
    ready = (lambda: run.saw(r"^fit: ")) if point == "after-fit" else _store_half_written(synthetic)
    assert run.kill_when(ready)
    left = temps(synthetic)
    assert left or point == "after-fit"
    res = invoke(generate, "--bank", bank, *GEN)
    assert (STALE in res.output) == bool(left)
    name = json.loads((synthetic / "latest.json").read_text())["store"]
    assert sorted(p.name for p in synthetic.iterdir()) == sorted([name, "latest.json"])
    with h5py.File(synthetic / name, "r") as f:
        assert f.attrs["fingerprint"] == generated        # the same generator (the name also hashes the bank's path)


# ---------------------------------------------------------------- glag-classify run
RUN = ["run", "--method", "crt", "--epochs", 8, "--run", "r", "--no-deploy", "--seed", 3]


def metrics(run: Path) -> dict:
    m = json.loads((run / "metrics.json").read_text())
    return {split: m[split]["overall"] for split in ("val", "test")}


@pytest.fixture(scope="module")
def classified(tmp_path_factory):
    bank = write_tiny_bank(tmp_path_factory.mktemp("ref") / "bank.h5")
    invoke(classify, *RUN, "--bank", bank, "--no-plots")
    return metrics(bank.parent / "stage2" / "r")


def _writing_run(stage2: Path):
    return lambda: any((p / "config.json").exists() for p in temps(stage2))


@pytest.mark.parametrize("point", ["mid-training", "mid-write"])
def test_classify_run_killed_then_rerun_equals_an_uninterrupted_run(point, classified, tmp_path):
    bank = write_tiny_bank(tmp_path / "bank.h5")
    stage2 = bank.parent / "stage2"
    # plots (matplotlib) keep the temp run folder open long enough to be caught while it fills
    run = Started("glag.classify.cli", *RUN, "--bank", bank, "--plots" if point == "mid-write" else "--no-plots")
    ready = (lambda: run.saw(r"stage-two epoch [3-7]/8")) if point == "mid-training" else _writing_run(stage2)
    assert run.kill_when(ready)
    left = temps(stage2)
    assert not (stage2 / "r").exists() and (left or point == "mid-training")
    res = invoke(classify, *RUN, "--bank", bank, "--no-plots")
    assert (STALE in res.output) == bool(left)
    assert [p.name for p in stage2.iterdir()] == ["r"]
    assert metrics(stage2 / "r") == classified


# ---------------------------------------------------------------- glag-extract (digits, 2 epochs)
EXTRACT = ["--dataset", "digits", "--epochs", 4, "--threads", 1, "--no-current"]


@pytest.mark.slow
def test_extract_killed_while_writing_then_rerun_equals_an_uninterrupted_run(tmp_path):
    """Killed right after its first epoch, often with a temp file open (a checkpoint or the bank; how often
    depends on the machine's load, so the temp is required only when one was left); the rerun resumes."""
    ref, out = tmp_path / "ref" / "bank.h5", tmp_path / "killed" / "bank.h5"
    reference = Started("glag.extract.cli", *EXTRACT, "--out", ref, cwd=tmp_path)
    run = Started("glag.extract.cli", *EXTRACT, "--out", out, cwd=tmp_path)
    assert run.kill_when(lambda: run.saw(r"^epoch 1/") and (bool(temps(out.parent)) or run.saw(r"^epoch 2/")))
    left = temps(out.parent)
    assert not out.exists()
    rerun = Started("glag.extract.cli", *EXTRACT, "--out", out, cwd=tmp_path)
    for proc in (reference, rerun):
        assert proc.proc.wait(timeout=120) == 0, "".join(proc.lines)
    assert rerun.saw(re.escape(STALE)) == bool(left), (left, "".join(rerun.lines))
    with h5py.File(ref, "r") as a, h5py.File(out, "r") as b:
        assert a.attrs["fingerprint"] == b.attrs["fingerprint"]
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(p.name for p in ref.parent.iterdir())


# ---------------------------------------------------------------- what a writer removes, and what it leaves
def test_only_temps_of_dead_processes_on_this_host_are_removed(tmp_path):
    from glag.data.atomic import _host
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid, host = int(dead.stdout), _host()
    stale = tmp_path / f".bank.h5.{pid}@{host}.abcd1234.tmp"
    stale_dir = tmp_path / f".r.{pid}@{host}.k2j3_x9q.tmp"
    live = tmp_path / f".bank.h5.{__import__('os').getpid()}@{host}.zzzz1111.tmp"
    other_host = tmp_path / f".bank.h5.{pid}@elsewhere.abcd1234.tmp"
    old_style = tmp_path / ".bank.h5.abcd1234.tmp"          # before PIDs were recorded: cannot tell
    for p in (stale, live, other_host, old_style):
        p.write_text("x")
    stale_dir.mkdir()
    (stale_dir / "config.json").write_text("{}")
    assert sorted(remove_stale_temps(tmp_path)) == sorted([stale.name, stale_dir.name])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other_host.name, old_style.name])
