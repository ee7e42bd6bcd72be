"""What one stage-two epoch visits, in order: real train rows and synthetic draws (the sampler).

Without synthetic rows an epoch is today's cRT epoch: len(train) draws of the
sampler over the real rows (class-balanced: a class uniformly, then one of its rows).

With a store, the pool of class k is its N_k real rows plus its gap-rule share of
synthetic rows (N_max - N_k, capped: `need`), as in the paper's gap rule. The
sampler draws from that pool without building it: a draw that lands on a real row
visits it, one that lands on the synthetic share becomes a fresh synthetic row,
drawn where the head trains. So each class's draws are synthetic at its gap rate,
N_k / (N_k + need_k) real, and an epoch costs only the draws it makes: `--epoch-size
pool` makes as many as the pool has rows (an epoch of the materialised gap-rule pool),
`real` len(train), and `auto` (the default) the pool up to max(len(train), 128 batches):
the pool on CIFAR-sized banks, len(train) at ImageNet-LT's and iNaturalist's, where the
pool is 11-18 times the train split (docs/paper-readings.md has the measurements).
"""
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from glag.data.errors import GlagError

AUTO_BATCHES = 128          # --epoch-size auto: an epoch of the pool is cut to max(len(train), this many batches)


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
    cls, pos = class_draws(counts, len(y), generator)
    return by_class[starts[cls] + pos]


def class_draws(pool: Tensor, n: int, generator) -> tuple[Tensor, Tensor]:
    """n class-balanced draws from a pool of `pool[k]` rows per class: (class, position within the class)."""
    present = torch.nonzero(pool).squeeze(1)
    cls = present[torch.randint(len(present), (n,), generator=generator)]
    pos = (torch.rand(n, generator=generator, dtype=torch.float64) * pool[cls]).long()
    return cls, pos


def instance_draws(pool: Tensor, n: int, generator) -> tuple[Tensor, Tensor]:
    """n draws without replacement from the whole pool (every row equally likely)."""
    idx = torch.randperm(int(pool.sum()), generator=generator)[:n]
    ends = torch.cumsum(pool, 0)
    cls = torch.searchsorted(ends, idx, right=True)
    return cls, idx - (ends - pool)[cls]


SAMPLERS = {"instance": instance_order, "class": class_order}
POOL_DRAWS = {"instance": instance_draws, "class": class_draws}


@dataclass
class EpochPlan:
    """One epoch's draws in training order (CPU tensors).

    labels: (M,) class of each draw; real: (M,) its train row, -1 for a synthetic draw;
    views: (M,) the augmented view of a real draw, or None without views;
    sources: (M,) numpy, a synthetic draw's local source sample (-1: its class's own distribution).
    """
    labels: Tensor
    real: Tensor
    views: Tensor | None
    sources: np.ndarray | None

    def __len__(self):
        return self.labels.shape[0]


def epoch_size(option, n_real: int, pool: int, batch_size: int = 512) -> int:
    """--epoch-size: auto (the pool, capped at max(len(train), AUTO_BATCHES batches)), real (len(train) draws),
    pool (as many as the gap-rule pool has rows) or a number."""
    if option == "auto":
        return min(pool, max(n_real, AUTO_BATCHES * batch_size))
    if option == "real":
        return n_real
    if option == "pool":
        return pool
    try:
        size = int(option)
    except (TypeError, ValueError):
        size = 0
    if size < 1:
        raise GlagError(f"--epoch-size {option!r}: give auto, real, pool or a number of draws >= 1")
    return size


def plan_epoch(labels: Tensor, num_classes: int, views: int, synth, cfg: dict, generator, epoch: int) -> EpochPlan:
    """The draws of epoch `epoch` (0-based); `labels` (N,) of the real train rows (CPU), `views` V."""
    if synth is None:
        pick = torch.randint(views, (len(labels),), generator=generator) if views else None
        order = SAMPLERS[cfg["sampler"]](labels, num_classes, generator)
        return EpochPlan(labels[order], order, pick[order] if pick is not None else None, None)
    real = torch.bincount(labels, minlength=num_classes)                                  # (C,) N_k
    pool = real + torch.as_tensor(synth.need)
    size = epoch_size(cfg["epoch_size"], len(labels), int(pool.sum()), cfg["batch_size"])
    cls, pos = POOL_DRAWS[cfg["sampler"]](pool, size, generator)
    is_real = pos < real[cls]
    by_class = torch.argsort(labels, stable=True)
    starts = torch.cumsum(real, 0) - real
    rows = torch.where(is_real, by_class[(starts[cls] + pos).clamp_max(len(labels) - 1)], -1)
    pick = torch.randint(views, (size,), generator=generator) if views else None
    c, item = cls.numpy(), (pos - real[cls]).numpy()
    sources = np.where(is_real.numpy(), -1, synth.sources(c, np.maximum(item, 0), epoch))
    return EpochPlan(cls, rows, pick, sources)


@dataclass
class Batch:
    """One SGD step's rows: labels (n,) on the device; real draws at positions `real_at` (train rows and
    views), synthetic draws at `synth_at` (rows `synth_rows` of the chunk's `drawn`)."""
    labels: Tensor
    real_at: Tensor
    real_rows: Tensor
    real_views: Tensor | None
    synth_at: Tensor | None = None
    synth_rows: Tensor | None = None
    drawn: object = None


def batches(plan: EpochPlan, synth, batch_size: int, epoch: int, device, chunk_batches: int = 32):
    """Yield the epoch's Batches; synthetic rows are drawn `chunk_batches` batches at a time (--draw-chunk)."""
    chunk = chunk_batches * batch_size
    for c, start in enumerate(range(0, len(plan), chunk)):
        seg = slice(start, min(start + chunk, len(plan)))
        is_synth = (plan.real[seg] < 0).numpy()
        drawn, synth_row = None, None
        if is_synth.any():
            drawn = synth.draw(plan.labels[seg].numpy()[is_synth], plan.sources[seg][is_synth], epoch, c)
            synth_row = np.cumsum(is_synth) - 1                                        # row of drawn per position
        for b in range(seg.start, seg.stop, batch_size):
            yield _batch(plan, slice(b, min(b + batch_size, seg.stop)), seg.start, is_synth, synth_row, drawn, device)


def _batch(plan, rows: slice, offset: int, is_synth, synth_row, drawn, device) -> Batch:
    labels = plan.labels[rows].to(device)
    local = np.arange(rows.start - offset, rows.stop - offset)
    real = ~is_synth[local]
    real_at = torch.as_tensor(np.flatnonzero(real), device=device)
    views = plan.views[rows][real].to(device) if plan.views is not None else None
    out = Batch(labels, real_at, plan.real[rows][real].to(device), views)
    if drawn is not None and not real.all():
        out.synth_at = torch.as_tensor(np.flatnonzero(~real), device=device)
        out.synth_rows = torch.as_tensor(synth_row[local[~real]], device=device)
        out.drawn = drawn
    return out
