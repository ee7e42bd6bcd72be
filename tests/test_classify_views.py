"""Stage two on a multi-view bank, the MiSLAS head, and the heads GLAG may train (lws, linear from stage one)."""
import json

import numpy as np
import pytest
import torch

import h5py

from glag.classify.plan import plan_epoch
from glag.classify.rows import RealRows
from glag.data.bank import Bank, BankWriter
from glag.data.errors import GlagError
from glag.extract.losses import build_loss
from glag.extract.losses.label_aware_smoothing import smoothing_factors
from tests.test_classify_cli import invoke, make_bank_and_store


def write_viewed_bank(path, V=3, C=4, D=6, seed=0, logits=True, mixup=0.0):
    """A bank whose train split has V views: view v of row i is row i's features + v + 1 (easy to recognise)."""
    rng = np.random.default_rng(seed)
    counts = np.array([40, 20, 8, 4][:C])
    W, b = rng.standard_normal((C, D)).astype(np.float32), np.zeros(C, np.float32)
    with BankWriter(path, dataset="v", backbone="none", loss="ce", class_names=[f"c{k}" for k in range(C)],
                    train_counts=counts, feature_dim=D, config={"mixup": mixup}, views=V, views_dtype="float32",
                    views_logits=logits) as w:
        for split, per in (("train", counts), ("val", [10] * C), ("test", [10] * C)):
            y = np.repeat(np.arange(C), per)
            x = np.abs(rng.standard_normal((len(y), D)) + 2 * np.eye(C, D)[y]).astype(np.float32)
            w.add_rows(split, x, y, x @ W.T + b, np.arange(len(y)))
            if split == "train":
                train = x
        for v in range(V):
            f = train + v + 1
            w.add_view_rows(v, f, f @ W.T + b if logits else None)
        w.set_head(W, b)
    return path


def test_each_epoch_draws_one_view_per_row(tmp_path):
    base_x = torch.arange(12.0).reshape(6, 2)
    views = torch.stack([base_x + 100 * (v + 1) for v in range(3)]).half()   # (V, N, D), stored as float16
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    real = RealRows(base_x, labels, views)
    cfg = {"sampler": "instance", "epoch_size": "real", "batch_size": 512}
    g = torch.Generator().manual_seed(0)
    plans = [plan_epoch(labels, 3, real.count, None, cfg, g, e) for e in range(20)]
    for p in plans:
        assert sorted(p.real.tolist()) == list(range(6))                      # every row once per epoch
        x = real.raw(p.real, p.views)
        assert x.dtype == torch.float32
        view = ((x - base_x[p.real]) / 100 - 1)[:, 0]                         # which view each row took
        assert torch.equal(view, p.views.float()) and set(view.long().tolist()) <= {0, 1, 2}
    picks = torch.stack([p.views[torch.argsort(p.real)] for p in plans])
    assert len(set(picks.flatten().tolist())) == 3 and len({tuple(r.tolist()) for r in picks}) > 10
    again = plan_epoch(labels, 3, real.count, None, cfg, torch.Generator().manual_seed(0), 0)
    assert torch.equal(again.real, plans[0].real) and torch.equal(again.views, plans[0].views)


def test_views_are_loaded_in_their_stored_type(tmp_path):
    from glag.classify.rows import load_train
    bank = write_viewed_bank(tmp_path / "bank.h5", V=2, logits=False)
    with h5py.File(bank, "r") as f:
        stored = f["train_views/features"].dtype
    with Bank(bank) as b:
        real = load_train(b, {"space": "raw", "tukey_lambda": 0.5}, "cpu", 2)
        assert real.views.dtype == torch.from_numpy(np.zeros(0, stored)).dtype and real.views.shape[0] == 2


def test_the_teacher_is_the_stage_one_head_on_the_raw_rows_of_head_classes():
    from glag.classify.distill import DistillObjective
    from glag.classify.plan import Batch
    from glag.classify.trainer import _teacher
    raws = torch.rand(5, 2)
    labels = torch.tensor([0, 1, 0, 1, 1])
    W, b = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([0.5, -0.5])
    objective = DistillObjective(build_loss("ce", [9, 3], {"epochs": 2}), np.array([True, False]), 2)
    batch = Batch(labels, torch.arange(5), torch.arange(5), None)
    assert torch.allclose(_teacher(objective, batch, raws, (W, b)), raws[labels == 0] @ W.T + b)


