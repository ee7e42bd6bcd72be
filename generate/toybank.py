"""Random long-tailed feature banks for smoke tests and benchmarks (no real data needed).

`ToyBank` stands in for `glag.data.bank.Bank` as far as the generator reads it
(train_counts, feature_dim, path, fingerprint, config, rows, iter_chunks):
its rows are drawn chunk by chunk from a fixed seed, so any number of passes
see the same bank and the full feature matrix is never held. `write_toy_bank`
writes a real bank.h5 with BankWriter for end-to-end tests.

Rows of class k: relu(mu_k + sigma_k * n), n ~ N(0, I), mu_k >= 1 and
sigma_k small enough that the features stay non-negative (post-ReLU-like).
"""
import hashlib

import numpy as np

from glag.data.bank import BankWriter
from glag.data.longtail import class_counts


def exp_counts(num_classes: int, n_max: int, im: float) -> np.ndarray:
    """The CIFAR-LT exponential profile: n_k = int(n_max * im ** (-k / (C - 1)))."""
    return class_counts("exp", num_classes, n_max, im)


def shaped_counts(total: int, n_max: int, n_min: int, many: int, medium: int, few: int) -> np.ndarray:
    """Counts with a real dataset's shape: `many` classes of 101 ... n_max images, `medium` of 100 ... 20,
    `few` of 19 ... n_min, `total` images (the many-shot power is solved for the total)."""
    f = np.round(np.geomspace(19, n_min, few)).astype(np.int64)
    m = np.round(np.geomspace(100, 20, medium)).astype(np.int64)
    u, rest = np.linspace(1, 0, many, endpoint=False), total - f.sum() - m.sum()
    lo, hi = 0.1, 50.0
    for _ in range(60):
        p = (lo + hi) / 2
        head = np.round(101 + (n_max - 101) * u ** p).astype(np.int64)
        lo, hi = (p, hi) if head.sum() > rest else (lo, p)
    c = np.concatenate([head, m, f])
    c[np.argmin(np.abs(c - 150))] += total - c.sum()
    return c


SHAPES = {   # name: (counts, feature dim, val rows per class, test rows per class)
    "cifar100-lt": (lambda: exp_counts(100, 500, 100), 64, 20, 100),
    "imagenet-lt": (lambda: shaped_counts(115_846, 1280, 5, 385, 479, 136), 2048, 20, 50),
    "inat2018": (lambda: shaped_counts(437_513, 1000, 2, 842, 4_076, 3_224), 2048, 3, 3),
}


class ToyBank:
    """A bank-like source of random long-tailed train rows.

    Args:
        counts: (C,) train rows per class.
        feature_dim: D.
        seed: everything (means, spreads, row order, rows) follows from it.
        chunk_rows: rows per chunk of iter_chunks.
    """

    def __init__(self, counts, feature_dim: int, seed: int = 0, chunk_rows: int = 4096):
        self.train_counts = np.asarray(counts, np.int64)
        self.num_classes, self.feature_dim, self.seed, self.chunk_rows = len(counts), int(feature_dim), seed, chunk_rows
        rng = np.random.default_rng([seed, 0])
        C, D = self.num_classes, self.feature_dim
        self.mu = (1.0 + rng.gamma(2.0, 0.5, size=(C, D))).astype(np.float32)          # (C, D)
        self.sigma = rng.uniform(0.05, 0.3, size=(C, 1)).astype(np.float32)              # (C, 1)
        self.labels = rng.permutation(np.repeat(np.arange(C), self.train_counts))       # bank order
        self.config = {"toy": True, "counts_sha": hashlib.sha256(self.train_counts.tobytes()).hexdigest()[:12],
                       "feature_dim": D, "seed": seed}
        self.fingerprint = hashlib.sha256(repr(sorted(self.config.items())).encode()).hexdigest()[:32]
        self.path = f"toy-bank(C={C}, D={D}, seed={seed})"

    def rows(self, split="train") -> int:
        return len(self.labels)

    def chunk(self, start: int, stop: int) -> dict:
        """Rows [start, stop) of the train split: features (n, D) float32, labels (n,)."""
        labels = self.labels[start:stop]
        rng = np.random.default_rng([self.seed, 1, start])
        noise = rng.standard_normal((len(labels), self.feature_dim), dtype=np.float32)
        x = self.mu[labels] + self.sigma[labels] * noise
        return {"features": np.maximum(x, 0, out=x), "labels": labels}

    def iter_chunks(self, split="train", fields=("features", "labels"), chunk_rows=None):
        step = chunk_rows or self.chunk_rows
        for start in range(0, len(self.labels), step):
            yield start, self.chunk(start, start + step)

    def load(self, split="train", fields=("features", "labels")) -> dict:
        """The whole split, the same rows iter_chunks yields (its chunk size fixes the draws)."""
        parts = [c for _, c in self.iter_chunks()]
        return {f: np.concatenate([p[f] for p in parts]) for f in ("features", "labels")}


