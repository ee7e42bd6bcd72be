"""Stage-one losses and the alpha schedule: interface over LOSSES, formulas by hand."""
import inspect
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from glag.extract.losses import ALPHA_FORMS, LOSSES, LossBase, alpha_t, build_loss, loss_help, loss_options, register_loss

COUNTS = [500, 120, 40, 9, 2]
T = 6


def batch(seed=0, b=16, c=len(COUNTS)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, generator=g) * 3, torch.randint(0, c, (b,), generator=g)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_is_finite_differentiable_and_updatable(name):
    loss = build_loss(name, COUNTS, {"epochs": T})
    assert isinstance(loss, LossBase)
    logits, target = batch()
    for epoch in range(T):
        loss.update(epoch)
        z = logits.clone().requires_grad_()
        value = loss(z, target)
        assert value.ndim == 0 and torch.isfinite(value)
        value.backward()
        assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_class_counts_come_first(name):
    params = list(inspect.signature(LOSSES[name].__init__).parameters)
    assert params[1] == "class_counts"


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_update_depends_on_epoch_alone(name):
    """Jumping straight to an epoch (a resumed run) gives the same loss as walking there."""
    logits, target = batch(1)
    walked = build_loss(name, COUNTS, {"epochs": T})
    for epoch in range(T):
        walked.update(epoch)
        jumped = build_loss(name, COUNTS, {"epochs": T})
        jumped.update(epoch)
        assert torch.equal(walked(logits, target), jumped(logits, target))


def test_log_prior_is_the_label_distribution():
    loss = LOSSES["ce"](COUNTS)
    assert loss.log_prior.shape == (len(COUNTS),)
    assert torch.allclose(loss.log_prior.exp().sum(), torch.tensor(1.0))
    assert math.isclose(loss.log_prior[0].item(), math.log(500 / sum(COUNTS)), rel_tol=1e-6)


@pytest.mark.parametrize("bad", [[10, 0, 3], [], [[1, 2], [3, 4]], [5, -1]])
def test_bad_class_counts_are_rejected(bad):
    with pytest.raises(ValueError, match="class_counts"):
        LOSSES["ce"](bad)


def test_graloss_is_ce_at_epoch_0_and_logit_adjust_with_tau_alpha_later():
    logits, target = batch(2)
    gra = build_loss("graloss", COUNTS, {"epochs": T, "graloss_c": 3.0, "graloss_s": 0.5})
    gra.update(0)
    assert gra.alpha == 0.0
    assert torch.allclose(gra(logits, target), F.cross_entropy(logits, target))
    for epoch in range(1, T):
        gra.update(epoch)
        tau = alpha_t(epoch, T, "convex", 3.0, 0.5)
        assert gra.alpha == pytest.approx(tau) and tau > 0
        expected = LOSSES["logit_adjust"](COUNTS, tau=tau)(logits, target)
        assert torch.allclose(gra(logits, target), expected)


def test_balanced_softmax_is_logit_adjust_with_tau_1():
    logits, target = batch(3)
    assert torch.allclose(LOSSES["balanced_softmax"](COUNTS)(logits, target),
                          LOSSES["logit_adjust"](COUNTS, tau=1.0)(logits, target))


def test_logit_adjust_by_hand():
    counts, logits, target = [3, 1], torch.tensor([[0.2, 0.7]]), torch.tensor([1])
    tau = 0.7
    z = [0.2 + tau * math.log(3 / 4), 0.7 + tau * math.log(1 / 4)]   # Eq. (2)
    expected = -z[1] + math.log(math.exp(z[0]) + math.exp(z[1]))
    assert LOSSES["logit_adjust"](counts, tau=tau)(logits, target).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("form", ALPHA_FORMS)
