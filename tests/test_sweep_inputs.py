"""Comparisons that say what they compare: a sweep's banks and stores checked before its first run, rows
labelled by what they are, one table per dataset, and a legend for an empty group."""
import json

from glag.data.bank import Bank
from glag.data.splits import LEGEND, format_table
from tests.conftest import write_tiny_bank
from tests.test_classify_cli import bank_without_val, invoke, write_tiny_store


def bank_in(folder, loss="ce", epochs=30, dataset="tiny", seed=0):
    cfg = {"epochs": epochs, "backbone": "resnet_small", "seed": seed, "im": 10.0, "profile": "exp",
           "threads": 1, "dataset": dataset}
    return write_tiny_bank(folder / "bank.h5", loss=loss, config=cfg, dataset=dataset, seed=seed)


def grid_file(tmp_path, grid):
    path = tmp_path / "g.json"
    path.write_text(json.dumps(grid))
    return path


def test_banks_of_different_schedules_are_refused_before_any_run(tmp_path):
    ce, gra = bank_in(tmp_path / "ce", "ce", epochs=5), bank_in(tmp_path / "graloss", "graloss", epochs=30)
    grid = grid_file(tmp_path, {"base": {"epochs": 1, "plots": False}, "grid": {"bank": [str(ce), str(gra)],
                                                                                "method": ["crt"]}})
    res = invoke("sweep", "--grid", grid, "--jobs", 1, "--out", tmp_path / "t")
    assert res.exit_code == 1 and res.output.count("\n") == 1, res.output
    assert "differ in more than the stage-one loss: epochs 5 (ce), 30 (graloss)" in res.output
    assert "--mixed-banks" in res.output
    assert not (tmp_path / "ce" / "stage2").exists() and not (tmp_path / "t").exists()
    res = invoke("sweep", "--grid", grid, "--jobs", 1, "--out", tmp_path / "t", "--mixed-banks")
    assert res.exit_code == 0, res.output
    assert "| crt [epochs=5] (ce bank) |" in res.output and "| crt [epochs=30] (graloss bank) |" in res.output


def test_banks_alike_but_for_loss_and_seed_run_and_rows_name_the_seed(tmp_path):
    a, b = bank_in(tmp_path / "s0", seed=0), bank_in(tmp_path / "s1", seed=1)
    grid = grid_file(tmp_path, {"base": {"epochs": 1, "plots": False, "method": "crt"},
                                "grid": {"bank": [str(a), str(b)]}})
    res = invoke("sweep", "--grid", grid, "--jobs", 1, "--out", tmp_path / "t")
    assert res.exit_code == 0, res.output
    assert "| crt [stage-one seed=0] (ce bank) |" in res.output and "| crt [stage-one seed=1] (ce bank) |" in res.output


def test_missing_stores_are_refused_before_any_run(tmp_path):
    bank = bank_in(tmp_path / "ce")
    grid = grid_file(tmp_path, {"base": {"epochs": 1, "plots": False}, "runs": [{"method": "crt"}, {"method": "glag"},
                                                                                {"method": "glag", "ad": False}]})
    res = invoke("sweep", "--grid", grid, "--bank", bank, "--jobs", 1)
    assert res.exit_code == 1 and res.output.count("\n") == 1, res.output
    assert "run(s) 2, 3: no " in res.output and "latest.json" in res.output and "nothing was run" in res.output
    assert f"glag-generate --bank {bank}" in res.output and not (tmp_path / "ce" / "stage2").exists()
    no_store = [{"method": "crt"}, {"method": "glag", "synthetic": False, "ad": False}]
    crt_only = grid_file(tmp_path, {"base": {"epochs": 1, "plots": False}, "runs": no_store})
    assert invoke("sweep", "--grid", crt_only, "--bank", bank, "--jobs", 1).exit_code == 0


def test_a_partly_failed_sweep_says_where_the_table_of_the_others_is(tmp_path):
    path = bank_without_val(tmp_path / "bank.h5")                  # AD cannot run without val, cRT can
    with Bank(path) as bank:
        store = write_tiny_store(tmp_path / "s.h5", bank)
    grid = grid_file(tmp_path, {"base": {"epochs": 1, "plots": False, "store": str(store)},
                                "runs": [{"method": "crt"}, {"method": "glag"}]})
    res = invoke("sweep", "--grid", grid, "--bank", path, "--jobs", 1, "--out", tmp_path / "t")
    assert res.exit_code == 1 and f"1 of 2 runs failed; the table of the other 1 is in {tmp_path / 't'}" in res.output
    assert "| crt (ce bank) |" in (tmp_path / "t" / "table.md").read_text()


def test_table_of_several_datasets_prints_one_table_each_and_labels_hash_runs(tmp_path):
    for name in ("fashion", "digits"):
        with Bank(bank_in(tmp_path / name, dataset=name)) as bank:
            write_tiny_store(tmp_path / name / "synthetic" / "s.h5", bank)
        (tmp_path / name / "synthetic" / "latest.json").write_text(json.dumps({"store": "s.h5"}))
        grid = grid_file(tmp_path / name, {"base": {"epochs": 1, "plots": False, "method": "glag", "ad": False},
                                           "grid": {"beta_init": [0.2, 0.8]}})
        assert invoke("sweep", "--grid", grid, "--bank", tmp_path / name / "bank.h5", "--jobs", 1).exit_code == 0
    res = invoke("table", tmp_path)
    assert res.exit_code == 0, res.output
    assert "on test, digits IM 10" in res.output and "on test, fashion IM 10" in res.output
    rows = [line.split(" | ")[0] for line in res.output.splitlines() if line.startswith("| glag")]
    assert sorted(rows) == ["| glag beta_init=0.2 (ce bank)"] * 2 + ["| glag beta_init=0.8 (ce bank)"] * 2
    csv = invoke("table", tmp_path, "--csv").output.splitlines()
    assert csv[0].split(",")[:9] == ["run", "label", "method", "head", "bank_loss", "synthetic", "ad", "kd", "data"]
    assert sorted(line.split(",")[8] for line in csv[1:]) == ["digits IM 10"] * 2 + ["fashion IM 10"] * 2


def test_an_empty_group_gets_a_legend():
    full = {"overall": 0.5, "many": 0.6, "medium": 0.5, "few": 0.4}
    assert LEGEND not in format_table({"a": full})
    text = format_table({"a": dict(full, few=None), "b": dict(full, few=None)})
    assert "| a | 50.0 | 60.0 | 50.0 | - |" in text and text.rstrip().endswith(LEGEND)
    assert LEGEND not in format_table({"a": dict(full, few=None), "b": full})
