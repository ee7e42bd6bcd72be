"""Calibrated sampling checked statistically against Eq. 7-10 computed directly (explicit Sigma, small D)."""
import numpy as np
import pytest
import torch

from glag.data.errors import GlagError
from glag.data.mixing import mix_rows
from glag.data.tukey import tukey_transform
from glag.generate.afg import AdaptiveFeatureGenerator
from glag.generate.neighbors import support_classes
from glag.generate.stats import class_moments

D = 5
COUNTS = np.array([400, 150, 60, 30, 8, 4, 3, 1])     # factors: QR (N > D), thin rows, a single sample
DRAWS = 20_000


class ArrayBank:
    """Just enough of glag.data.bank.Bank for the generator, over arrays held by the test."""

    def __init__(self, x, y, counts, chunk_rows=97):
        self.x, self.y, self.train_counts, self.chunk_rows, self.path = x, y, counts, chunk_rows, "array-bank"

    def iter_chunks(self, split="train"):
        for s in range(0, len(self.y), self.chunk_rows):
            yield s, {"features": self.x[s:s + self.chunk_rows], "labels": self.y[s:s + self.chunk_rows]}


def correlated_bank(counts=COUNTS, d=D, seed=0):
    """Non-negative rows with a different full covariance per class, in shuffled order."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.repeat(np.arange(len(counts)), counts))
    mu = rng.uniform(2, 6, size=(len(counts), d))
    mix = rng.normal(0, 0.4, size=(len(counts), d, d))
    x = mu[y] + np.einsum("nd,nde->ne", rng.standard_normal((len(y), d)), mix[y])
    return np.abs(x).astype(np.float32), y


def config(**over):
    cfg = dict(k=3, tukey=0.5, beta_init=0.6, gamma=0.0, gamma_mode="isotropic", tail="max-count",
               tail_max_count=100, tail_fraction=0.5, max_rows_per_class=0, balance_head=True, seed=0,
               device="cpu", jobs=1, sample_per_class=0)
    cfg.update(over)
    return cfg


def expected(x, y, src, lam, k, beta, gamma, mode):
    """Eq. 7-10 straight from the formulas, float64, explicit covariances."""
    xt = tukey_transform(x.astype(np.float64), lam)
    counts = np.bincount(y)
    mu = np.stack([xt[y == c].mean(0) for c in range(len(counts))])                      # Eq. 5
    cov = [np.cov(xt[y == c], rowvar=False) if counts[c] > 1 else np.zeros((D, D)) for c in range(len(counts))]
    c, x_hat = y[src], xt[src]
    cand = np.flatnonzero(counts > counts[c])
    dist = np.linalg.norm(x_hat - mu[cand], axis=1)
    S = cand[np.argsort(dist)[:k]]                                                      # Eq. 7
    w = counts[S] / np.sort(dist)[:k]                                                    # Eq. 10
    mean = (1 - beta) * x_hat + beta * (w @ mu[S]) / w.sum()                             # Eq. 8
    G = np.eye(D) if mode == "isotropic" else np.ones((D, D))
    sigma = (1 - beta) ** 2 * cov[c] + beta ** 2 * sum(wj * cov[j] for wj, j in zip(w, S)) / w.sum() + gamma * G
    return S, w, mean, sigma                                                             # Eq. 9


def assert_gaussian_matches(s, mean, sigma, z=5.0):
    """Empirical mean and covariance within z standard errors of the target, entrywise."""
    n = len(s)
    se_mean = np.sqrt(np.diag(sigma) / n)
    assert np.all(np.abs(s.mean(0) - mean) <= z * se_mean + 1e-6), (s.mean(0), mean)
    var = np.diag(sigma)
    se_cov = np.sqrt((np.outer(var, var) + sigma ** 2) / n)
    emp = np.cov(s, rowvar=False)
    assert np.all(np.abs(emp - sigma) <= z * se_cov + 1e-6), (emp, sigma)


def numpy_rows(rows):
    return {k: v.cpu().numpy() if torch.is_tensor(v) else v for k, v in rows.items()}


def draw(afg, c, j, n, seed=1):
    return numpy_rows(afg.sampler.draw([(c, np.full(n, j), n)], torch.Generator().manual_seed(seed)))


@pytest.mark.parametrize("beta,gamma,mode,k,lam,c", [
    (0.6, 0.0, "isotropic", 3, 0.5, 3),
    (0.0, 0.0, "isotropic", 1, 0.5, 4),
    (1.0, 0.1, "isotropic", 2, 0.5, 5),
    (0.3, 0.1, "all-ones", 3, 1.0, 6),
    (0.8, 0.0, "isotropic", 2, 1.0, 7),        # single-sample class: no own covariance
])
def test_calibrated_rows_match_eq_8_9(beta, gamma, mode, k, lam, c):
    x, y = correlated_bank()
    afg = AdaptiveFeatureGenerator(config(k=k, tukey=lam)).fit(ArrayBank(x, y, COUNTS))
    j = 0
    src = afg.moments.index[c][j]
    S, w, mean, sigma = expected(x, y, src, lam, k, beta, gamma, mode)
    sid = afg.supports.start[c] + j
    assert afg.supports.source[sid] == src
    assert list(afg.supports.classes[sid]) == list(S)
    np.testing.assert_allclose(afg.supports.weights[sid], w, rtol=1e-4)
    rows = draw(afg, c, j, DRAWS)
    assert (rows["label"] == c).all() and (rows["source"] == src).all()
    s = mix_rows(torch.from_numpy(rows["a"]).double(), torch.from_numpy(rows["d"]).double(), beta, gamma, mode,
                 generator=torch.Generator().manual_seed(2)).numpy()
    assert_gaussian_matches(s, mean, sigma)


def test_one_draw_of_halves_serves_every_beta():
    """The stored a and b - a give Eq. 8-9 for any beta chosen later (adaptive beta)."""
    x, y = correlated_bank(seed=1)
    afg = AdaptiveFeatureGenerator(config()).fit(ArrayBank(x, y, COUNTS))
    c, j = 4, 2
    rows = draw(afg, c, j, DRAWS, seed=7)
    a, d = torch.from_numpy(rows["a"]).double(), torch.from_numpy(rows["d"]).double()
    for beta in (0.0, 0.25, 0.6, 1.0):
        _, _, mean, sigma = expected(x, y, afg.moments.index[c][j], 0.5, 3, beta, 0.0, "isotropic")
        assert_gaussian_matches(mix_rows(a, d, beta).numpy(), mean, sigma)


def test_wrong_formula_is_detected():
    """The check has teeth: beta instead of beta^2 in Eq. 9 fails it."""
    x, y = correlated_bank(seed=1)
    afg = AdaptiveFeatureGenerator(config()).fit(ArrayBank(x, y, COUNTS))
    rows = draw(afg, 4, 0, DRAWS)
    _, _, mean, _ = expected(x, y, afg.moments.index[4][0], 0.5, 3, 0.6, 0.0, "isotropic")
    _, _, _, wrong = expected(x, y, afg.moments.index[4][0], 0.5, 3, np.sqrt(0.6), 0.0, "isotropic")
    s = mix_rows(torch.from_numpy(rows["a"]).double(), torch.from_numpy(rows["d"]).double(), 0.6).numpy()
    with pytest.raises(AssertionError):
        assert_gaussian_matches(s, mean, wrong)


def test_non_tail_rows_come_from_their_class_distribution():
    x, y = correlated_bank(seed=2)
    afg = AdaptiveFeatureGenerator(config()).fit(ArrayBank(x, y, COUNTS))
    rows = numpy_rows(afg.sampler.draw([(1, None, DRAWS)], torch.Generator().manual_seed(3)))
    assert (rows["d"] == 0).all() and (rows["source"] == -1).all()
    xt = tukey_transform(x[y == 1].astype(np.float64), 0.5)
    assert_gaussian_matches(rows["a"].astype(np.float64), xt.mean(0), np.cov(xt, rowvar=False))


def test_supports_match_brute_force_over_all_tail_samples():
    rng = np.random.default_rng(5)
    counts = rng.integers(1, 60, size=40)
    counts[:6] = [300, 250, 200, 150, 120, 101]
    y = rng.permutation(np.repeat(np.arange(40), counts))
    x = np.abs(rng.normal(3, 1, size=(len(y), 8)) + rng.normal(0, 2, size=(40, 8))[y]).astype(np.float32)
    m = class_moments([(0, {"features": x, "labels": y})], counts, 1.0)
    tail = np.flatnonzero(counts <= 100)
    sup = support_classes(m, tail, 3, chunk_rows=50)
    mu = np.stack([x[y == c].astype(np.float64).mean(0) for c in range(40)])
    for sid in range(0, len(sup.label), 7):
        c, src = sup.label[sid], sup.source[sid]
        cand = np.flatnonzero(counts > counts[c])
        dist = np.linalg.norm(x[src] - mu[cand], axis=1)
        assert list(sup.classes[sid]) == list(cand[np.argsort(dist)[:3]])
        assert (counts[sup.classes[sid]] > counts[c]).all()                # strictly more samples


def test_zero_distance_gets_a_finite_weight():
    x = np.array([[1, 1], [2, 2], [3, 3], [2, 2]], np.float32)              # class 1's sample sits on mu_0
    y = np.array([0, 0, 0, 1])
    m = class_moments([(0, {"features": x, "labels": y})], [3, 1], 1.0)
    sup = support_classes(m, [1], 1)
    assert sup.classes[0, 0] == 0 and np.isfinite(sup.weights[0, 0]) and sup.weights[0, 0] > 1e5


def test_k_rules():
    counts = np.array([50, 40, 30, 5, 4])
    x, y = correlated_bank(counts, seed=3)
    bank = ArrayBank(x, y, counts)
    afg = AdaptiveFeatureGenerator(config(k=4, tail_max_count=30)).fit(bank)
    # class 2 (N = 30) has only 2 classes with more samples: it uses both, the rest is padding
    row = afg.supports.classes[afg.supports.start[2]]
    assert sorted(row[:2]) == [0, 1] and list(row[2:]) == [-1, -1]
    assert (afg.supports.weights[afg.supports.start[2], 2:] == 0).all()
    rows = afg.sampler.draw([(2, np.zeros(50, int), 50)], torch.Generator().manual_seed(0))
    assert torch.isfinite(rows["d"]).all()
    with pytest.raises(GlagError, match="--k 5"):
        AdaptiveFeatureGenerator(config(k=5, tail_max_count=30)).fit(bank)
    with pytest.raises(GlagError, match="no support"):                     # only reachable through the API
        support_classes(class_moments(bank.iter_chunks(), counts, 0.5), [0], 1)


def test_same_seed_same_rows_and_seeds_differ():
    x, y = correlated_bank(seed=4)
    rows = []
    for seed in (0, 0, 1):
        afg = AdaptiveFeatureGenerator(config(seed=seed)).fit(ArrayBank(x, y, COUNTS))
        rows.append(afg.sample(40))
    assert all(np.array_equal(rows[0][k], rows[1][k]) for k in ("a", "d", "label", "source"))
    assert not np.array_equal(rows[0]["a"], rows[2]["a"])


def test_a_stored_generator_draws_what_the_fitted_one_draws(tmp_path):
    """Round trip through the store: every array the draws use comes back exactly."""
    from glag.data.store import Store, StoreWriter
    from glag.data.synthesis import Synthesizer
    x, y = correlated_bank(seed=5)
    afg = AdaptiveFeatureGenerator(config()).fit(ArrayBank(x, y, COUNTS))
    bank = type("B", (), {"fingerprint": "f" * 32, "config": {}})()
    with StoreWriter(tmp_path / "s.h5", bank=bank, dtype="float32", meta={}, config={}) as w:
        w.set_generator(afg.arrays(), afg.need, afg.supports.source)
    segments = [(c, np.arange(7) % COUNTS[c], 7) for c in np.flatnonzero(afg.tail)] + [(0, None, 9), (1, None, 5)]
    with Store(tmp_path / "s.h5") as store:
        loaded = Synthesizer(store.generator())
    a = afg.sampler.draw(segments, torch.Generator().manual_seed(9))
    b = loaded.draw(segments, torch.Generator().manual_seed(9))
    assert torch.equal(a["a"], b["a"]) and torch.equal(a["d"], b["d"]) and np.array_equal(a["source"], b["source"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_draws_match_the_formulas_and_the_fit_matches_cpu():
    from glag.data.synthesis import Synthesizer
    x, y = correlated_bank(seed=6)
    fits = {dev: AdaptiveFeatureGenerator(config(device=dev)).fit(ArrayBank(x, y, COUNTS)) for dev in ("cpu", "cuda")}
    assert np.array_equal(fits["cpu"].supports.classes, fits["cuda"].supports.classes)
    afg, c, j = fits["cuda"], 3, 0
    gpu = Synthesizer(afg.arrays(), "cuda")
    rows = numpy_rows(gpu.draw([(c, np.full(DRAWS, j), DRAWS)], torch.Generator("cuda").manual_seed(1)))
    _, _, mean, sigma = expected(x, y, afg.moments.index[c][j], 0.5, 3, 0.6, 0.0, "isotropic")
    s = mix_rows(torch.from_numpy(rows["a"]).double(), torch.from_numpy(rows["d"]).double(), 0.6).numpy()
    assert_gaussian_matches(s, mean, sigma)


def test_rows_do_not_depend_on_worker_threads():
    x, y = correlated_bank(seed=8)
    out = []
    for jobs in (1, 2):
        afg = AdaptiveFeatureGenerator(config(jobs=jobs)).fit(ArrayBank(x, y, COUNTS))
        out.append(afg.sample(50)["d"])
    assert np.array_equal(out[0], out[1])
