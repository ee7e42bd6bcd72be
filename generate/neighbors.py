"""Support classes of every tail sample (paper Eq. 7) and their weights (Eq. 10).

For tail sample x_hat_i of class y_i, the candidates are the classes with
strictly more training samples than y_i; the support set S holds the K with
the nearest means, d_ij = ||x_hat_i - mu_j||, and w_j = N_j / d_ij.

Distances come from matrix products (||x||^2 - 2 x.mu + ||mu||^2), a chunk of
tail samples at a time, against only the prefix of classes (sorted by count)
that can be candidates for that chunk. The K chosen distances are then
recomputed directly, so the weights do not suffer the cancellation of the
expanded form.

K rule: a tail class with fewer than K candidates uses all it has (the rest of
its row is class -1, weight 0); K larger than the candidates of every tail
class, or a tail class with no candidate at all, is an error.
"""
from dataclasses import dataclass

import numpy as np
import torch

from glag.data.errors import GlagError
from glag.generate.parallel import parallel_classes
from glag.generate.stats import ClassMoments

DIST_FLOOR = 1e-6   # d_ij below this (x_hat_i on top of mu_j) counts as this: w_j stays finite


@dataclass
class Supports:
    """Per tail sample s (tail classes in class order, samples in bank order):

    start: (C,) int64 id of each tail class's first sample (-1 for others)
    label: (S,) int64; source: (S,) int64 bank train row
    classes: (S, K) int64 support classes (-1 = none); weights: (S, K) float32 w_j (Eq. 10, 0 for none)
    """
    tail_classes: np.ndarray
    start: np.ndarray
    label: np.ndarray
    source: np.ndarray
    classes: np.ndarray
    weights: np.ndarray


def check_k(counts, tail_classes, k: int) -> np.ndarray:
    """Candidates per tail class; raises when K or the tail set cannot work."""
    counts = np.asarray(counts)
    eligible = len(counts) - np.searchsorted(np.sort(counts), counts[tail_classes], side="right")
    if k < 1:
        raise GlagError(f"--k {k}: need at least one support class")
    if (eligible == 0).any():
        c = int(tail_classes[np.argmin(eligible)])
        raise GlagError(f"tail class {c} has {counts[c]} samples and no class has more, so it has no support "
                        "classes; lower --tail-max-count / --tail-fraction so the largest classes are not tail")
    if k > eligible.max():
        raise GlagError(f"--k {k}: no tail class has more than {eligible.max()} classes with more training "
                        f"samples (eligible support classes); use --k {eligible.max()} or fewer")
    return eligible


def support_classes(moments: ClassMoments, tail_classes, k: int, device="cpu",
                    chunk_rows: int = 0, n_jobs: int = 1) -> Supports:
    """Supports and weights for every sample of the tail classes.

    Args:
        moments: from `stats.class_moments` (centred rows of the tail classes still held).
        tail_classes: (T,) class ids.
        k: K, support classes per tail sample.
        device: where the distance GEMMs run.
        chunk_rows: tail samples per distance block (0: about 8 MB of distances per block).
        n_jobs: worker threads over blocks (glag.generate.parallel).
    Returns:
        Supports.
    """
    counts, device = moments.counts, torch.device(device)
    tail_classes = np.asarray(tail_classes, np.int64)
    start = np.full(len(counts), -1, np.int64)
    if len(tail_classes) == 0:
        empty = np.zeros(0, np.int64)
        return Supports(tail_classes=tail_classes, start=start, label=empty, source=empty,
                        classes=np.zeros((0, k), np.int64), weights=np.zeros((0, k), np.float32))
    check_k(counts, tail_classes, k)
    start[tail_classes] = np.r_[0, np.cumsum(counts[tail_classes])[:-1]]
    S = int(counts[tail_classes].sum())
    out = Supports(tail_classes=tail_classes, start=start, label=np.repeat(tail_classes, counts[tail_classes]),
                   source=np.concatenate([moments.index[c] for c in tail_classes]),
                   classes=np.full((S, k), -1, np.int64), weights=np.zeros((S, k), np.float32))
    search = _Search(moments, device)
    chunk_rows = chunk_rows or max(64, 2 ** 21 // len(counts))
    groups = list(_chunks(tail_classes[np.argsort(-counts[tail_classes], kind="stable")], counts, chunk_rows))
    parallel_classes(lambda group: search(group, k, out), groups, n_jobs if device.type == "cpu" else 1)
    return out


class _Search:
    """Nearest eligible class means for blocks of whole tail classes.

    Classes are sorted by count once, so a block's candidates (classes with
    more samples than its smallest class) are a prefix of that order and the
    distance GEMM skips every class that cannot be a support.
    """

    def __init__(self, moments: ClassMoments, device):
        self.m, self.device = moments, device
        self.by_count = np.argsort(-moments.counts, kind="stable")
        self.means = moments.means.float().to(device)                                # (C, D)
        self.mu = self.means[torch.as_tensor(self.by_count, device=device)]           # (C, D), by count
        self.mu_sq = (self.mu * self.mu).sum(1)

    def __call__(self, group, k: int, out: Supports):
        counts, dev = self.m.counts, self.device
        x = torch.cat([self.m.centred[c].to(dev) + self.means[c] for c in group])     # x_hat (m, D)
        own = np.repeat(counts[group], counts[group])
        prefix = int((counts[self.by_count] > own.min()).sum())                      # no candidate beyond
        d2 = torch.addmm(self.mu_sq[:prefix], x, self.mu[:prefix].T, alpha=-2)
        d2.add_((x * x).sum(1, keepdim=True))                                        # ||x - mu||^2, Eq. (7)
        d2.masked_fill_(torch.as_tensor(counts[self.by_count[:prefix]][None, :] <= own[:, None], device=dev),
                        torch.inf)                                                   # only larger classes
        kk = min(k, prefix)
        best, pos = torch.topk(d2, kk, dim=1, largest=False)                         # the K nearest means
        cls = torch.as_tensor(self.by_count, device=dev)[pos]
        dist = torch.stack([(x - self.means[cls[:, j]]).norm(dim=1) for j in range(kk)], 1)   # exact d_ij
        w = torch.as_tensor(counts, dtype=torch.float32, device=dev)[cls] / dist.clamp_min(DIST_FLOOR)
        valid = torch.isfinite(best)
        ids = np.concatenate([out.start[c] + np.arange(counts[c]) for c in group])
        out.classes[ids, :kk] = torch.where(valid, cls, -1).cpu().numpy()
        out.weights[ids, :kk] = torch.where(valid, w, 0.0).cpu().numpy()            # Eq. (10)


def _chunks(classes, counts, chunk_rows):
    """Groups of whole classes with about chunk_rows samples each."""
    group, size = [], 0
    for c in classes:
        group.append(int(c))
        size += int(counts[c])
        if size >= chunk_rows:
            yield group
            group, size = [], 0
    if group:
        yield group