def test_crt_on_a_viewed_bank_uses_every_view_by_default_and_records_it(tmp_path):
    bank = write_viewed_bank(tmp_path / "bank.h5")
    res = invoke("run", "--bank", bank, "--method", "crt", "--epochs", 2, "--run", "c", "--no-plots")
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "stage2" / "c" / "config.json").read_text())["cfg"]
    assert cfg["views"] == 3
    res = invoke("run", "--bank", bank, "--method", "crt", "--epochs", 2, "--views", 0, "--run", "c0", "--no-plots")
    assert res.exit_code == 0 and json.loads((tmp_path / "stage2" / "c0" / "config.json").read_text())["cfg"]["views"] == 0
    res = invoke("run", "--bank", bank, "--method", "tau_norm", "--run", "t", "--no-plots")
    assert res.exit_code == 0 and json.loads((tmp_path / "stage2" / "t" / "config.json").read_text())["cfg"]["views"] == 0


@pytest.mark.parametrize("args, msg", [(["--views", 5], "holds 3 augmented views"),
                                       (["--views", -1], "negative"), (["--views", "x"], "whole number")])
def test_bad_views_are_one_line_errors(tmp_path, args, msg):
    bank = write_viewed_bank(tmp_path / "bank.h5")
    res = invoke("run", "--bank", bank, "--method", "crt", "--epochs", 1, *args)
    assert res.exit_code != 0 and msg in res.output and "Traceback" not in res.output
    assert not (tmp_path / "stage2").exists() or not any((tmp_path / "stage2").iterdir())


def test_views_asked_of_a_bank_without_views_name_the_upgrade(tiny_bank):
    res = invoke("run", "--bank", tiny_bank, "--method", "crt", "--epochs", 1, "--views", 2)
    assert res.exit_code != 0 and "glag-extract --dump-only --views 2" in res.output


def test_views_larger_than_memory_say_how_much_is_needed(tmp_path, monkeypatch):
    import glag.classify.memory as memory
    bank = write_viewed_bank(tmp_path / "bank.h5")
    monkeypatch.setattr(memory, "available", lambda device: 1000)
    res = invoke("run", "--bank", bank, "--method", "crt", "--epochs", 1)
    assert res.exit_code != 0 and "GiB of memory" in res.output and "--views" in res.output


def test_label_aware_smoothing_matches_its_formula():
    eps = smoothing_factors([100, 55, 10], head=0.4, tail=0.1, shape="linear")
    assert eps.tolist() == pytest.approx([0.4, 0.25, 0.1])
    concave = smoothing_factors([100, 55, 10], 0.4, 0.1, "concave")
    assert concave[1] > 0.25 and concave[0] == pytest.approx(0.4) and concave[2] == pytest.approx(0.1)
    convex = smoothing_factors([100, 55, 10], 0.4, 0.1, "convex")
    assert convex[1] < 0.25 and convex[0] == pytest.approx(0.4) and convex[2] == pytest.approx(0.1)
    loss = build_loss("las", [100, 55, 10], {"las_smooth_head": 0.4, "las_smooth_tail": 0.1, "las_shape": "linear"})
    z, y = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), torch.tensor([0, 2])
    log_p = torch.log_softmax(z, 1)
    by_hand = [(1 - e) * -log_p[i, c] - e * log_p[i].mean() for i, (c, e) in enumerate([(0, 0.4), (2, 0.1)])]
    assert loss(z, y) == pytest.approx(float(sum(by_hand) / 2), rel=1e-6)


def test_mislas_fine_tunes_the_stage_one_head_with_las_and_says_when_stage_one_had_no_mixup(tmp_path):
    bank = write_viewed_bank(tmp_path / "bank.h5")
    res = invoke("run", "--bank", bank, "--method", "mislas", "--epochs", 1, "--lr", 0.0, "--run", "m", "--no-plots")
    assert res.exit_code == 0, res.output
    run = tmp_path / "stage2" / "m"
    cfg = json.loads((run / "config.json").read_text())["cfg"]
    assert (cfg["head"], cfg["linear_init"], cfg["loss"], cfg["synthetic"]) == ("linear", "stage1", "las", False)
    with Bank(bank) as b:
        W, _ = b.head
    head = torch.load(run / "head.pt", weights_only=True)
    assert torch.allclose(head["fc.weight"], torch.as_tensor(W))              # lr 0: still the stage-one head
    assert "no mixup" in res.output and "no mixup" in (run / "report.md").read_text()
    mixed = write_viewed_bank(tmp_path / "mixed" / "bank.h5", mixup=1.0)
    res = invoke("run", "--bank", mixed, "--method", "mislas", "--epochs", 1, "--run", "m", "--no-plots")
    assert res.exit_code == 0 and "no mixup" not in res.output


