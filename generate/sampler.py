"""Thin covariance factors of the class covariances, and the gap rule (paper Sec. 4.2).

No D x D covariance is ever formed or factorised per sample. Each class k gets a factor
F_k (r_k, D), r_k = min(N_k, D), with Sigma_k = s_k^2 F_k^T F_k: for N_k <= D its centred
rows themselves, for N_k > D the triangular R_k of the thin QR Xc_k = Q_k R_k
(R_k^T R_k = Xc_k^T Xc_k). Drawing from them is `glag.data.synthesis.Synthesizer`, shared
with stage two.
"""
import numpy as np
import torch

from glag.generate.parallel import parallel_classes
from glag.generate.stats import ClassMoments


def build_factors(moments: ClassMoments, keep_rows, n_jobs: int = 1) -> dict:
    """QR factors of the classes larger than D; frees the centred rows a class no longer needs.

    Args:
        moments: from `stats.class_moments` (rows on the CPU).
        keep_rows: classes whose centred rows must stay (tail classes: their samples are sources).
        n_jobs: worker threads for the per-class QRs (glag.generate.parallel).
    Returns:
        {class: (D, D) float32 R_k} for every class with N_k > D; the centred rows of the
        other classes are their factors (kept in `moments.centred`).
    """
    counts, D = moments.counts, moments.feature_dim
    keep = set(int(k) for k in keep_rows)
    qr = {}

    def factor(k):
        a, _ = torch.geqrf(moments.centred[k])        # Xc = Q R; R^T R = Xc^T Xc, so Sigma = s^2 R^T R
        qr[int(k)] = a[:D].triu().contiguous()
        if k not in keep:
            moments.centred[k] = None                 # the rows are no longer needed: D x D is smaller

    parallel_classes(factor, np.flatnonzero(counts > D), n_jobs)
    return qr


def gap_counts(counts, tail_mask, cap: int = 0, balance_head: bool = True) -> np.ndarray:
    """Synthetic rows per class per epoch of the gap rule: the gap to the largest class (paper Sec. 4.2).

    Args:
        counts: (C,) N_k.  tail_mask: (C,) bool.
        cap: at most this many rows per class per epoch (0 = no cap).
        balance_head: non-tail classes also get their gap, drawn from their own class distribution.
    Returns:
        (C,) int64.
    """
    counts = np.asarray(counts, dtype=np.int64)
    need = counts.max() - counts                       # N_max - N_k
    need[counts == 0] = 0                              # nothing to sample from
    if not balance_head:
        need[~np.asarray(tail_mask, bool)] = 0
    return np.minimum(need, cap) if cap > 0 else need


def sample_segments(need, tail_mask, counts, per_class: int):
    """(class, local sources or None, n) segments of an inspection sample: up to `per_class` rows of every
    class that gets synthetic rows; a tail class's rows go round its samples from the first."""
    segments = []
    for k in np.flatnonzero(need):
        n = min(int(per_class), int(need[k]))
        local = np.arange(n) % int(counts[k]) if tail_mask[k] else None
        segments.append((int(k), local, n))
    return segments
