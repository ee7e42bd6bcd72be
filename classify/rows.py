"""Real rows for stage two: each bank split read once, in its stored type, kept where the head trains.

Feature spaces (DESIGN.md §4): the head sees "raw" features (what the backbone outputs)
or "tukey" ones (x ** lambda). Train rows stay raw in memory and are mapped per batch,
because the KD teacher (the stage-one head, W f + b) acts on raw features; val rows are
mapped once. The stage-one logits of the bank are never loaded: the teacher of a row is
recomputed from the stored head per batch (an N x C array is 14 GB at iNaturalist's shape,
and the bank's logits are W f + b of the same float32 features: extract/dump.py).
"""
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from glag.data.errors import GlagError
from glag.data.tukey import tukey_transform

AUTO = "auto"
EVAL_ROWS = 16384          # rows per chunk when a split is scored from disk


@dataclass
class Rows:
    """Rows in the head's feature space: features (N, D), labels (N,)."""
    features: Tensor
    labels: Tensor

    def __len__(self):
        return self.labels.shape[0]


def to_space(x, space: str, lam: float):
    """Raw (post-ReLU) features -> the head's space."""
    return tukey_transform(x, lam) if space == "tukey" else x


def load_split(bank, split: str, space: str, lam: float, device) -> Rows:
    """A whole split in the head's space on `device` (val: the AD signal and the calibration set)."""
    arr = bank.load(split, ("features", "labels"))
    feats = torch.from_numpy(np.ascontiguousarray(arr["features"])).to(device)
    return Rows(to_space(feats, space, lam), torch.from_numpy(arr["labels"]).to(device))


def split_chunks(bank, split: str, space: str, lam: float, device, rows: int = EVAL_ROWS):
    """Yield Rows of a split, `rows` at a time, read from disk (test is scored this way, never held whole)."""
    for _, chunk in bank.iter_chunks(split, ("features", "labels"), rows):
        feats = torch.from_numpy(np.ascontiguousarray(chunk["features"])).to(device)
        yield Rows(to_space(feats, space, lam), torch.from_numpy(chunk["labels"]).to(device))


class RealRows:
    """The real train rows: raw features (N, D) and labels (N,), plus V augmented views (V, N, D) in the
    bank's view dtype (float16 stays float16), on one device.

    Args:
        features, labels: tensors of the un-augmented train split.
        views: (V, N, D) tensor or None.
        space, lam: the head's space.
    """

    def __init__(self, features: Tensor, labels: Tensor, views: Tensor | None = None, space="raw", lam=0.5):
        self.features, self.labels, self.views = features, labels, views
        self.space, self.lam = space, float(lam)

    def __len__(self):
        return self.labels.shape[0]

    @property
    def count(self) -> int:
        """Augmented views drawn from (0: the un-augmented rows every epoch)."""
        return 0 if self.views is None else self.views.shape[0]

    def raw(self, rows: Tensor, views: Tensor | None) -> Tensor:
        """Raw float32 features of train rows `rows` (n,), from view `views` (n,) when there are views."""
        if views is None:
            return self.features[rows]
        return self.views[views, rows].float()

    def nbytes(self) -> int:
        tensors = [self.features, self.labels] + ([self.views] if self.views is not None else [])
        return sum(t.numel() * t.element_size() for t in tensors)


def load_train(bank, cfg: dict, device, count: int) -> RealRows:
    """The train split (features, labels; no logits) and `count` augmented views, each read once as stored."""
    arr = bank.load("train", ("features", "labels"))
    feats = torch.from_numpy(np.ascontiguousarray(arr["features"])).to(device)
    views = None
    if count:
        views = torch.from_numpy(bank.load_views(("features",), count, keep_dtype=True)["features"]).to(device)
    return RealRows(feats, torch.from_numpy(arr["labels"]).to(device), views, cfg["space"], cfg["tukey_lambda"])


def views_to_use(bank, option) -> int:
    """--views: "auto" = every view the bank holds, a number = that many (the bank must hold them)."""
    have = getattr(bank, "views", 0)
    if option in (AUTO, None):
        return have
    try:
        count = int(option)
    except (TypeError, ValueError):
        raise GlagError(f"--views {option!r}: give a number of views or 'auto'") from None
    if count < 0:
        raise GlagError(f"--views {count}: must be >= 0 (0 = the un-augmented rows only)")
    if count > have:
        fix = f"pass --views {have} or less" if have else "pass --views 0"
        raise GlagError(f"--views {count}: {bank.path} holds {have} augmented views; {fix}, or add them with "
                        f"`glag-extract --dump-only --views {count}`")
    return count
