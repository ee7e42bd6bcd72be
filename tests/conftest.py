"""Shared fixtures: tiny banks built in code, and the location of ../shared/data."""
from pathlib import Path

import numpy as np
import pytest

from glag.data.bank import BankWriter

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def write_tiny_bank(path, C=6, D=8, counts=None, n_eval=10, seed=0, loss="ce", config=None, dataset="tiny",
                    metrics=None):
    """A bank of random non-negative features: long-tailed train, balanced val/test.

    Class k's features are centred on a distinct mean, so heads can learn something.
    """
    rng = np.random.default_rng(seed)
    counts = np.asarray(counts if counts is not None else [60, 40, 20, 10, 5, 2][:C], dtype=np.int64)
    means = rng.uniform(0.5, 3.0, size=(C, D))

    def rows(per_class):
        labels = np.repeat(np.arange(C), per_class)
        feats = np.abs(means[labels] + 0.3 * rng.standard_normal((len(labels), D)))
        return feats.astype(np.float32), labels

    cfg = dict(config or {}, dataset=dataset, loss=loss)
    with BankWriter(path, dataset=dataset, backbone="none", loss=loss, class_names=[f"c{k}" for k in range(C)],
                    train_counts=counts, feature_dim=D, config=cfg) as w:
        W, b = rng.standard_normal((C, D)).astype(np.float32), np.zeros(C, np.float32)
        for split, per_class in (("train", counts), ("val", [n_eval] * C), ("test", [n_eval] * C)):
            f, y = rows(per_class)
            w.add_rows(split, f, y, f @ W.T + b, np.arange(len(y)))
        w.set_head(W, b)
        w.set_metrics(metrics or {"test": {"overall": 0.5}})
    return Path(path)


@pytest.fixture
def tiny_bank(tmp_path):
    return write_tiny_bank(tmp_path / "bank.h5")
