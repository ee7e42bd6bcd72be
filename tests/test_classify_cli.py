"""`glag-classify` end to end on a tiny bank and store: run (GLAG, cRT, post-hoc), table, sweep, errors."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from glag.classify.cli import main
from glag.data.bank import Bank, BankWriter
from tests.conftest import write_tiny_bank

TAIL = [3, 4, 5]


def write_tiny_store(path, bank, seed=0):
    """The generator fitted on the tiny bank by glag-generate: K = 2, tail classes 3, 4, 5 (N_k <= 10)."""
    from glag.generate.cli import main as generate
    res = CliRunner().invoke(generate, ["--bank", str(bank.path), "--out", str(path), "--k", "2", "--tail-max-count",
                                        "10", "--seed", str(seed)])
    assert res.exit_code == 0, res.output
    return path


def make_bank_and_store(tmp, seed=0, pointer=True):
    """runs-like layout: <tmp>/bank.h5, <tmp>/synthetic/s.h5 and latest.json naming it."""
    bank_path = write_tiny_bank(tmp / "bank.h5", seed=seed, config={"graloss_c": 3.0, "groups": "auto"})
    with Bank(bank_path) as bank:
        store = write_tiny_store(tmp / "synthetic" / "s.h5", bank)
    if not pointer:
        (tmp / "synthetic" / "latest.json").unlink()
    return bank_path, store


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


def test_glag_run_writes_every_output(tmp_path):
    bank, _ = make_bank_and_store(tmp_path)
    res = invoke("run", "--bank", bank, "--epochs", 4, "--run", "g", "--no-plots")
    assert res.exit_code == 0, res.output
    run = tmp_path / "stage2" / "g"
    assert {"config.json", "metrics.json", "beta.json", "head.pt", "history.json", "report.md",
            "linear.pt"} <= {p.name for p in run.iterdir()}
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["cfg"]["kd_c"] == 3.0 and cfg["cfg"]["beta_init"] == 0.6 and cfg["cfg"]["ad"] is True
    assert cfg["upstream"]["bank"]["config"]["graloss_c"] == 3.0
    assert cfg["upstream"]["store"]["config"]["k"] == 2 and "code_version" in cfg
    beta = json.loads((run / "beta.json").read_text())
    assert beta["tail_classes"] == TAIL and len(beta["trajectory"]) == 5
    metrics = json.loads((run / "metrics.json").read_text())
    for split in ("val", "test"):
        assert 0 <= metrics[split]["overall"] <= 1 and len(metrics[split]["per_class"]) == 6
    history = json.loads((run / "history.json").read_text())
    # the gap-rule pool: 137 real rows and 223 synthetic ones (N_max - N_k), drawn class-balanced
    assert [h["rows"] for h in history] == [137 + 223] * 8 and history[-1]["alpha"] == pytest.approx(2.0)
    assert [h["pass"] for h in history] == ["search"] * 4 + ["refit"] * 4 and beta["refit"]
    state = torch.load(run / "head.pt", weights_only=True)
    assert state["fc.weight"].shape == (6, 8)
    assert "Top-1 accuracy (%) on test" in res.output and "| g (ce bank) |" in res.output


def test_crt_run_has_no_synthetic_rows_and_plots(tmp_path):
    pytest.importorskip("matplotlib")
    bank = write_tiny_bank(tmp_path / "bank.h5")  # no store anywhere: cRT must not need one
    res = invoke("run", "--bank", bank, "--method", "crt", "--epochs", 3, "--run", "c")
    assert res.exit_code == 0, res.output
    run = tmp_path / "stage2" / "c"
    assert not (run / "beta.json").exists() and (run / "per_class_accuracy.png").is_file()
    assert (run / "tsne.png").is_file()
    history = json.loads((run / "history.json").read_text())
    assert all(h["rows"] == 137 and h["kd"] == 0 for h in history)
    assert "per_class_accuracy.png" in (run / "report.md").read_text()


@pytest.mark.parametrize("method", ["lws", "tau_norm", "ncm", "posthoc_la"])
def test_other_methods_run(tmp_path, method):
    bank = write_tiny_bank(tmp_path / "bank.h5")
    res = invoke("run", "--bank", bank, "--method", method, "--epochs", 2, "--run", method, "--no-plots")
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "stage2" / method / "config.json").read_text())["cfg"]
    assert cfg["head"] == {"lws": "lws"}.get(method, method) and cfg["synthetic"] is False


def test_explicit_options_beat_the_method_preset(tmp_path):
    bank, _ = make_bank_and_store(tmp_path)
    res = invoke("run", "--bank", bank, "--method", "glag", "--head", "lws", "--no-kd", "--epochs", 2,
                 "--run", "x", "--no-plots")
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "stage2" / "x" / "config.json").read_text())["cfg"]
    assert (cfg["head"], cfg["kd"], cfg["ad"], cfg["synthetic"]) == ("lws", False, True, True)


def test_table_prints_runs_and_stage_one(tmp_path):
    bank = write_tiny_bank(tmp_path / "bank.h5")
    for name in ("a", "b"):
        assert invoke("run", "--bank", bank, "--method", "crt", "--epochs", 2, "--run", name,
                      "--seed", ord(name), "--no-plots").exit_code == 0
    res = invoke("table", tmp_path / "stage2" / "a", tmp_path / "stage2" / "b", "--stage-one", bank)
    assert res.exit_code == 0, res.output
    lines = [line for line in res.output.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0] for line in lines[1:]] == ["| stage one (ce bank)", "| a (ce bank)", "| b (ce bank)"]


def test_sweep_runs_a_grid_and_resumes(tmp_path):
    bank, _ = make_bank_and_store(tmp_path)
    grid = tmp_path / "g.json"
    grid.write_text(json.dumps({"base": {"epochs": 2}, "grid": {"method": ["crt", "glag"]}}))
    out = tmp_path / "tables"
    res = invoke("sweep", "--grid", grid, "--bank", bank, "--jobs", 2, "--out", out)
    assert res.exit_code == 0, res.output
    runs = sorted(p.name for p in (tmp_path / "stage2").iterdir())
    assert len(runs) == 2 and runs[0].startswith("crt-") and runs[1].startswith("glag-")
    csv_lines = (out / "table.csv").read_text().splitlines()
    assert len(csv_lines) == 3 and csv_lines[0].startswith("run,label,method,head,bank_loss")
    table = (out / "table.md").read_text()
    assert "on val" in table and "on test" in table and "| crt (ce bank) |" in table and "| glag (ce bank) |" in table
    stamp = {r: (tmp_path / "stage2" / r / "metrics.json").stat().st_mtime_ns for r in runs}
    again = invoke("sweep", "--grid", grid, "--bank", bank, "--jobs", 1, "--out", out)
    assert again.exit_code == 0, again.output
    assert stamp == {r: (tmp_path / "stage2" / r / "metrics.json").stat().st_mtime_ns for r in runs}


def test_sweep_grid_may_set_plots_and_run_names(tmp_path):
    """A grid's own "plots"/"run" keys win over the sweep's defaults (once a TypeError)."""
    bank = write_tiny_bank(tmp_path / "bank.h5")
    grid = tmp_path / "g.json"
    grid.write_text(json.dumps({"base": {"method": "crt", "epochs": 1, "plots": False},
                                "runs": [{"run": "first"}, {"run": "second", "seed": 1}]}))
    res = invoke("sweep", "--grid", grid, "--bank", bank, "--jobs", 1, "--out", tmp_path / "t")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "stage2").iterdir()) == ["first", "second"]


def test_glag_runs_on_a_store_without_tail_classes(tmp_path):
    """glag-generate's no-tail store (every class well sampled): GLAG still trains; no beta adapts."""
    from glag.generate.cli import main as generate_main
    bank = write_tiny_bank(tmp_path / "bank.h5")
    store = tmp_path / "s.h5"
    gen = CliRunner().invoke(generate_main, ["--bank", str(bank), "--out", str(store), "--tail-max-count", "1",
                                             "--tukey", "1"])
    assert gen.exit_code == 0 and "no class is a tail class" in gen.output, gen.output
    res = invoke("run", "--bank", bank, "--store", store, "--method", "glag", "--epochs", 2, "--run", "r",
                 "--no-plots", "--no-deploy")
    assert res.exit_code == 0, res.output
    beta = json.loads((tmp_path / "stage2" / "r" / "beta.json").read_text())
    assert beta["tail_classes"] == [] and all(step == [] for step in beta["trajectory"])
    assert json.loads((tmp_path / "stage2" / "r" / "metrics.json").read_text())


