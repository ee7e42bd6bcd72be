"""Class moments, thin factors, tail rules and the gap rule of the Adaptive Feature Generator."""
import numpy as np
import pytest
import torch

from glag.data.errors import GlagError
from glag.data.tukey import tukey_transform
from glag.data.synthesis import scale_for
from glag.generate.sampler import build_factors, gap_counts
from glag.generate.stats import class_moments
from glag.generate.tail import TAIL_RULES, tail_mask
from glag.generate.toybank import ToyBank

COUNTS = np.array([40, 25, 9, 6, 3, 1, 0])   # one class with N_k > D, one single-sample class, one empty class
D = 6


def toy(counts=COUNTS, d=D, chunk_rows=7):
    return ToyBank(counts, d, seed=3, chunk_rows=chunk_rows)


@pytest.mark.parametrize("lam,n_jobs", [(1.0, 1), (0.5, 1), (0.5, 2)])
def test_moments_match_numpy(lam, n_jobs):
    bank = toy()
    rows = bank.load()
    assert (np.diff(rows["labels"]) != 0).sum() > len(COUNTS)       # classes interleave across chunks
    x = tukey_transform(rows["features"].astype(np.float64), lam)
    m = class_moments(bank.iter_chunks(), bank.train_counts, lam, n_jobs=n_jobs)
    for k, n in enumerate(COUNTS):
        if n == 0:
            continue
        xk = x[rows["labels"] == k]
        np.testing.assert_allclose(m.means[k].numpy(), xk.mean(0), rtol=1e-6, atol=1e-6)     # Eq. 5
        if n > 1:
            np.testing.assert_allclose(m.covariance(k).numpy(), np.cov(xk, rowvar=False), atol=2e-6)  # Eq. 6
        # rows keep bank order, and index says which bank row each one is
        assert (np.diff(m.index[k]) > 0).all() and (rows["labels"][m.index[k]] == k).all()
        np.testing.assert_allclose(m.centred[k].double().numpy() + m.means[k].numpy(), x[m.index[k]], atol=1e-5)


def test_single_sample_class_has_zero_covariance():
    m = class_moments(toy().iter_chunks(), COUNTS, 0.5)
    assert torch.count_nonzero(m.centred[5]) == 0
    assert torch.isfinite(m.covariance(5)).all() and m.covariance(5).abs().max() == 0


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_factors_reproduce_covariance(n_jobs):
    """s_k^2 F_k^T F_k = Sigma_k for thin rows (N_k <= D) and the QR factor (N_k > D)."""
    m = class_moments(toy().iter_chunks(), COUNTS, 0.5)
    sigma = {k: m.covariance(k) for k in range(len(COUNTS)) if COUNTS[k]}
    qr = build_factors(m, keep_rows=[2, 3, 4, 5], n_jobs=n_jobs)
    assert sorted(qr) == [0, 1, 2]                    # class 2 (tail, N_k > D) keeps its rows too
    for k, s in sigma.items():
        F = (qr[k] if k in qr else m.centred[k]).double()
        assert F.shape == (min(COUNTS[k], D), D)
        np.testing.assert_allclose((scale_for(COUNTS[k]) ** 2 * F.T @ F).numpy(), s.numpy(), atol=1e-5)
    assert m.centred[0] is None and m.centred[2] is not None     # QR'd non-tail rows are freed


def test_counts_disagreeing_with_labels_is_an_error():
    bank = toy()
    wrong = COUNTS.copy()
    wrong[0] -= 1
    wrong[1] += 1
    with pytest.raises(GlagError, match="train_counts"):
        class_moments(bank.iter_chunks(), wrong, 0.5)


def test_bad_features_are_refused():
    x = np.ones((4, 3), np.float32)
    labels = np.zeros(4, np.int64)
    for bad, lam, msg in ((np.nan, 0.5, "NaN or Inf"), (np.inf, 1.0, "NaN or Inf"), (-0.5, 0.5, "negative"),
                          (-0.5, 1.0, "features are >= 0")):     # the bank contract holds without a power too
        y = x.copy()
        y[1, 2] = bad
        with pytest.raises(GlagError, match=msg):
            class_moments([(0, {"features": y, "labels": labels})], [4], lam)


def test_gap_rule_and_cap():
    counts = np.array([100, 60, 10, 0])
    tail = np.array([False, True, True, False])
    assert list(gap_counts(counts, tail)) == [0, 40, 90, 0]
    assert list(gap_counts(counts, tail, cap=50)) == [0, 40, 50, 0]
    counts = np.array([100, 150, 10])
    assert list(gap_counts(counts, np.array([False, False, True]))) == [50, 0, 140]
    assert list(gap_counts(counts, np.array([False, False, True]), balance_head=False)) == [0, 0, 140]


def test_round_robin_uses_every_sample_equally_across_epochs():
    from glag.classify.synthetic import source_samples
    counts, need, tail = np.array([7, 3]), np.array([0, 5]), np.array([False, True])
    used = np.zeros(3, int)
    for epoch in range(6):
        local = source_samples(np.ones(5, np.int64), np.arange(5), epoch, need, counts, tail)
        np.add.at(used, local, 1)
    assert used.sum() == 30 and used.max() - used.min() == 0
    assert (source_samples(np.zeros(4, np.int64), np.arange(4), 2, np.array([4, 0]), counts, tail) == -1).all()


def test_tail_rules():
    counts = np.array([500, 120, 100, 30, 5, 0])
    assert list(tail_mask(counts, "max-count", {"tail_max_count": 100})) == [0, 0, 1, 1, 1, 0]
    assert list(tail_mask(counts, "fraction", {"tail_fraction": 0.4})) == [0, 0, 0, 1, 1, 0]
    with pytest.raises(GlagError, match="no class is a tail class"):
        tail_mask(counts, "max-count", {"tail_max_count": 2})
    with pytest.raises(GlagError, match="choose from"):
        tail_mask(counts, "median", {})
    with pytest.raises(GlagError, match="tail-fraction"):
        tail_mask(counts, "fraction", {"tail_fraction": 1.5})
    assert set(TAIL_RULES) == {"max-count", "fraction"}


def test_an_empty_tail_is_allowed_only_when_asked():
    counts = np.array([600, 800, 6000])           # Fashion-MNIST-LT at IM 10: no class has <= 100 images
    assert not tail_mask(counts, "max-count", {"tail_max_count": 100}, allow_empty=True).any()
    with pytest.raises(GlagError, match="no class is a tail class"):
        tail_mask(counts, "max-count", {"tail_max_count": 100})


def test_largest_classes_are_never_tail():
    """Small datasets: every class has N_k <= 100, but the largest have nothing to learn from."""
    counts = np.array([70, 70, 40, 7])
    assert list(tail_mask(counts, "max-count", {"tail_max_count": 100})) == [0, 0, 1, 1]
    assert list(tail_mask(counts, "fraction", {"tail_fraction": 1.0})) == [0, 0, 1, 1]
    with pytest.raises(GlagError, match="no class is a tail class"):
        tail_mask(np.array([50, 50]), "max-count", {"tail_max_count": 100})
