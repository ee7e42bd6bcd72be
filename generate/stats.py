"""Class moments (paper Eq. 5-6) streamed from a feature bank.

One pass over the bank's train split, chunk by chunk: every chunk is checked
(finite; non-negative, the bank contract for post-ReLU features; labels in range: the
shared checks of `glag.data.validate`), transformed
(Tukey's ladder of powers, `glag.data.tukey`) and copied into per-class row
buffers; the bank is never loaded whole. After the pass, each class's mean is
summed in float64 and its rows are centred on it (classes in parallel). The covariance of Eq. 6 is never formed: it is
`Xc_k^T Xc_k / (N_k - 1)` and `glag.generate.sampler` samples it through a thin
factor of the centred rows.

A class with one sample has a mean and a centred row of zeros: its own
covariance is zero (Eq. 6 is undefined there) and no code divides by N_k - 1.
"""
from dataclasses import dataclass

import numpy as np
import torch

from glag.data.errors import GlagError
from glag.data.tukey import tukey_transform_
from glag.data.validate import check_counts, check_labels, check_non_negative, check_rows
from glag.generate.parallel import ordered_map, parallel_classes


@dataclass
class ClassMoments:
    """Per-class statistics in the Tukey-transformed space.

    Attributes:
        counts: (C,) int64, N_k.
        means: (C, D) float64 tensor, mu_k (Eq. 5).
        centred: list of C float32 tensors (N_k, D): x_hat - mu_k, rows of class k in bank order;
            None once a class's rows are no longer needed (see `sampler.build_factors`).
        index: list of C int64 arrays (N_k,): the bank train row of each centred row.
        lam: the Tukey lambda the rows were transformed with.
    """
    counts: np.ndarray
    means: torch.Tensor
    centred: list
    index: list
    lam: float

    @property
    def feature_dim(self) -> int:
        return self.means.shape[1]

    def covariance(self, k: int) -> torch.Tensor:
        """Sigma_k (D, D) float64, explicitly (Eq. 6); for tests and small D only."""
        xc = self.centred[k].double()
        return xc.T @ xc / max(len(xc) - 1, 1)                                    # Eq. (6)


WHAT = "the train features"   # what the moments read, for the messages (views included, if pooled)


def _prepare(item, lam: float, where: str, C: int):
    """One chunk checked, transformed and grouped by class (runs in a worker thread)."""
    start, chunk = item
    x, labels = np.asarray(chunk["features"], np.float32), np.asarray(chunk["labels"], np.int64)
    check_labels(labels, C, where, "train/labels", start)
    check_non_negative(check_rows(x, where, WHAT, start), where, WHAT)     # the bank contract, any lambda
    order = np.argsort(labels, kind="stable")
    lab = labels[order]
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]]) if len(lab) else np.zeros(0, np.int64)
    grouped = tukey_transform_(x[order], lam)                       # the gather's copy is ours to transform
    return grouped, order + start, lab[starts].tolist(), starts.tolist(), np.r_[starts[1:], len(lab)].tolist()