def test_store_of_another_bank_is_refused(tmp_path):
    bank, _ = make_bank_and_store(tmp_path)
    other = write_tiny_bank(tmp_path / "other" / "bank.h5", seed=3)
    res = invoke("run", "--bank", other, "--store", tmp_path / "synthetic" / "s.h5", "--epochs", 1)
    assert res.exit_code == 1 and "another bank" in res.output
    assert not (tmp_path / "other" / "stage2").exists()


def test_existing_run_folder_is_refused_without_overwrite(tmp_path):
    bank = write_tiny_bank(tmp_path / "bank.h5")
    args = ("run", "--bank", bank, "--method", "crt", "--epochs", 1, "--run", "r", "--no-plots")
    assert invoke(*args).exit_code == 0
    res = invoke(*args)
    assert res.exit_code == 1 and "exists" in res.output and "--overwrite" in res.output
    assert invoke(*args, "--overwrite").exit_code == 0
    assert [p.name for p in (tmp_path / "stage2").iterdir()] == ["r"]  # no temp folder left behind


def test_unknown_grid_key_is_refused_before_anything_runs(tmp_path):
    bank = write_tiny_bank(tmp_path / "bank.h5")
    grid = tmp_path / "g.json"
    grid.write_text(json.dumps({"grid": {"method": ["crt"], "lerning_rate": [0.1]}}))
    res = invoke("sweep", "--grid", grid, "--bank", bank)
    assert res.exit_code == 1 and "lerning_rate" in res.output
    assert not (tmp_path / "stage2").exists()


