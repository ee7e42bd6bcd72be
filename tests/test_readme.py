"""The README works as typed: its command blocks run on digits in a shell whose PATH has no venv in it, and
its API snippet runs. Only the dataset name is changed (digits ships with scikit-learn), and stage one is
shortened through the Makefile's ARGS variable in the environment; the command lines are the README's."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def block(after: str, lang: str = "") -> str:
    """The first fenced block (```lang) after the line starting with `after`."""
    start = README.index(after)
    match = re.compile(rf"^```{lang}\n(.*?)^```", re.S | re.M).search(README, start)
    return match.group(1)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A folder like a fresh clone after `make install`: the Makefile, pyproject and the installed venv, which
    is newer than pyproject (in a developer's checkout pyproject may be newer: make would then reinstall)."""
    folder = tmp_path_factory.mktemp("clone")
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(ROOT / name, folder / name)
    installed = (ROOT / ".venv" / ".installed").stat().st_mtime
    os.utime(folder / "pyproject.toml", (installed - 60, installed - 60))
    (folder / ".venv").symlink_to(ROOT / ".venv")
    return folder


def shell(script: str, cwd: Path) -> str:
    # PATH without the venv: the README must say how to reach its tools
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if ".venv" not in p)
    env = dict(os.environ, PATH=path, ARGS="--epochs 2", DATASET="", GLAG_DATA=str(cwd / "datasets"))
    for name in ("VIRTUAL_ENV", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"):    # `make test` runs this suite: a clean shell
        env.pop(name, None)
    out = subprocess.run(["bash", "-e", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, (script, out.stdout[-3000:], out.stderr[-3000:])
    return out.stdout + out.stderr


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT / ".venv" / ".installed").exists(), reason="needs `make install`'s .venv")
def test_the_three_commands_and_the_table_6_7_block_run_as_typed(checkout):
    three = block("## The three commands", "")
    assert "DATASET=fashion-mnist" in three and ".venv/bin/glag-generate" in three
    out = shell(three.replace("fashion-mnist", "digits"), checkout)
    bank = checkout / "runs" / "digits-im10" / "graloss" / "seed0" / "bank.h5"
    assert bank.is_file() and list((bank.parent / "synthetic").glob("*.h5"))
    assert [p.name for p in (bank.parent / "stage2").iterdir()] and "Top-1 accuracy (%) on test" in out
    tables = block("need one bank per\nstage-one loss", "")
    assert "--grid table6" in tables and "--grid table7" in tables
    out = shell(tables.replace("cifar100", "digits"), checkout)
    sweeps = checkout / "runs" / "digits-im10" / "ce" / "seed0" / "stage2" / "sweeps"
    assert (sweeps / "table6" / "table.md").is_file() and (sweeps / "table7" / "table.md").is_file()
    assert "mislas" in (sweeps / "table6" / "table.md").read_text()


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "python").exists(), reason="needs `make install`'s .venv")
def test_the_api_snippet_runs(tmp_path):
    code = block("with a Python API", "python")
    assert 'dataset="digits"' in code and "digit.png" in code
    out = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=900, env=dict(os.environ, DATASET=""))
    assert out.returncode == 0, out.stderr[-3000:]
    accuracy, classes = out.stdout.strip().splitlines()[-2:]
    assert 0.5 < float(accuracy) <= 1 and classes.startswith("[")
    assert (tmp_path / "digit.png").is_file() and (tmp_path / "runs" / "current.json").is_file()
