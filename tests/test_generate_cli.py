"""glag-generate end to end on small random banks: the store's contents, resumption and bad input."""
import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from glag.data.bank import Bank
from glag.data.errors import GlagError
from glag.data.store import Store
from glag.generate import writer
from glag.generate.cli import main
from glag.generate.toybank import exp_counts, write_toy_bank

COUNTS = exp_counts(12, 150, 40)          # 150 ... 3: 8 tail classes (N_k <= 100)
D = 8


@pytest.fixture()
def bank_path(tmp_path):
    return write_toy_bank(tmp_path / "runs" / "toy" / "bank.h5", COUNTS, D, seed=1)


def run(*args, ok=True):
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert (res.exit_code == 0) == ok, res.output
    return res


def leftovers(folder):
    return [p.name for p in folder.rglob("*") if p.name.endswith(".tmp")]


def test_store_contents(bank_path, tmp_path):
    out = tmp_path / "s.h5"
    run("--bank", bank_path, "--out", out, "--epochs", 3, "--k", 2, "--gamma", 0.1, "--seed", 5)
    need = COUNTS.max() - COUNTS
    with Bank(bank_path) as bank, Store(out, bank) as s:
        a = s.attrs
        assert (a["k"], a["gamma"], a["beta_init"], a["seed"], a["tukey_lambda"]) == (2, 0.1, 0.6, 5, 0.5)
        assert a["feature_space"] == "tukey" and a["gamma_mode"] == "isotropic" and a["epochs"] == 3
        assert json.loads(a["upstream"]) == bank.config and json.loads(a["config"])["k"] == 2
        assert list(s.tail_classes) == list(np.flatnonzero(COUNTS <= 100))
        sup = s.supports
        tail_samples = COUNTS[COUNTS <= 100].sum()
        assert sup["classes"].shape == (tail_samples, 2) and sup["weights"].shape == (tail_samples, 2)
        train = bank.load("train", ("labels",))["labels"]
        assert (COUNTS[sup["classes"]] > COUNTS[train[sup["source"]]][:, None]).all()
        for e in range(3):
            rows = s.epoch_rows(e)
            assert np.array_equal(np.bincount(rows["label"], minlength=len(COUNTS)), need)
            tail = np.isin(rows["label"], s.tail_classes)
            assert (train[rows["source"][tail]] == rows["label"][tail]).all()
            assert (rows["source"][~tail] == -1).all() and (rows["d"][~tail] == 0).all()
            assert np.isfinite(rows["a"]).all() and (np.abs(rows["d"][tail]).sum(1) > 0).all()
        assert not np.array_equal(s.epoch_rows(0)["a"], s.epoch_rows(1)["a"])   # each epoch a fresh draw
    assert leftovers(tmp_path) == []


def test_no_tail_class_still_balances_every_class(bank_path, tmp_path):
    """Every class above the threshold: nothing is calibrated, the gaps come from each class's own Gaussian."""
    out = tmp_path / "s.h5"
    res = run("--bank", bank_path, "--out", out, "--epochs", 2, "--tail-max-count", 1)
    assert "no class is a tail class by --tail max-count" in res.output
    with Bank(bank_path) as bank, Store(out, bank) as s:
        assert len(s.tail_classes) == 0 and s.supports["classes"].shape == (0, 3)
        rows = s.epoch_rows(1)
        assert np.array_equal(np.bincount(rows["label"], minlength=len(COUNTS)), COUNTS.max() - COUNTS)
        assert (rows["source"] == -1).all() and (rows["d"] == 0).all() and np.isfinite(rows["a"]).all()


def test_default_out_latest_pointer_and_resume(bank_path):
    res = run("--bank", bank_path, "--epochs", 1)
    out = bank_path.parent / "synthetic" / res.stdout.strip().splitlines()[-1].split("/")[-1]
    assert out.is_file() and out.parent.name == "synthetic"
    latest = json.loads((out.parent / "latest.json").read_text())
    assert (out.parent / latest["store"]).resolve() == out.resolve()
    mtime = out.stat().st_mtime_ns
    assert "up to date" in run("--bank", bank_path, "--epochs", 1).output
    assert out.stat().st_mtime_ns == mtime
    other = run("--bank", bank_path, "--epochs", 1, "--seed", 1).stdout.strip().splitlines()[-1]
    assert other.split("/")[-1] != out.name                                    # other settings, other file
    run("--bank", bank_path, "--epochs", 1, "--force")
    assert out.stat().st_mtime_ns != mtime


def test_beta_and_gamma_reuse_the_store_and_reach_stage_two_through_latest(bank_path):
    """beta_init / gamma / gamma_mode act at mixing time: a new value must not redraw the store."""
    first = run("--bank", bank_path, "--epochs", 1, "--beta-init", 0.6).stdout.strip().splitlines()[-1]
    store = bank_path.parent / "synthetic" / first.split("/")[-1]
    mtime = store.stat().st_mtime_ns
    res = run("--bank", bank_path, "--epochs", 1, "--beta-init", 0.3, "--gamma", 0.1, "--gamma-mode", "all-ones")
    assert "up to date" in res.output and res.stdout.strip().splitlines()[-1] == first
    assert store.stat().st_mtime_ns == mtime and len(list(store.parent.glob("*.h5"))) == 1
    latest = json.loads((store.parent / "latest.json").read_text())
    assert latest["mixing"] == {"beta_init": 0.3, "gamma": 0.1, "gamma_mode": "all-ones"}
    from glag.classify.config import defaults, resolve_auto
    from glag.classify.run import open_store
    with Bank(bank_path) as bank:
        cfg = defaults()
        s = open_store(cfg, bank)                                              # store auto: latest.json's
        resolved = resolve_auto(cfg, bank, s)
        s.close()
        s = open_store(dict(cfg, store=str(store)), bank)                      # the same store by path
        assert resolve_auto(cfg, bank, s)["beta_init"] == 0.3
        s.close()
    assert (resolved["beta_init"], resolved["gamma"], resolved["gamma_mode"]) == (0.3, 0.1, "all-ones")