def test_ad_without_val_split_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "bank.h5"
    with BankWriter(path, dataset="t", backbone="none", loss="ce", class_names=list("abc"),
                    train_counts=[20, 5, 2], feature_dim=4, config={}) as w:
        for split in ("train", "test"):
            y = np.array([0] * 20 + [1] * 5 + [2] * 2)
            w.add_rows(split, rng.random((27, 4)), y, rng.random((27, 3)), np.arange(27))
        w.set_head(rng.random((3, 4)), np.zeros(3))
    res = invoke("run", "--bank", path, "--store", tmp_path / "nope.h5", "--epochs", 1)
    assert res.exit_code == 1  # the store is missing: named
    assert "nope.h5" in res.output


def bank_without_val(path):
    """A 6-class bank with train and test rows only (random features)."""
    rng = np.random.default_rng(0)
    with BankWriter(path, dataset="t", backbone="none", loss="ce", class_names=[f"c{k}" for k in range(6)],
                    train_counts=[60, 40, 20, 10, 5, 2], feature_dim=8, config={}) as w:
        y = np.repeat(np.arange(6), [60, 40, 20, 10, 5, 2])
        for split in ("train", "test"):
            w.add_rows(split, rng.random((len(y), 8)), y, rng.random((len(y), 6)), np.arange(len(y)))
        w.set_head(rng.random((6, 8)), np.zeros(6))
    return path


def test_ad_without_val_split_is_refused_with_a_store(tmp_path):
    path = bank_without_val(tmp_path / "bank.h5")
    with Bank(path) as bank:
        store = write_tiny_store(tmp_path / "s.h5", bank)
    res = invoke("run", "--bank", path, "--store", store, "--epochs", 1)
    assert res.exit_code == 1 and "--ad" in res.output and "val split" in res.output
    ok = invoke("run", "--bank", path, "--store", store, "--epochs", 1, "--no-ad", "--no-plots")
    assert ok.exit_code == 0, ok.output


def test_missing_store_pointer_is_named(tmp_path):
    bank = write_tiny_bank(tmp_path / "bank.h5")
    res = invoke("run", "--bank", bank, "--epochs", 1)
    assert res.exit_code == 1 and "latest.json" in res.output and "--no-synthetic" in res.output


def test_tukey_space_run_records_it_and_checks_lambda(tmp_path):
    bank, _ = make_bank_and_store(tmp_path)
    res = invoke("run", "--bank", bank, "--space", "tukey", "--epochs", 2, "--run", "t", "--no-plots")
    assert res.exit_code == 0, res.output
    run = tmp_path / "stage2" / "t"
    cfg = json.loads((run / "config.json").read_text())["cfg"]
    assert (cfg["space"], cfg["tukey_lambda"]) == ("tukey", 0.5)
    assert not (run / "linear.pt").exists()  # a head on transformed features is not a raw-space linear layer
    bad = invoke("run", "--bank", bank, "--space", "tukey", "--tukey-lambda", 0.3, "--epochs", 1, "--run", "u")
    assert bad.exit_code == 1 and "--tukey-lambda" in bad.output


