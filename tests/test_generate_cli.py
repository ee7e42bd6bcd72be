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
    run("--bank", bank_path, "--out", out, "--k", 2, "--gamma", 0.1, "--seed", 5, "--sample-per-class", 30)
    need = COUNTS.max() - COUNTS
    with Bank(bank_path) as bank, Store(out, bank) as s:
        a = s.attrs
        assert (a["k"], a["gamma"], a["beta_init"], a["seed"], a["tukey_lambda"]) == (2, 0.1, 0.6, 5, 0.5)
        assert a["feature_space"] == "tukey" and a["gamma_mode"] == "isotropic" and a["schema"] == "glag-store/2"
        assert json.loads(a["upstream"]) == bank.config and json.loads(a["config"])["k"] == 2
        assert list(s.tail_classes) == list(np.flatnonzero(COUNTS <= 100))
        assert np.array_equal(s.need, need) and np.array_equal(s.counts, COUNTS)
        sup = s.supports
        tail_samples = COUNTS[COUNTS <= 100].sum()
        assert sup["classes"].shape == (tail_samples, 2) and sup["weights"].shape == (tail_samples, 2)
        train = bank.load("train")
        assert (COUNTS[sup["classes"]] > COUNTS[train["labels"][sup["source"]]][:, None]).all()
        gen = s.generator()
        x_hat = np.sqrt(train["features"].astype(np.float64))
        for k in range(len(COUNTS)):                                     # Eq. 5 and the factors kept
            np.testing.assert_allclose(gen.means[k], x_hat[train["labels"] == k].mean(0), rtol=1e-5)
            kept = COUNTS[k] <= D or COUNTS[k] <= 100
            assert (gen.class_rows[k] is not None) == kept and (k in gen.qr) == (COUNTS[k] > D)
            if kept:
                assert (train["labels"][gen.class_index[k]] == k).all()
                np.testing.assert_allclose(gen.class_rows[k], x_hat[gen.class_index[k]] - gen.means[k], atol=1e-5)
        rows = s.sample()
        assert np.array_equal(np.bincount(rows["label"], minlength=len(COUNTS)), np.minimum(need, 30))
        tail = np.isin(rows["label"], s.tail_classes)
        assert (train["labels"][rows["source"][tail]] == rows["label"][tail]).all()
        assert (rows["source"][~tail] == -1).all() and (rows["d"][~tail] == 0).all()
        assert np.isfinite(rows["a"]).all() and (np.abs(rows["d"][tail]).sum(1) > 0).all()
    assert leftovers(tmp_path) == []


def test_the_store_holds_the_whole_generator(bank_path, tmp_path):
    """Drawn from the store in another process (stage two), the rows are the numbers glag-generate drew."""
    from glag.data.synthesis import Synthesizer, make_generator, stream_seed
    from glag.generate.afg import SAMPLE_STREAM
    from glag.generate.sampler import sample_segments
    out = tmp_path / "s.h5"
    run("--bank", bank_path, "--out", out, "--seed", 3, "--sample-per-class", 25)
    with Bank(bank_path) as bank, Store(out, bank) as s:
        tail = np.isin(np.arange(len(COUNTS)), s.tail_classes)
        segments = sample_segments(s.need, tail, s.counts, 25)
        rows = Synthesizer(s.generator()).draw(segments, make_generator(stream_seed(3, SAMPLE_STREAM), "cpu"))
        sample = s.sample()
        for f in ("a", "d"):
            assert np.array_equal(rows[f].numpy(), sample[f])
        assert np.array_equal(rows["label"].numpy(), sample["label"]) and np.array_equal(rows["source"],
                                                                                         sample["source"])


def test_store_size_does_not_grow_with_the_gap(tmp_path):
    """The store holds factors, not rows: its size follows the train rows, whatever N_max is."""
    sizes = []
    for n_max in (150, 1500):
        counts = exp_counts(12, n_max, n_max / 3.75)                     # the same small classes
        bank = write_toy_bank(tmp_path / f"b{n_max}" / "bank.h5", counts, 64, seed=1)
        out = tmp_path / f"s{n_max}.h5"
        run("--bank", bank, "--out", out)
        sizes.append((out.stat().st_size, bank.stat().st_size))
    assert sizes[0][0] < 2 * sizes[0][1] and sizes[1][0] < 2 * sizes[1][1]


def test_old_format_store_is_refused_with_the_command_that_rebuilds_it(bank_path, tmp_path):
    out = tmp_path / "s.h5"
    run("--bank", bank_path, "--out", out)
    with h5py.File(out, "r+") as f:
        f.attrs["schema"] = "glag-store/1"
    with Bank(bank_path) as bank, pytest.raises(GlagError, match="old format.*glag-generate --bank .* --force"):
        Store(out, bank)


def test_out_elsewhere_leaves_latest_alone(bank_path, tmp_path):
    first = run("--bank", bank_path).stdout.strip().splitlines()[-1]
    latest = bank_path.parent / "synthetic" / "latest.json"
    before = latest.read_text()
    res = run("--bank", bank_path, "--out", tmp_path / "elsewhere.h5", "--seed", 4)
    assert latest.read_text() == before and "latest.json still names" in res.output
    assert (latest.parent / json.loads(before)["store"]).resolve() == (latest.parent / first.split("/")[-1]).resolve()