def test_bank_found_by_dataset_and_threads_do_not_change_the_store(bank_path, monkeypatch):
    monkeypatch.chdir(bank_path.parents[2])                                    # runs/toy/bank.h5 is here
    first = run("--dataset", "toy", "--epochs", 1, "--jobs", 1).stdout.strip().splitlines()[-1]
    monkeypatch.setenv("DATASET", "toy")
    res = run("--epochs", 1, "--jobs", 2)
    assert "up to date" in res.output and res.stdout.strip().splitlines()[-1] == first


def test_cap_float16_and_no_head_rows(bank_path, tmp_path):
    out = tmp_path / "h.h5"
    run("--bank", bank_path, "--out", out, "--epochs", 2, "--max-rows-per-class", 20, "--dtype", "float16",
        "--no-balance-head")
    with h5py.File(out, "r") as f:
        assert f["rows/a"].dtype == np.float16 and f.attrs["balance_head"] == False  # noqa: E712
        labels = f["rows/label"][:]
    expect = np.where(COUNTS <= 100, np.minimum(COUNTS.max() - COUNTS, 20), 0)
    assert np.array_equal(np.bincount(labels, minlength=len(COUNTS)), 2 * expect)


def test_dry_run_writes_nothing(bank_path):
    res = run("--bank", bank_path, "--dry-run")
    assert "GiB" in res.output and not (bank_path.parent / "synthetic").exists()


@pytest.mark.parametrize("args,msg", [
    (["--beta-init", 1.5], "--beta-init"),
    (["--beta-init", -0.1], "--beta-init"),
    (["--k", 20], "--k 20"),
    (["--gamma", -1], "--gamma"),
    (["--tail-max-count", 1, "--no-balance-head"], "no class is a tail class"),
    (["--tail", "fraction", "--tail-max-count", 1000], "applies to --tail max-count only"),
    (["--tail-fraction", 0.3], "applies to --tail fraction only"),
    (["--device", "tpu"], "--device"),
])
def test_bad_options_are_clear_errors(bank_path, tmp_path, args, msg):
    res = run("--bank", bank_path, "--out", tmp_path / "x.h5", *args, ok=False)
    # 1: refused by the tool; 2: refused by the option's own type (click's usage error)
    assert res.exit_code in (1, 2) and res.output.count("Error:") == 1 and msg in res.output
    assert not (tmp_path / "x.h5").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("value,lam,msg", [(np.nan, 0.5, "NaN"), (np.inf, 1, "NaN"), (-2.0, 0.5, "negative")])
def test_bad_features_are_clear_errors(bank_path, tmp_path, value, lam, msg):
    with h5py.File(bank_path, "r+") as f:          # damage the bank after it was written
        f["train/features"][5, 3] = value
    res = run("--bank", bank_path, "--out", tmp_path / "x.h5", "--tukey", lam, ok=False)
    assert "Error:" in res.output and msg in res.output and str(bank_path) in res.output
    assert not (tmp_path / "x.h5").exists() and leftovers(tmp_path) == []


def test_negative_features_without_a_power_are_fine(bank_path, tmp_path):
    with h5py.File(bank_path, "r+") as f:
        f["train/features"][5, 3] = -2.0
    run("--bank", bank_path, "--out", tmp_path / "x.h5", "--tukey", 1, "--epochs", 1)


def test_refuses_when_the_disk_is_too_small(bank_path, tmp_path, monkeypatch):
    monkeypatch.setattr(writer, "free_bytes", lambda folder: 1000)
    res = run("--bank", bank_path, "--out", tmp_path / "x.h5", ok=False)
    assert "GiB are free" in res.output and not (tmp_path / "x.h5").exists()


def test_store_from_another_bank_is_refused(bank_path, tmp_path):
    out = tmp_path / "s.h5"
    run("--bank", bank_path, "--out", out, "--epochs", 1)
    other = write_toy_bank(tmp_path / "other" / "bank.h5", COUNTS, D, seed=2)
    with Bank(other) as b, pytest.raises(GlagError, match="fingerprint"):
        Store(out, b)
    run("--bank", other, "--out", out, "--epochs", 1)              # not "up to date": redrawn for the new bank
    with Bank(other) as b, Store(out, b) as s:
        assert s.attrs["bank_fingerprint"] == b.fingerprint


def test_interrupted_write_leaves_nothing(bank_path, tmp_path, monkeypatch):
    from glag.generate.afg import AdaptiveFeatureGenerator
    real = AdaptiveFeatureGenerator.batches

    def failing(self, epoch):
        if epoch == 1:
            raise GlagError("simulated failure in epoch 1")
        yield from real(self, epoch)

    monkeypatch.setattr(AdaptiveFeatureGenerator, "batches", failing)
    res = run("--bank", bank_path, "--out", tmp_path / "x.h5", "--epochs", 3, ok=False)
    assert "simulated failure" in res.output
    assert not (tmp_path / "x.h5").exists() and leftovers(tmp_path) == []