def write_toy_bank(path, counts, feature_dim: int, seed: int = 0, test_per_class: int = 5):
    """A complete bank.h5 (train rows from ToyBank, a small balanced test split, a zero head)."""
    toy = ToyBank(counts, feature_dim, seed)
    C, D = toy.num_classes, toy.feature_dim
    rng = np.random.default_rng([seed, 2])
    with BankWriter(path, dataset="toy", backbone="none", loss="none", class_names=[f"c{k}" for k in range(C)],
                    train_counts=toy.train_counts, feature_dim=D, config=dict(toy.config)) as w:
        for start, chunk in toy.iter_chunks():
            n = len(chunk["labels"])
            w.add_rows("train", chunk["features"], chunk["labels"], rng.standard_normal((n, C)),
                       start + np.arange(n))
        test_labels = np.repeat(np.arange(C), test_per_class)
        test = toy.mu[test_labels] + toy.sigma[test_labels] * rng.standard_normal((len(test_labels), D))
        w.add_rows("test", np.maximum(test, 0), test_labels, rng.standard_normal((len(test_labels), C)),
                   np.arange(len(test_labels)))
        w.set_head(np.zeros((C, D)), np.zeros(C))
    return path


def write_shaped_bank(path, shape: str, seed: int = 0, views: int = 0, progress=None, device="cpu"):
    """A bank of one of SHAPES (a real dataset's counts and width), written as a stage one would.

    Train / val / test rows come from ToyBank's class distributions; the stage-one head is
    W = the centred class means (unit rows), b = log p_y (a long-tailed head favours frequent
    classes), and every split's logits are W f + b of its features, as extract/dump.py writes them.
    `views` augmented views of the train split (each row plus small noise, float16, no logits).

    Args:
        progress: optional callable(rows_written, rows_total).
        device: where the logits' matrix products run (the rows do not depend on it).
    """
    counts_of, dim, per_val, per_test = SHAPES[shape]
    toy = ToyBank(counts_of(), dim, seed)
    C, D = toy.num_classes, toy.feature_dim
    W = toy.mu - toy.mu.mean(0)
    W /= np.linalg.norm(W, axis=1, keepdims=True)                               # (C, D)
    b = np.log(toy.train_counts / toy.train_counts.sum()).astype(np.float32)    # (C,)
    rng = np.random.default_rng([seed, 3])
    total, done = len(toy.labels) * (1 + views) + C * (per_val + per_test), 0
    config = dict(toy.config, shape=shape, head="centred class means, bias log prior")
    with BankWriter(path, dataset=f"toy-{shape}", backbone="none", loss="ce", class_names=[f"c{k}" for k in range(C)],
                    train_counts=toy.train_counts, feature_dim=D, config=config, views=views,
                    views_dtype="float16", views_logits=False) as w:
        for start, chunk in toy.iter_chunks():
            x = chunk["features"]
            w.add_rows("train", x, chunk["labels"], _logits(x, W, b, device), start + np.arange(len(x)))
            done += len(x)
            if progress:
                progress(done, total)
        for split, per in (("val", per_val), ("test", per_test)):
            y = np.repeat(np.arange(C), per)
            for s in range(0, len(y), 4096):
                x = toy.mu[y[s:s + 4096]] + toy.sigma[y[s:s + 4096]] * rng.standard_normal((len(y[s:s + 4096]), D))
                x = np.maximum(x, 0).astype(np.float32)
                w.add_rows(split, x, y[s:s + 4096], _logits(x, W, b, device), s + np.arange(len(x)))
            done += len(y)
        for v in range(views):
            for start, chunk in toy.iter_chunks():
                x = chunk["features"]
                noise = np.random.default_rng([seed, 4, v, start]).standard_normal(x.shape, dtype=np.float32)
                w.add_view_rows(v, np.maximum(x + 0.05 * noise, 0))
                done += len(x)
                if progress:
                    progress(done, total)
        w.set_head(W, b)
    return path


def _logits(x, W, b, device="cpu"):
    """W f + b in float32 (as extract/dump.py writes a bank's logits), on `device`."""
    import torch
    t = lambda a: torch.from_numpy(a).to(device)
    return torch.addmm(t(b), t(x), t(W).T).cpu().numpy()
