"""Synthetic rows rebuilt with the current beta, feature spaces, and the samplers."""
import numpy as np
import torch

from glag.classify.batches import SyntheticRows, class_order, instance_order
from glag.data.bank import Bank
from glag.data.tukey import tukey_inverse
from tests.test_classify_cli import make_bank_and_store


def test_rebuilt_rows_use_the_current_beta(tmp_path):
    bank_path, store_path = make_bank_and_store(tmp_path)
    from glag.data.store import Store
    with Bank(bank_path) as bank, Store(store_path, bank) as store:
        W, b = (torch.from_numpy(t) for t in bank.head)
        block = store.epoch_rows(1)
        a, d, y = (torch.from_numpy(block[k]) for k in ("a", "d", "label"))
        beta = np.full(bank.num_classes, 0.6)
        beta[4] = 0.1
        tukey = SyntheticRows(store, "tukey", 0.5, (W, b)).rows(1, beta)
        expect = a + torch.as_tensor(beta, dtype=torch.float32)[y][:, None] * d       # s = a + beta_k d
        assert torch.allclose(tukey.features, expect, atol=1e-6)
        raw = SyntheticRows(store, "raw", 0.5, (W, b)).rows(1, beta)
        assert torch.allclose(raw.features, tukey_inverse(expect, 0.5), atol=1e-5)
        assert (raw.features >= 0).all()
        assert torch.allclose(raw.teacher, raw.features @ W.T + b, atol=1e-4)        # stage-one head, raw space
        beta[4] = 0.9
        again = SyntheticRows(store, "tukey", 0.5, (W, b)).rows(1, beta)
        rows4 = y == 4
        assert torch.allclose(again.features[rows4] - tukey.features[rows4], 0.8 * d[rows4], atol=1e-5)
        assert torch.equal(again.features[~rows4], tukey.features[~rows4])


def test_class_sampler_is_balanced_over_a_long_tailed_pool():
    labels = torch.repeat_interleave(torch.arange(4), torch.tensor([5000, 500, 50, 5]))
    draws = labels[class_order(labels, 5, torch.Generator().manual_seed(0))]
    counts = torch.bincount(draws, minlength=5).double()
    expected = len(draws) / 4
    chi2 = float(((counts[:4] - expected) ** 2 / expected).sum())
    assert chi2 < 21.1  # chi-square, 3 dof: a balanced sampler fails this with probability 1e-4
    assert counts[4] == 0  # absent classes are never drawn
    assert counts[0] < 0.3 * len(draws)  # an instance sampler would give class 0 90%
    order = class_order(labels, 5, torch.Generator().manual_seed(0))
    rare = order[labels[order] == 3]
    assert set(rare.tolist()) == set(range(5550, 5555))  # every row of the rarest class gets used


def test_instance_order_is_a_permutation():
    labels = torch.arange(100) % 3
    order = instance_order(labels, 3, torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == list(range(100))
