"""Mixup in stage one (--mixup ALPHA): the mixing, the mixed loss, and its effect on training."""
import math

import pytest
import torch
from click.testing import CliRunner

from glag.data.bank import Bank
from glag.extract.augment import mixup, mixup_loss
from glag.extract.checkpoint import checkpoint_path, load_checkpoint
from glag.extract.cli import main
from glag.extract.losses import LOSSES, build_loss

FAST = ["--dataset", "digits", "--epochs", "1", "--threads", "1"]


def test_mixed_loss_on_a_hand_example():
    """lam * CE(z, y) + (1 - lam) * CE(z, y[perm]) with the numbers written out."""
    z = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]])                      # (B=2, C=3)
    y, perm, lam = torch.tensor([0, 2]), torch.tensor([1, 0]), 0.3
    log_softmax = lambda row, k: row[k] - math.log(sum(math.exp(v) for v in row))
    rows = z.tolist()
    ce_y = -(log_softmax(rows[0], 0) + log_softmax(rows[1], 2)) / 2            # y = (0, 2)
    ce_perm = -(log_softmax(rows[0], 2) + log_softmax(rows[1], 0)) / 2         # y[perm] = (2, 0)
    got = mixup_loss(torch.nn.functional.cross_entropy, z, y, torch.tensor(lam), perm)
    assert float(got) == pytest.approx(lam * ce_y + (1 - lam) * ce_perm, rel=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_mixed_loss_works_with_every_stage_one_loss(name):
    loss = build_loss(name, [50, 20, 5], {"epochs": 4})
    loss.update(3)                                     # late epoch: alpha, DRW weights active
    z = torch.randn(6, 3, requires_grad=True)
    y, perm = torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([5, 4, 3, 2, 1, 0])
    assert torch.allclose(mixup_loss(loss, z, y, torch.tensor(1.0), perm), loss(z, y))
    mixed = mixup_loss(loss, z, y, torch.tensor(0.25), perm)
    expected = 0.25 * loss(z, y) + 0.75 * loss(z, y[perm])
    assert torch.allclose(mixed, expected) and torch.isfinite(mixed)
    mixed.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()


def test_mixup_draws_from_the_run_generator_only():
    x = torch.randn(8, 3, 4, 4).contiguous(memory_format=torch.channels_last)
    global_state = torch.get_rng_state()
    a = mixup(x, 0.2, torch.Generator().manual_seed(3))
    b = mixup(x, 0.2, torch.Generator().manual_seed(3))
    c = mixup(x, 0.2, torch.Generator().manual_seed(4))
    assert torch.equal(torch.get_rng_state(), global_state)                  # torch's global stream untouched
    mixed, lam, perm = a
    assert torch.equal(mixed, b[0]) and lam == b[1] and torch.equal(perm, b[2])
    assert not torch.equal(mixed, c[0])
    assert sorted(perm.tolist()) == list(range(8)) and 0 <= float(lam) <= 1 and lam.shape == ()
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[perm])
    assert mixed.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_lambda_follows_beta_alpha_alpha(alpha):
    g = torch.Generator().manual_seed(0)
    lams = torch.stack([mixup(torch.zeros(2, 1, 1, 1), alpha, g)[1] for _ in range(4000)]).double()
    var = 1 / (4 * (2 * alpha + 1))                                            # Var Beta(a, a)
    assert abs(float(lams.mean()) - 0.5) < 0.03 and abs(float(lams.var()) - var) < 0.02
    assert bool(((lams >= 0) & (lams <= 1)).all())


def _weights(out):
    return load_checkpoint(checkpoint_path(out))["model"]


def test_mixup_changes_training_and_is_recorded(tmp_path):
    plain, mixed = tmp_path / "plain.h5", tmp_path / "mixed.h5"
    for out, extra in ((plain, []), (mixed, ["--mixup", "0.4"])):
        result = CliRunner().invoke(main, [*FAST, "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
    a, b = _weights(plain), _weights(mixed)
    assert any(not torch.equal(a[k], b[k]) for k in a)
    with Bank(plain) as x, Bank(mixed) as y:
        assert x.config["mixup"] == 0.0 and y.config["mixup"] == 0.4

