"""Feature banks whose val-optimal beta is known by construction, for the adaptive-beta tests.

Three head classes (many rows) and three tail classes (a few rows). Tail class k's
train rows sit tightly around a point p_k (a memorised tail: what an overfit backbone
leaves of a rare class), with head class h(k) = k - 3 its nearest larger class. Its
val and test rows come from a wider Gaussian around

    m_k = (1 - t) p_k + t mu_h(k),

so the unseen tail drifts a fraction t of the way towards its support class. A
calibrated sample with confidence beta has mean (1 - beta) x_i + beta mu_S (Eq. 8),
with x_i ~ p_k and mu_S ~ mu_h(k) (K = 1): the rows that put the tail's decision
boundary where the val rows need it are those with beta ~ t. So t close to 1 makes
the val-optimal beta high, t close to 0 makes it low.
"""
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from glag.data.bank import BankWriter

HEADS, TAILS = (0, 1, 2), (3, 4, 5)


def class_centres(t: float, D: int = 8, scale: float = 8.0, base: float = 2.0):
    """(train centres (6, D), eval centres (6, D)) of the construction above."""
    mu = base + scale * np.eye(6, D)                                      # one direction per class
    train = mu.copy()
    for k in TAILS:
        train[k] += 0.35 * scale * np.eye(D)[k - 3]                       # nearest larger class: k - 3
    evals = train.copy()
    for k in TAILS:
        evals[k] = (1 - t) * train[k] + t * mu[k - 3]
    return train, evals


def write_known_beta_bank(path, t: float, seed: int = 0, D: int = 8, scale: float = 8.0, head_n: int = 300, tail_n: int = 6,
                          n_eval: int = 100) -> Path:
    """Write the bank; its stage-one head is a logistic regression fitted on the long-tailed train rows."""
    rng = np.random.default_rng(seed)
    train_c, eval_c = class_centres(t, D, scale)
    counts = np.array([head_n] * 3 + [tail_n] * 3)

    def rows(centres, per_class, spread):
        y = np.repeat(np.arange(6), per_class)
        x = np.abs(centres[y] + spread[y, None] * rng.standard_normal((len(y), D)))
        return x.astype(np.float32), y

    train = rows(train_c, counts, np.array([1.0] * 3 + [0.5] * 3))
    wide = np.ones(6)
    val, test = rows(eval_c, [n_eval] * 6, wide), rows(eval_c, [n_eval] * 6, wide)
    clf = LogisticRegression(max_iter=2000).fit(*train)
    W, b = clf.coef_.astype(np.float32), clf.intercept_.astype(np.float32)
    with BankWriter(path, dataset="known-beta", backbone="none", loss="ce", class_names=[f"c{k}" for k in range(6)],
                    train_counts=counts, feature_dim=D, config={"known_beta_t": t, "seed": seed}) as w:
        for split, (x, y) in (("train", train), ("val", val), ("test", test)):
            w.add_rows(split, x, y, x @ W.T + b, np.arange(len(y)))
        w.set_head(W, b)
    return Path(path)