def test_no_tail_class_still_balances_every_class(bank_path, tmp_path):
    """Every class above the threshold: nothing is calibrated, the gaps come from each class's own Gaussian."""
    out = tmp_path / "s.h5"
    res = run("--bank", bank_path, "--out", out, "--tail-max-count", 1, "--sample-per-class", 10)
    assert "no class is a tail class by --tail max-count" in res.output
    with Bank(bank_path) as bank, Store(out, bank) as s:
        assert len(s.tail_classes) == 0 and s.supports["classes"].shape == (0, 3)
        assert np.array_equal(s.need, COUNTS.max() - COUNTS)
        rows = s.sample()
        assert (rows["source"] == -1).all() and (rows["d"] == 0).all() and np.isfinite(rows["a"]).all()


def test_default_out_latest_pointer_and_resume(bank_path):
    res = run("--bank", bank_path)
    out = bank_path.parent / "synthetic" / res.stdout.strip().splitlines()[-1].split("/")[-1]
    assert out.is_file() and out.parent.name == "synthetic"
    latest = json.loads((out.parent / "latest.json").read_text())
    assert (out.parent / latest["store"]).resolve() == out.resolve()
    mtime = out.stat().st_mtime_ns
    assert "up to date" in run("--bank", bank_path).output
    assert out.stat().st_mtime_ns == mtime
    other = run("--bank", bank_path, "--seed", 1).stdout.strip().splitlines()[-1]
    assert other.split("/")[-1] != out.name                                    # other settings, other file
    run("--bank", bank_path, "--force")
    assert out.stat().st_mtime_ns != mtime


def test_beta_and_gamma_reuse_the_store_and_reach_stage_two_through_latest(bank_path):
    """beta_init / gamma / gamma_mode act at mixing time: a new value must not redraw the store."""
    first = run("--bank", bank_path, "--beta-init", 0.6).stdout.strip().splitlines()[-1]
    store = bank_path.parent / "synthetic" / first.split("/")[-1]
    mtime = store.stat().st_mtime_ns
    res = run("--bank", bank_path, "--beta-init", 0.3, "--gamma", 0.1, "--gamma-mode", "all-ones")
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
    first = run("--dataset", "toy", "--jobs", 1).stdout.strip().splitlines()[-1]
    monkeypatch.setenv("DATASET", "toy")
    res = run("--jobs", 2)
    assert "up to date" in res.output and res.stdout.strip().splitlines()[-1] == first


def test_cap_float16_and_no_head_rows(bank_path, tmp_path):
    out = tmp_path / "h.h5"
    run("--bank", bank_path, "--out", out, "--max-rows-per-class", 20, "--dtype", "float16", "--no-balance-head")
    with h5py.File(out, "r") as f:
        assert f["factors/rows"].dtype == np.float16 and f.attrs["balance_head"] == False  # noqa: E712
        need = f["classes/need"][:]
    assert np.array_equal(need, np.where(COUNTS <= 100, np.minimum(COUNTS.max() - COUNTS, 20), 0))


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


def test_negative_features_are_refused_without_a_power_too(bank_path, tmp_path):
    with h5py.File(bank_path, "r+") as f:
        f["train/features"][5, 3] = -2.0
    res = run("--bank", bank_path, "--out", tmp_path / "x.h5", "--tukey", 1, ok=False)
    assert "negative values" in res.output and "features are >= 0" in res.output


def test_refuses_when_the_disk_is_too_small(bank_path, tmp_path, monkeypatch):
    monkeypatch.setattr(writer, "free_bytes", lambda folder: 1000)
    res = run("--bank", bank_path, "--out", tmp_path / "x.h5", ok=False)
    assert "GiB are free" in res.output and not (tmp_path / "x.h5").exists()


def test_store_from_another_bank_is_refused(bank_path, tmp_path):
    out = tmp_path / "s.h5"
    run("--bank", bank_path, "--out", out)
    other = write_toy_bank(tmp_path / "other" / "bank.h5", COUNTS, D, seed=2)
    with Bank(other) as b, pytest.raises(GlagError, match="fingerprint"):
        Store(out, b)
    run("--bank", other, "--out", out)              # not "up to date": redrawn for the new bank
    with Bank(other) as b, Store(out, b) as s:
        assert s.attrs["bank_fingerprint"] == b.fingerprint


def test_interrupted_write_leaves_nothing(bank_path, tmp_path, monkeypatch):
    from glag.generate.afg import AdaptiveFeatureGenerator

    def failing(self, per_class):
        raise GlagError("simulated failure while drawing the sample")

    monkeypatch.setattr(AdaptiveFeatureGenerator, "sample", failing)
    res = run("--bank", bank_path, "--out", tmp_path / "x.h5", "--sample-per-class", 5, ok=False)
    assert "simulated failure" in res.output
    assert not (tmp_path / "x.h5").exists() and leftovers(tmp_path) == []