@pytest.mark.parametrize("args", [["--method", "lws"], ["--method", "tau_norm"], ["--method", "posthoc_la"],
                                  ["--method", "glag", "--linear-init", "stage1"], ["--method", "glag", "--head", "lws"]])
def test_heads_on_stage_one_weights_refuse_the_tukey_space(tmp_path, args):
    bank, _ = make_bank_and_store(tmp_path)
    res = invoke("run", "--bank", bank, *args, "--space", "tukey", "--epochs", 1)
    assert res.exit_code != 0 and "--space tukey" in res.output and "raw features" in res.output


def test_glag_trains_every_head_the_paper_allows(tmp_path):
    bank, _ = make_bank_and_store(tmp_path)
    for name, args in {"lws": ["--head", "lws"], "stage1": ["--linear-init", "stage1"], "scratch": []}.items():
        res = invoke("run", "--bank", bank, "--epochs", 2, "--run", name, "--no-plots", *args)
        assert res.exit_code == 0, res.output
    lws = torch.load(tmp_path / "stage2" / "lws" / "head.pt", weights_only=True)
    assert set(lws) == {"weight", "bias", "scales"} and not torch.allclose(lws["scales"], torch.ones(6))


def test_a_tukey_space_run_keeps_working_with_a_fresh_head(tmp_path):
    bank, _ = make_bank_and_store(tmp_path)
    res = invoke("run", "--bank", bank, "--space", "tukey", "--epochs", 1, "--no-plots")
    assert res.exit_code == 0, res.output
    with pytest.raises(GlagError):
        from glag.classify.config import check, defaults
        with Bank(bank) as b:
            check(dict(defaults(), head="lws", space="tukey"), b)


def test_afg_moments_from_views_pool_the_views_and_keep_base_rows_as_sources(tmp_path):
    from click.testing import CliRunner
    from glag.data.store import Store
    from glag.generate.afg import AdaptiveFeatureGenerator, train_chunks
    from glag.generate.cli import main as generate
    bank = write_viewed_bank(tmp_path / "bank.h5", V=2)
    with Bank(bank) as b:
        chunks, counts = train_chunks(b, "views")
        starts, labels = zip(*[(start, c["labels"]) for start, c in chunks])
        assert counts.tolist() == (b.train_counts * 3).tolist() and starts == (0, 72, 144)
        assert all(np.array_equal(l, labels[0]) for l in labels)               # each view keeps the rows' labels
        cfg = dict(k=1, tukey=0.5, beta_init=0.6, gamma=0.0, gamma_mode="isotropic", tail="max-count",
                   tail_max_count=10, tail_fraction=0.5, max_rows_per_class=0, balance_head=True, seed=0,
                   device="cpu", jobs=1, sample_per_class=0)
        pooled = AdaptiveFeatureGenerator(dict(cfg, moments_from="views")).fit(b)
        base = AdaptiveFeatureGenerator(dict(cfg, moments_from="base")).fit(b)
        train = b.load("train")["features"]
        views = b.load_views(("features",))["features"]
        x = np.concatenate([train, *views])
        y = np.tile(b.load("train")["labels"], 3)
        for k in range(4):
            assert np.allclose(pooled.moments.means[k].numpy(), (x[y == k] ** 0.5).mean(0), atol=1e-5)
            assert np.allclose(base.moments.means[k].numpy(), (train[y[:72] == k] ** 0.5).mean(0), atol=1e-5)
        assert pooled.supports.source.max() < b.rows("train")                  # sources are train rows
    out = tmp_path / "s.h5"
    res = CliRunner().invoke(generate, ["--bank", str(bank), "--moments-from", "views", "--out", str(out)])
    assert res.exit_code == 0, res.output
    with Bank(bank) as b, Store(out, b) as s:
        assert s.config["moments_from"] == "views"
    plain = write_tiny_bank_without_views(tmp_path / "plain" / "bank.h5")
    res = CliRunner().invoke(generate, ["--bank", str(plain), "--moments-from", "views"])
    assert res.exit_code != 0 and "--moments-from views" in res.output and "--dump-only --views" in res.output


def write_tiny_bank_without_views(path):
    from tests.conftest import write_tiny_bank
    return write_tiny_bank(path)