@pytest.mark.parametrize("total", [1, 2, 7, 200])
def test_alpha_rises_from_0_to_its_maximum_at_the_last_epoch(form, total):
    alphas = [alpha_t(e, total, form, c=2.5, s=0.8) for e in range(total)]
    assert alphas[0] == 0.0
    assert all(b >= a for a, b in zip(alphas, alphas[1:]))
    assert max(alphas) == alphas[-1]
    if total > 1:
        assert alphas[-1] == pytest.approx(0.8 * 1.5)   # s * (c - 1), the same for every form


def test_alpha_convex_values_and_form_order():
    assert alpha_t(199, 200, "convex", c=2, s=1) == pytest.approx(1.0)
    assert alpha_t(1, 3, "convex", c=2, s=1) == pytest.approx(math.sqrt(2) - 1)   # Eq. (3), ep = 1/2
    for e in range(1, 9):  # strictly between the end points concave > linear > convex
        assert alpha_t(e, 10, "concave") > alpha_t(e, 10, "linear") > alpha_t(e, 10, "convex")


@pytest.mark.parametrize("kwargs, match", [
    (dict(epoch=0, total_epochs=5, form="cubic"), "convex"),
    (dict(epoch=0, total_epochs=5, c=1.0), "c > 1"),
    (dict(epoch=0, total_epochs=0), "total_epochs"),
    (dict(epoch=5, total_epochs=5), "0..4"),
    (dict(epoch=-1, total_epochs=5), "0..4"),
])
def test_alpha_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        alpha_t(**kwargs)


def test_graloss_validates_its_options_when_built():
    with pytest.raises(ValueError, match="convex"):
        build_loss("graloss", COUNTS, {"epochs": T, "graloss_form": "wavy"})


