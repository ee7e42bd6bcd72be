"""An epoch's draws (real rows and synthetic ones at each class's gap rate), synthetic rows mixed with the
current beta, and the samplers."""
import numpy as np
import pytest
import torch

from glag.classify.plan import batches, class_order, epoch_size, instance_order, plan_epoch
from glag.classify.synthetic import SyntheticRows
from glag.data.bank import Bank
from glag.data.errors import GlagError
from glag.data.store import Store
from glag.data.tukey import tukey_inverse
from tests.test_classify_cli import make_bank_and_store


@pytest.fixture
def bank_store(tmp_path):
    bank_path, store_path = make_bank_and_store(tmp_path)
    with Bank(bank_path) as bank, Store(store_path, bank) as store:
        yield bank, store


def test_rebuilt_rows_use_the_current_beta(bank_store):
    bank, store = bank_store
    synth = SyntheticRows(store, "tukey")
    classes = np.array([3, 4, 4, 5, 1, 0, 3])
    drawn = synth.take(synth.draw(classes, synth.sources(classes, np.arange(7), 0), epoch=1, chunk=0), slice(None))
    a, d, y = drawn.a, drawn.d, drawn.labels
    assert torch.equal(y, torch.as_tensor(classes))
    beta = torch.full((6,), 0.6)
    beta[4] = 0.1
    tukey, raw_of_tukey = synth.mix(drawn, beta)
    assert torch.allclose(tukey, a + beta[y][:, None] * d, atol=1e-6)                  # s = a + beta_k d
    raw, _ = SyntheticRows(store, "raw").mix(drawn, beta)
    assert torch.allclose(raw, tukey_inverse(tukey, 0.5), atol=1e-5) and (raw >= 0).all()
    assert torch.allclose(raw_of_tukey, raw, atol=1e-5)
    beta[4] = 0.9
    again, _ = synth.mix(drawn, beta)
    rows4 = y == 4
    assert torch.allclose(again[rows4] - tukey[rows4], 0.8 * d[rows4], atol=1e-5)
    assert torch.equal(again[~rows4], tukey[~rows4])
    assert (d[y < 3] == 0).all() and (d[y >= 3].abs().sum(1) > 0).all()             # head classes: own distribution


def test_draws_are_a_function_of_store_seed_and_epoch(bank_store):
    _, store = bank_store
    classes = np.repeat([3, 4, 5, 0], 5)
    items = np.tile(np.arange(5), 4)
    one = SyntheticRows(store, "raw", seed=0)
    src = one.sources(classes, items, 2)
    first = one.draw(classes, src, epoch=2, chunk=1)
    again = SyntheticRows(store, "raw", seed=0).draw(classes, src, epoch=2, chunk=1)
    assert torch.equal(first.at, again.at)
    assert torch.equal(first.a, again.a) and torch.equal(first.d, again.d)
    for other in (SyntheticRows(store, "raw", seed=1).draw(classes, src, 2, 1), one.draw(classes, src, 3, 1),
                  one.draw(classes, src, 2, 0)):
        assert not torch.equal(first.a, other.a)
    order = np.random.default_rng(0).permutation(len(classes))           # the order of the items is kept
    shuffled = one.take(one.draw(classes[order], src[order], epoch=2, chunk=1), slice(None))
    assert torch.equal(shuffled.labels, torch.as_tensor(classes[order]))


def test_each_class_is_synthetic_at_its_gap_rate(bank_store):
    bank, store = bank_store
    synth = SyntheticRows(store, "raw")
    labels = torch.from_numpy(bank.load("train")["labels"])
    cfg = {"sampler": "class", "epoch_size": 60000, "batch_size": 512}
    plan = plan_epoch(labels, 6, 0, synth, cfg, torch.Generator().manual_seed(0), epoch=0)
    assert len(plan) == 60000
    real_n = np.bincount(labels.numpy(), minlength=6)
    rate = synth.need / (real_n + synth.need)                            # the gap rule's synthetic share
    y, is_synth = plan.labels.numpy(), (plan.real < 0).numpy()
    for k in range(6):
        n = (y == k).sum()
        assert abs(n - 10000) < 5 * np.sqrt(10000 * 5 / 6 / 6)            # class-balanced
        share = is_synth[y == k].mean()
        assert abs(share - rate[k]) < 5 * np.sqrt(rate[k] * (1 - rate[k]) / n) + 1e-9
    real = plan.real[~torch.from_numpy(is_synth)]
    assert torch.equal(labels[real], plan.labels[~torch.from_numpy(is_synth)])     # real draws are of their class
    tail = np.isin(y, store.tail_classes)
    src = plan.sources[is_synth & tail]
    assert (src >= 0).all() and (src < real_n[y[is_synth & tail]]).all()
    assert (plan.sources[is_synth & ~tail] == -1).all()


def test_batches_place_real_and_synthetic_rows_in_plan_order(bank_store):
    bank, store = bank_store
    synth = SyntheticRows(store, "raw")
    labels = torch.from_numpy(bank.load("train")["labels"])
    plan = plan_epoch(labels, 6, 0, synth, {"sampler": "class", "epoch_size": "pool", "batch_size": 64},
                      torch.Generator(), 0)
    assert len(plan) == len(labels) + synth.need.sum()
    seen = []
    for b in batches(plan, synth, 64, 0, "cpu"):
        assert len(b.real_at) + (0 if b.synth_at is None else len(b.synth_at)) == len(b.labels)
        if b.synth_at is not None:
            assert torch.equal(synth.take(b.drawn, b.synth_rows).labels, b.labels[b.synth_at])
        assert torch.equal(labels[b.real_rows], b.labels[b.real_at])
        seen.append(b.labels)
    assert torch.equal(torch.cat(seen), plan.labels)


def test_without_a_store_an_epoch_is_the_samplers_order_of_the_real_rows():
    labels = torch.repeat_interleave(torch.arange(3), torch.tensor([50, 10, 3]))
    plan = plan_epoch(labels, 3, 0, None, {"sampler": "class", "epoch_size": "pool"}, torch.Generator().manual_seed(4), 0)
    order = class_order(labels, 3, torch.Generator().manual_seed(4))
    assert torch.equal(plan.real, order) and torch.equal(plan.labels, labels[order]) and plan.views is None


def test_epoch_size_values():
    assert epoch_size("real", 10, 40) == 10 and epoch_size("pool", 10, 40) == 40 and epoch_size("25", 10, 40) == 25
    assert epoch_size("auto", 10, 40, batch_size=1) == 40                     # small pools: the pool
    assert epoch_size("auto", 10_000, 2_000_000, batch_size=8) == 10_000     # large ones: len(train)
    assert epoch_size("auto", 100, 2_000_000, batch_size=8) == 1024          # at least 128 batches
    for bad in ("0", "many", -3):
        with pytest.raises(GlagError, match="--epoch-size"):
            epoch_size(bad, 10, 40)


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
