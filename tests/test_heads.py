"""Every registered stage-two head: shapes, finiteness, gradients, calibration, linear equivalent."""
import numpy as np
import pytest
import torch

from glag.classify.heads import HEADS, HeadBase, HeadContext, build_head, register_head
from glag.classify.heads.base import parse_taus
from glag.data.errors import GlagError

C, D = 6, 8


def context(seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((C, D)).astype(np.float32)
    w[0] *= 4  # a head class with a large weight norm, as long-tailed training leaves it
    return HeadContext(w, rng.standard_normal(C).astype(np.float32), np.array([60, 40, 20, 10, 5, 2]), seed)


def rows(n=120, seed=1):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % C
    means = torch.rand(C, D, generator=g) * 3
    return (means[y] + 0.3 * torch.randn(n, D, generator=g)).clamp_min(0), y


@pytest.mark.parametrize("name", sorted(HEADS))
def test_head_maps_rows_to_finite_logits(name):
    head = build_head(name, context(), {})
    x, y = rows()
    head.calibrate((x, y), (x, y))
    out = head(x)
    assert out.shape == (len(x), C) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(HEADS))
def test_trainable_heads_get_gradients_and_posthoc_heads_have_none(name):
    head = build_head(name, context(), {})
    params = [p for p in head.parameters() if p.requires_grad]
    assert bool(params) == head.trainable
    if head.trainable:
        x, y = rows()
        torch.nn.functional.cross_entropy(head(x), y).backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


@pytest.mark.parametrize("name", sorted(HEADS))
def test_linear_equivalent_predicts_the_same(name):
    head = build_head(name, context(), {})
    x, y = rows()
    head.calibrate((x, y), (x, y))
    W, b = head.linear_equivalent()
    assert torch.equal((x @ W.T + b).argmax(1), head(x).argmax(1))


@pytest.mark.parametrize("name", sorted(HEADS))
def test_state_dict_restores_the_head(name):
    x, y = rows()
    head = build_head(name, context(), {})
    head.calibrate((x, y), (x, y))
    fresh = build_head(name, context(seed=5), {})
    fresh.load_state_dict(head.state_dict())
    assert torch.allclose(fresh(x), head(x))


def test_options_reach_only_their_head():
    head = build_head("lws", context(), {"lws_init": 0.5, "tau_norm_taus": "1.0", "ncm_metric": "euclidean"})
    assert torch.all(head.scales == 0.5)


def test_lws_starts_as_the_stage_one_head():
    ctx, (x, _) = context(), rows()
    head = build_head("lws", ctx, {})
    assert torch.allclose(head(x), x @ torch.from_numpy(ctx.weight).T + torch.from_numpy(ctx.bias), atol=1e-5)


def test_tau_norm_sweep_picks_the_best_val_tau():
    ctx = context()
    x, y = rows()
    head = build_head("tau_norm", ctx, {"tau_norm_taus": "0:2:0.5"})
    info = head.calibrate((x, y), (x, y))
    scores = info["val_accuracy_by_tau"]
    assert set(scores) == {0.0, 0.5, 1.0, 1.5, 2.0}
    assert scores[info["tau"]] == max(scores.values()) and float(head.tau) == info["tau"]


def test_tau_sweep_without_val_is_refused_but_one_tau_is_fine():
    x, y = rows()
    with pytest.raises(GlagError, match="--tau-norm-taus"):
        build_head("tau_norm", context(), {"tau_norm_taus": "0:1:0.5"}).calibrate((x, y), None)
    with pytest.raises(GlagError, match="--posthoc-la-taus"):                 # its default sweeps too
        build_head("posthoc_la", context(), {}).calibrate((x, y), None)
    assert build_head("posthoc_la", context(), {"posthoc_la_taus": "1.0"}).calibrate((x, y), None)["tau"] == 1.0


def test_posthoc_la_subtracts_tau_log_prior():
    ctx, (x, _) = context(), rows()
    head = build_head("posthoc_la", ctx, {"posthoc_la_taus": "0.5"})
    head.calibrate((x, _), None)
    prior = ctx.train_counts / ctx.train_counts.sum()
    plain = x @ torch.from_numpy(ctx.weight).T + torch.from_numpy(ctx.bias)
    assert torch.allclose(head(x) - plain, torch.as_tensor(-0.5 * np.log(prior), dtype=torch.float32).expand_as(plain),
                          atol=1e-5)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_ncm_classifies_separated_classes(metric):
    x, y = rows()
    head = build_head("ncm", context(), {"ncm_metric": metric})
    head.calibrate((x, y), None)
    assert (head(x).argmax(1) == y).float().mean() > 0.9


def test_parse_taus():
    assert parse_taus("1.5") == [1.5]
    assert parse_taus("0:1:0.25") == [0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(GlagError):
        parse_taus("0:1")


def test_registering_a_name_twice_raises():
    with pytest.raises(KeyError, match="already registered"):
        register_head("linear")(type("Other", (HeadBase,), {}))
