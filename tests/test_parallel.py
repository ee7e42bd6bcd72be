"""--backend / --scheduler (glag/parallel.py): sweeps and reproduce on joblib's backends, Dask included.

A tiny sweep on a digits bank gives the same results on loky (today's processes), threading and a
local Dask cluster; a missing Dask or a scheduler without Dask is one line naming the option."""
import json
import shutil
import sys
import types

import pytest
from click.testing import CliRunner

import glag.api as api
import glag.reproduce.run as reproduce_run
from glag.classify.cli import main as classify
from glag.classify.sweep import run_sweep
from glag.data.errors import GlagError

GRID = {"base": {"epochs": 2, "threads": 1}, "grid": {"method": ["crt", "ncm"]}}


@pytest.fixture(scope="module")
def grid_and_bank(tmp_path_factory):
    root = tmp_path_factory.mktemp("parallel")
    bank = api.extract(dataset="digits", epochs=1, threads=1, out=str(root / "bank.h5"), current=False)
    grid = root / "tiny.json"
    grid.write_text(json.dumps(GRID))
    return grid, bank


def sweep_in(folder, grid, bank, **backend):
    """The tiny sweep on a copy of the bank in `folder` (runs live beside their bank, so nothing is shared)."""
    folder.mkdir()
    copy = folder / "bank.h5"
    shutil.copy(bank, copy)
    runs, _ = run_sweep(str(grid), {"bank": str(copy), "dataset": "", "runs_root": str(folder), "im": None},
                        jobs=2, out=str(folder / "table"), **backend)
    return {json.loads((r / "config.json").read_text())["cfg"]["method"]: json.loads((r / "metrics.json").read_text())
            for r in runs}


def same_results(a: dict, b: dict) -> None:
    assert set(a) == set(b) == {"crt", "ncm"}
    for method in a:
        for split in ("val", "test"):
            assert a[method][split] == b[method][split], (method, split)


@pytest.fixture(scope="module")
def on_loky(grid_and_bank, tmp_path_factory):
    return sweep_in(tmp_path_factory.mktemp("loky") / "b", *grid_and_bank)


def test_sweep_on_threads_matches_loky(grid_and_bank, on_loky, tmp_path):
    same_results(on_loky, sweep_in(tmp_path / "b", *grid_and_bank, backend="threading"))


def test_sweep_on_a_local_dask_cluster_matches_loky(grid_and_bank, on_loky, tmp_path):
    distributed = pytest.importorskip("distributed", reason="the [dask] extra is not installed")
    with distributed.LocalCluster(n_workers=1, processes=False, threads_per_worker=1,
                                  dashboard_address=None) as cluster:
        got = sweep_in(tmp_path / "b", *grid_and_bank, backend="dask", scheduler=cluster.scheduler_address)
    same_results(on_loky, got)


def test_missing_dask_is_one_line_naming_the_option(grid_and_bank, monkeypatch):
    grid, bank = grid_and_bank
    monkeypatch.setitem(sys.modules, "distributed", None)          # as if the extra were not installed
    res = CliRunner().invoke(classify, ["sweep", "--grid", str(grid), "--bank", str(bank), "--backend", "dask"])
    assert res.exit_code != 0
    assert res.output.strip().count("\n") == 0 and "--backend dask" in res.output and "pip install" in res.output


def test_scheduler_needs_the_dask_backend(grid_and_bank):
    grid, bank = grid_and_bank
    res = CliRunner().invoke(classify, ["sweep", "--grid", str(grid), "--bank", str(bank),
                                        "--scheduler", "tcp://localhost:1"])
    assert res.exit_code != 0 and "only --backend dask" in res.output


@pytest.mark.parametrize("backend", ["threading", "dask"])
def test_reproduce_hands_stage_two_steps_to_the_backend(backend, monkeypatch):
    """execute(): stores and stage one in order here, stage-two steps on the backend; one failed run does not
    cancel the others, and every failure is reported."""
    if backend == "dask":
        distributed = pytest.importorskip("distributed", reason="the [dask] extra is not installed")
    done = []

    def fake_step(step, number, verbose):
        done.append(step.name)
        if step.name == "bad":
            raise GlagError("bad failed")

    monkeypatch.setattr(reproduce_run, "run_step", fake_step)
    step = lambda tool, name: types.SimpleNamespace(tool=tool, name=name, bank="b.h5")
    steps = [step("extract", "stage one"), step("generate", "store"), step("classify", "crt"),
             step("classify", "bad"), step("classify", "ncm")]
    args = {}
    if backend == "dask":
        cluster = distributed.LocalCluster(n_workers=1, processes=False, threads_per_worker=1, dashboard_address=None)
        args["scheduler"] = cluster.scheduler_address
    try:
        with pytest.raises(GlagError, match="^bad failed$"):
            reproduce_run.execute(steps, 2, False, (), backend, **args)
    finally:
        if backend == "dask":
            cluster.close()
    assert done[:2] == ["stage one", "store"] and sorted(done[2:]) == ["bad", "crt", "ncm"]
