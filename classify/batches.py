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

from glag.data.errors import GlagError
from glag.data.mixing import gamma_noise, mix_rows
from glag.data.tukey import tukey_inverse, tukey_transform

SPACES = ("raw", "tukey")
AUTO = "auto"


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


class TrainRows:
    """The real train rows of each epoch: the bank's un-augmented view, or one augmented view per row.

    With V views (glag-extract --views), every epoch draws a view per row uniformly, as image-based
    retraining draws a fresh augmentation per image; the KD teacher of the row is that view's
    stage-one logits (stored, or W f + b of the stored head, which is how they were made).

    Args:
        base: Rows of the un-augmented train split, head's space, with teacher logits.
        views: (V, N, D) raw view features or None; logits: (V, N, C) or None.
        space, lam: the head's space (views are mapped per epoch, after the gather).
        stage1: (W (C, D), b (C,)), for views stored without logits.
    """

    def __init__(self, base: Rows, views=None, logits=None, space="raw", lam=0.5, stage1=None):
        self.base, self.views, self.logits = base, views, logits
        self.space, self.lam, self.stage1 = space, lam, stage1

    @property
    def labels(self):
        return self.base.labels

    @property
    def count(self) -> int:
        """Augmented views drawn from (0: the un-augmented rows every epoch)."""
        return 0 if self.views is None else self.views.shape[0]

    def epoch(self, generator) -> Rows:
        """This epoch's rows; the view choice comes from `generator` (one draw per row)."""
        if self.views is None:
            return self.base
        n = len(self.base)
        pick = torch.randint(self.count, (n,), generator=generator).to(self.views.device)   # (N,)
        rows = torch.arange(n, device=self.views.device)
        raw = self.views[pick, rows]                                                       # (N, D)
        if self.logits is not None:
            teacher = self.logits[pick, rows]
        else:
            W, b = self.stage1
            teacher = raw @ W.T + b
        return Rows(to_space(raw, self.space, self.lam), self.base.labels, teacher)


def load_train(bank, cfg: dict, device, stage1) -> TrainRows:
    """The train rows of a run: base rows, plus cfg["views"] augmented views when asked ("auto": all)."""
    base = load_real(bank, "train", cfg["space"], cfg["tukey_lambda"], device, teacher=True)
    count = views_to_use(bank, cfg["views"])
    if count == 0:
        return TrainRows(base)
    fields = ("features", "logits") if bank.has_view_logits else ("features",)
    need, have = bank.view_bytes(count, fields), available_memory()
    if have is not None and need > have:
        raise GlagError(f"--views {count}: the views need {need / 2**30:.1f} GiB of memory and "
                        f"{have / 2**30:.1f} GiB are available; pass a smaller --views")
    arr = bank.load_views(fields, count)
    logits = torch.from_numpy(arr["logits"]).to(device) if "logits" in arr else None
    return TrainRows(base, torch.from_numpy(arr["features"]).to(device), logits, cfg["space"],
                     cfg["tukey_lambda"], stage1)


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


def available_memory():
    """Bytes of memory the kernel says are available (Linux MemAvailable), or None elsewhere."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@dataclass
class Block:
    """One generation epoch of the store on the device: halves a, d (n, D), labels (n,), gamma noise."""
    a: Tensor
    d: Tensor
    labels: Tensor
    eps: Tensor | None


class SyntheticRows:
    """Finished synthetic rows for any epoch and any per-class beta (Eq. 8-9 via glag.data.mixing).

    Args:
        store: glag.data.store.Store.
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

    def block(self, epoch: int) -> Block:
        """The store's block for `epoch`, with this epoch's gamma noise drawn once (shared by all heads)."""
        raw = self.store.epoch_rows(epoch)
        a = torch.from_numpy(raw["a"]).to(self.device)                                   # (n, D)
        eps = gamma_noise(a.shape[0], a.shape[1], self.gamma_mode, self.generator) if self.gamma > 0 else None
        return Block(a, torch.from_numpy(raw["d"]).to(self.device), torch.from_numpy(raw["label"]).to(self.device),
                     eps)

    def mix(self, block: Block, beta) -> Rows:
        """Rows of `block` mixed with beta[label] (beta: (C,) numpy or tensor), in the head's space,
        with stage-one teacher logits."""
        beta_rows = torch.as_tensor(np.asarray(beta), dtype=block.a.dtype, device=self.device)[block.labels]
        mixed = mix_rows(block.a, block.d, beta_rows, self.gamma, self.gamma_mode, eps=block.eps)  # Eq. (8), (9)
        raw = tukey_inverse(mixed, self.lam) if self.store_tukey else mixed.clamp_min(0)
        if self.space == "raw":
            feats = raw
        else:
            feats = mixed if self.store_tukey else tukey_transform(raw, self.lam)
        teacher = raw @ self.W.T + self.b                                                # stage-one logits
        return Rows(feats, block.labels, teacher)

    def rows(self, epoch: int, beta) -> Rows:
        """mix(block(epoch), beta): the rows of one epoch for one beta."""
        return self.mix(self.block(epoch), beta)


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
