"""Training rows for stage two: real rows from the bank, synthetic rows rebuilt from the store
every epoch with the current per-class beta, and the order they are visited in (the sampler).

Feature spaces (DESIGN.md §4): the store's halves a and d live in its `feature_space`
(Tukey by default). Mixing happens there; then rows go to the head's space:
"raw" maps them back with the inverse power (clipped at 0) so the head sees what
the backbone would output; "tukey" keeps them and transforms real rows instead.
"""
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from data.mixing import mix_rows
from data.tukey import tukey_inverse, tukey_transform

SPACES = ("raw", "tukey")


@dataclass
class Rows:
    """Rows in the head's feature space: features (N, D), labels (N,), teacher logits (N, C) or None."""
    features: Tensor
    labels: Tensor
    teacher: Tensor | None = None

    def __len__(self):
        return self.labels.shape[0]


def to_space(x, space: str, lam: float):
    """Raw (post-ReLU) features -> the head's space."""
    return tukey_transform(x, lam) if space == "tukey" else x


def load_real(bank, split: str, space: str, lam: float, device, teacher: bool = False) -> Rows:
    """One bank split, in memory on `device`, mapped to the head's space; teacher = stage-one logits."""
    fields = ("features", "labels", "logits") if teacher else ("features", "labels")
    arr = bank.load(split, fields)
    feats = to_space(torch.from_numpy(np.ascontiguousarray(arr["features"])), space, lam)
    return Rows(feats.to(device), torch.from_numpy(arr["labels"]).to(device),
                torch.from_numpy(arr["logits"]).to(device) if teacher else None)


class SyntheticRows:
    """Finished synthetic rows for any epoch and any per-class beta (Eq. 8-9 via data.mixing).

    Args:
        store: data.store.Store.
        space: the head's space, "raw" or "tukey".
        lam: Tukey lambda of the store (its `tukey_lambda` attr).
        stage1: (W (C, D), b (C,)) tensors, the stage-one head; teacher for synthetic rows, in raw space.
        gamma, gamma_mode: dispersion added at mixing time (Eq. 9).
        generator: torch.Generator for the gamma noise.
    """

    def __init__(self, store, space, lam, stage1, gamma=0.0, gamma_mode="isotropic", generator=None, device="cpu"):
        self.store, self.space, self.lam = store, space, float(lam)
        self.store_tukey = store.attrs.get("feature_space", "tukey") == "tukey"
        self.W, self.b = (t.to(device) for t in stage1)
        self.gamma, self.gamma_mode, self.generator, self.device = float(gamma), gamma_mode, generator, device

    def rows(self, epoch: int, beta) -> Rows:
        """The store's block for `epoch`, mixed with beta[label].

        Args:
            beta: (C,) per-class beta (numpy or tensor).
        Returns:
            Rows in the head's space, with stage-one teacher logits.
        """
        block = self.store.epoch_rows(epoch)
        a = torch.from_numpy(block["a"]).to(self.device)                                 # (n, D)
        d = torch.from_numpy(block["d"]).to(self.device)                                 # (n, D)
        labels = torch.from_numpy(block["label"]).to(self.device)                        # (n,)
        beta_rows = torch.as_tensor(np.asarray(beta), dtype=a.dtype, device=self.device)[labels]
        mixed = mix_rows(a, d, beta_rows, self.gamma, self.gamma_mode, self.generator)  # Eq. (8), (9)
        raw = tukey_inverse(mixed, self.lam) if self.store_tukey else mixed.clamp_min(0)
        if self.space == "raw":
            feats = raw
        else:
            feats = mixed if self.store_tukey else tukey_transform(raw, self.lam)
        teacher = raw @ self.W.T + self.b                                                # stage-one logits
        return Rows(feats, labels, teacher)


def concat(parts: list) -> Rows:
    parts = [p for p in parts if p is not None and len(p)]
    return Rows(torch.cat([p.features for p in parts]), torch.cat([p.labels for p in parts]),
                torch.cat([p.teacher for p in parts]))


def instance_order(labels: Tensor, num_classes: int, generator) -> Tensor:
    """Every row once, shuffled: batches follow the (long-tailed) pool distribution."""
    return torch.randperm(len(labels), generator=generator)


def class_order(labels: Tensor, num_classes: int, generator) -> Tensor:
    """len(labels) draws with replacement: a class uniformly among those present, then a row of it uniformly.

    Two uniform draws instead of torch.multinomial, which caps the pool at 2^24 rows.
    """
    y = labels.cpu()
    by_class = torch.argsort(y, stable=True)                                             # rows grouped by class
    counts = torch.bincount(y, minlength=num_classes)                                    # (C,)
    starts = torch.cumsum(counts, 0) - counts
    present = torch.nonzero(counts).squeeze(1)                                           # classes in the pool
    n = len(y)
    cls = present[torch.randint(len(present), (n,), generator=generator)]
    pos = (torch.rand(n, generator=generator, dtype=torch.float64) * counts[cls]).long()
    return by_class[starts[cls] + pos]


SAMPLERS = {"instance": instance_order, "class": class_order}