class _ClassRows:
    """Where each class's rows go, filled chunk by chunk.

    Classes with N_k <= D share one array, so a chunk lands there in one
    scatter instead of a Python loop over its pieces (at iNaturalist scale a
    4,096-row chunk holds ~3,000 classes; profiled single-threaded, the loop
    took 3.05 s and the scatter 2.3 s, mostly memory traffic). A class with N_k > D gets an
    array of its own: `sampler.build_factors` replaces its rows by a D x D
    factor and frees them.
    """

    def __init__(self, counts: np.ndarray, dim: int, where: str):
        self.counts, self.alone, self.where = counts, counts > dim, where
        shared = np.where(self.alone, 0, counts)
        self.offset = np.r_[0, np.cumsum(shared)[:-1]]                     # into self.shared
        # torch.empty, not np.empty: numpy asks for transparent huge pages on arrays >= 4 MB, and on a
        # kernel that compacts memory for them on first touch that doubled the pass (iNat: 10 s vs 5 s)
        empty = lambda n: torch.empty((int(n), dim), dtype=torch.float32).numpy()
        self.shared = empty(shared.sum())
        self.own = {int(k): empty(counts[k]) for k in np.flatnonzero(self.alone)}
        self.first = np.r_[0, np.cumsum(counts)[:-1]]                       # into self.rows
        self.rows = np.zeros(int(counts.sum()), np.int64)
        self.fill = np.zeros(len(counts), np.int64)

    def place(self, prepared):
        """Copy one prepared chunk (rows grouped by class) into place."""
        x, rows, classes, starts, ends = prepared
        classes, starts, ends = (np.asarray(v, np.int64) for v in (classes, starts, ends))
        lengths = ends - starts
        if (self.fill[classes] + lengths > self.counts[classes]).any():
            found = self.fill.copy()
            found[classes] += lengths
            check_counts(found, self.counts, self.where, at_least=True)
        label = np.repeat(classes, lengths)
        slot = np.repeat(self.fill[classes] - starts, lengths) + np.arange(len(x))   # position in its class
        self.rows[self.first[label] + slot] = rows
        alone = self.alone[label]
        if alone.any():
            for k, s, e in zip(classes, starts, ends):
                if self.alone[k]:
                    self.own[int(k)][self.fill[k]:self.fill[k] + e - s] = x[s:e]
            keep = ~alone
            self.shared[self.offset[label[keep]] + slot[keep]] = x[keep]
        else:
            self.shared[self.offset[label] + slot] = x
        self.fill[classes] += lengths

    def buffers(self) -> list:
        return [self.own[k] if self.alone[k] else self.shared[self.offset[k]:self.offset[k] + n]
                for k, n in enumerate(self.counts)]

    def index(self) -> list:
        return [self.rows[f:f + n] for f, n in zip(self.first, self.counts)]


def class_moments(chunks, counts, lam: float = 0.5, where: str = "bank", n_jobs: int = 1,
                  progress=None) -> ClassMoments:
    """Stream train rows once; return means (Eq. 5) and centred rows (for Eq. 6).

    Args:
        chunks: iterable of (start, {"features": (n, D) float32, "labels": (n,) int64}),
            as `Bank.iter_chunks("train")` yields.
        counts: (C,) train count per class (the bank's classes/train_counts).
        lam: Tukey lambda; 1 = no transform.
        where: file name for error messages.
        n_jobs: worker threads for checking/transforming chunks and for the per-class centring.
        progress: optional callable(rows_done) called after each chunk.
    Returns:
        ClassMoments with rows in the transformed space.
    """
    counts = np.asarray(counts, dtype=np.int64)
    C = len(counts)
    placed = None
    for prepared in ordered_map(lambda item: _prepare(item, lam, where, C), chunks, n_jobs):
        if placed is None:
            placed = _ClassRows(counts, prepared[0].shape[1], where)
        placed.place(prepared)
        if progress is not None:
            progress(int(placed.fill.sum()))
    if placed is None or placed.fill.sum() == 0:
        raise GlagError(f"{where}: the train split is empty; rebuild the bank")
    check_counts(placed.fill, counts, where)
    buffers, index = [torch.from_numpy(b) for b in placed.buffers()], placed.index()
    del placed
    means = torch.zeros((C, buffers[0].shape[1]), dtype=torch.float64)

    def centre(k):
        if counts[k]:
            sums = np.add.reduce(buffers[k].numpy(), axis=0, dtype=np.float64)      # 5x torch's float64 sum here
            means[k] = torch.from_numpy(sums) / counts[k]                                # Eq. (5), float64 sums
            buffers[k] -= means[k].float()                                            # x_hat - mu_k, Eq. (6)

    parallel_classes(centre, range(C), n_jobs)
    return ClassMoments(counts=counts, means=means, centred=buffers, index=index, lam=lam)