def test_stage_two_loss_takes_its_own_options(tmp_path):
    bank, _ = make_bank_and_store(tmp_path)
    res = invoke("run", "--bank", bank, "--loss", "graloss", "--graloss-c", 3.0, "--epochs", 2, "--run", "l",
                 "--no-plots")
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "stage2" / "l" / "config.json").read_text())["cfg"]
    assert cfg["loss"] == "graloss" and cfg["graloss_c"] == 3.0


def test_shipped_grid_names_its_missing_banks(tmp_path):
    res = invoke("sweep", "--grid", "table6", "--dataset", "cifar100", "--runs-root", tmp_path, "--im", 100)
    assert res.exit_code == 1 and "bank(s) not found" in res.output
    for loss in ("ce", "graloss", "logit_adjust"):
        assert f"{tmp_path}/cifar100-im100/{loss}/seed0/bank.h5" in res.output
        assert f"make features DATASET=cifar100 IM=100 LOSS={loss} SEED=0" in res.output
    (tmp_path / "cifar100-im100").mkdir()
    (tmp_path / "cifar100-im50").mkdir()
    res = invoke("sweep", "--grid", "table6", "--dataset", "cifar100", "--runs-root", tmp_path)
    assert res.exit_code == 1 and "several experiments" in res.output and "pass --im" in res.output


def test_run_without_bank_names_the_banks_there_are(tmp_path, monkeypatch):
    monkeypatch.delenv("DATASET", raising=False)
    banks = [write_tiny_bank(tmp_path / name / "bank.h5") for name in ("a", "b")]
    res = invoke("run", "--runs-root", tmp_path, "--method", "crt", "--epochs", 1, "--no-plots")
    assert res.exit_code == 1 and res.output.startswith("Error: --bank: several banks")
    assert all(str(b) in res.output for b in banks) and "--dataset" in res.output
    monkeypatch.setenv("DATASET", "c")  # `make classify` exports DATASET
    res = invoke("run", "--runs-root", tmp_path, "--method", "crt", "--epochs", 1, "--no-plots")
    assert res.exit_code == 1 and "no bank of this dataset" in res.output and all(str(b) in res.output for b in banks)


def test_run_on_the_datasets_bank_prints_the_group_table(tmp_path, monkeypatch):
    """`make classify` = `glag-classify run --dataset $(DATASET)`: the dataset's bank among others."""
    write_tiny_bank(tmp_path / "other" / "bank.h5", loss="graloss")
    write_tiny_bank(tmp_path / "toy" / "bank.h5", dataset="toy")
    res = invoke("run", "--dataset", "toy", "--runs-root", tmp_path, "--method", "crt", "--epochs", 2,
                 "--run", "r", "--no-plots")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "toy" / "stage2" / "r" / "metrics.json").is_file()
    for split in ("val", "test"):
        table = res.output.split(f"Top-1 accuracy (%) on {split}")[1].split("Top-1")[0]
        lines = [line for line in table.splitlines() if line.startswith("| ")]
        assert lines[0] == "| method | overall | many | medium | few |"
        stage_one = ["| stage one (ce bank)"] if split == "test" else []  # the tiny bank has test metrics only
        assert [line.split(" | ")[0] for line in lines[1:]] == stage_one + ["| r (ce bank)"]


def test_table_keeps_rows_of_equal_labels_apart(tmp_path):
    banks = [write_tiny_bank(tmp_path / name / "bank.h5", seed=i) for i, name in enumerate(("x", "y"))]
    for bank in banks:
        assert invoke("run", "--bank", bank, "--method", "crt", "--epochs", 1, "--run", "crt",
                      "--no-plots").exit_code == 0
    runs = [b.parent / "stage2" / "crt" for b in banks]
    res = invoke("table", *runs, "--stage-one", banks[0], "--stage-one", banks[1], "--stage-one", banks[0])
    labels = [line.split(" | ")[0] for line in res.output.splitlines() if line.startswith("| ")][1:]
    assert labels == ["| stage one (ce bank)", f"| stage one (ce bank, {tmp_path / 'y'})", "| crt (ce bank)",
                      f"| crt (ce bank, {runs[1]})"]