def test_ldam_margins_by_hand():
    loss = LOSSES["ldam"]([16, 1], max_m=0.5, s=10.0)
    assert torch.allclose(loss.margin, torch.tensor([0.25, 0.5]))   # 16^-1/4 = 1/2 of 1^-1/4
    logits, target = torch.tensor([[1.0, 0.5], [0.2, 0.9]]), torch.tensor([0, 1])
    z0 = [10 * (1.0 - 0.25), 10 * 0.5]
    z1 = [10 * 0.2, 10 * (0.9 - 0.5)]
    expected = 0.5 * (math.log(sum(map(math.exp, z0))) - z0[0] + math.log(sum(map(math.exp, z1))) - z1[1])
    assert loss(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_ldam_drw_weights_switch_on_at_drw_epoch():
    counts, beta = [100, 10], 0.99
    logits, target = batch(4, b=32, c=2)
    loss = build_loss("ldam", counts, {"epochs": 10, "ldam_beta": beta, "ldam_s": 1.0})
    assert loss.drw_epoch == 8                                     # default: 4/5 of the epochs
    w = torch.tensor([(1 - beta) / (1 - beta ** n) for n in counts])
    w = w / w.sum() * 2
    assert torch.allclose(loss.drw_weight, w) and w[1] > w[0]
    shifted = logits - F.one_hot(target, 2) * loss.margin
    plain, weighted = F.cross_entropy(shifted, target), F.cross_entropy(shifted, target, weight=w)
    assert not torch.allclose(plain, weighted)
    for epoch in range(10):
        loss.update(epoch)
        assert torch.allclose(loss(logits, target), weighted if epoch >= 8 else plain)


def test_ldam_drw_epoch_option_and_never():
    assert build_loss("ldam", COUNTS, {"epochs": 200, "ldam_drw_epoch": 3}).drw_epoch == 3
    never = build_loss("ldam", COUNTS, {"epochs": 5, "ldam_drw_epoch": 5})
    never.update(4)
    assert not never.drw_on
    with pytest.raises(ValueError, match="beta"):
        LOSSES["ldam"](COUNTS, beta=1.0)


def test_focal_is_ce_at_gamma_0_and_smaller_otherwise():
    logits, target = batch(5)
    ce = F.cross_entropy(logits, target)
    assert torch.allclose(LOSSES["focal"](COUNTS, gamma=0.0)(logits, target), ce)
    assert LOSSES["focal"](COUNTS, gamma=2.0)(logits, target) < ce
    p = 1 / (1 + math.exp(-1.0))   # two classes, true logit ahead by 1
    got = LOSSES["focal"]([1, 1], gamma=2.0)(torch.tensor([[1.0, 0.0]]), torch.tensor([0])).item()
    assert got == pytest.approx(-(1 - p) ** 2 * math.log(p), rel=1e-5)
    with pytest.raises(ValueError, match="gamma"):
        LOSSES["focal"](COUNTS, gamma=-1)


def test_registering_a_name_twice_raises():
    with pytest.raises(KeyError, match="ce"):
        register_loss("ce")(type("Other", (LossBase,), {}))
    assert LOSSES["ce"].__name__ == "CrossEntropy"


def test_build_loss_passes_only_its_prefixed_options():
    cfg = {"epochs": 10, "lr": 0.1, "graloss_c": 3.0, "graloss_s": 0.5, "logit_adjust_tau": 0.3,
           "focal_gamma": 2.0, "ldam_max_m": 0.3}
    gra = build_loss("graloss", COUNTS, cfg)
    assert (gra.c, gra.s, gra.form, gra.total_epochs) == (3.0, 0.5, "convex", 10)
    assert build_loss("logit_adjust", COUNTS, cfg).tau == 0.3
    assert build_loss("focal", COUNTS, cfg).gamma == 2.0
    assert build_loss("ldam", COUNTS, cfg).margin.max().item() == pytest.approx(0.3)
    assert isinstance(build_loss("ce", COUNTS, cfg), LOSSES["ce"])


def test_build_loss_errors():
    with pytest.raises(ValueError, match="balanced_softmax"):   # lists the choices
        build_loss("nope", COUNTS, {"epochs": 3})
    with pytest.raises(ValueError, match="graloss_x|'x'"):
        build_loss("graloss", COUNTS, {"epochs": 3, "graloss_x": 1})
    with pytest.raises(ValueError, match="epochs"):
        build_loss("graloss", COUNTS, {})
    assert build_loss("ce", COUNTS, {}).num_classes == len(COUNTS)   # ce needs no epochs


def test_build_loss_ignores_options_of_a_longer_name(monkeypatch):
    class Logit(LossBase):
        def __init__(self, class_counts, k: float = 1.0):
            super().__init__(class_counts)
            self.k = k
    monkeypatch.setitem(LOSSES, "logit", Logit)
    loss = build_loss("logit", COUNTS, {"logit_k": 4.0, "logit_adjust_tau": 0.3})
    assert loss.k == 4.0


def test_loss_options_are_the_keyword_defaults():
    assert loss_options("graloss") == {"form": "convex", "c": 2.0, "s": 1.0}
    assert loss_options("logit_adjust") == {"tau": 0.5}
    assert loss_options("ce") == {}
    assert set(loss_options("ldam")) == {"max_m", "s", "drw_epoch", "beta"}
    for name in LOSSES:   # every option has a default a CLI can show
        assert "class_counts" not in loss_options(name) and "total_epochs" not in loss_options(name)
    with pytest.raises(ValueError, match="graloss"):
        loss_options("nope")


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_option_has_help_text(name):
    helps = loss_help(name)
    assert set(helps) == set(loss_options(name)) and all(helps.values())


def test_losses_are_pure_torch():
    """classify imports glag.extract.losses; it must not pull in torchvision or the data readers."""
    code = "import glag.extract.losses, sys; assert not {'torchvision', 'glag.extract.backbones'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_bf16_logits_give_a_float32_loss_close_to_float32_logits(name):
    """Under CUDA/CPU autocast the head emits bf16 logits; the loss must not lose its margins."""
    logits, target = batch(6)
    logits = logits.to(torch.bfloat16)
    loss = build_loss(name, COUNTS, {"epochs": T})
    loss.update(T - 1)
    low, full = loss(logits, target), loss(logits.float(), target)
    assert low.dtype == torch.float32 and torch.allclose(low, full, rtol=1e-3)
