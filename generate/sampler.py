"""Thin covariance factors, the gap rule, and exact calibrated sampling (paper Eq. 8-9).

No D x D covariance is ever formed or factorised per sample. Each class k gets
a factor F_k (r_k, D), r_k = min(N_k, D), with Sigma_k = s_k^2 F_k^T F_k:

    N_k <= D:  F_k = Xc_k (the centred rows themselves), s_k = 1 / sqrt(N_k - 1)
    N_k >  D:  F_k = R_k  (triangular factor of the thin QR Xc_k = Q_k R_k), same s_k

so `z = (s_k * e) @ F_k` with e ~ N(0, I_{r_k}) is exactly N(0, Sigma_k) (Eq. 6).
A synthetic row of tail sample i (class y_i, supports S with weights w_j, Eq. 10) is
stored as its two independent halves

    a = x_hat_i + z_own,            z_own ~ N(0, Sigma_{y_i})
    b = mu_S + z_S,  mu_S = sum_j w~_j mu_j,  z_S = sum_j sqrt(w~_j) z_j,  z_j ~ N(0, Sigma_j)

with w~ = w / sum(w), so z_S ~ N(0, sum_j w~_j Sigma_j). Then
s = a + beta (b - a) + sqrt(gamma) eps has exactly the mean of Eq. 8 and the
covariance of Eq. 9 (data/mixing.py). Draws are grouped by class: one matrix
product per class per batch for the own halves, one per support class per
batch for the support halves.

All Gaussian numbers come from a CPU torch.Generator in a fixed order and are
moved to the device, so CPU and CUDA runs give the same rows up to rounding.
"""
from dataclasses import dataclass

import numpy as np
import torch

from glag.generate.parallel import parallel_classes
from glag.generate.stats import ClassMoments, scale_for


@dataclass
class Factors:
    """mats[k]: (r_k, D) float32 on the device (None for empty classes); scales[k] = s_k."""
    mats: list
    scales: np.ndarray
    qr_classes: np.ndarray  # classes whose factor is a QR R (N_k > D)


def build_factors(moments: ClassMoments, keep_rows, device="cpu", n_jobs: int = 1) -> Factors:
    """Thin factors for every class; frees centred rows a class no longer needs.

    Args:
        moments: from `stats.class_moments`.
        keep_rows: classes whose centred rows must stay (tail classes: their samples are sources).
        device: where the factors live for sampling.
        n_jobs: worker threads for the per-class QRs (glag.generate.parallel).
    Returns:
        Factors.
    """
    counts, D = moments.counts, moments.feature_dim
    keep = set(int(k) for k in keep_rows)
    mats = [None] * len(counts)

    def factor(k):
        n = int(counts[k])
        if n == 0:
            return
        xc = moments.centred[k]
        if n <= D:
            mats[k] = xc
            return
        a, _ = torch.geqrf(xc)                       # Xc = Q R; R^T R = Xc^T Xc, so Sigma = s^2 R^T R
        mats[k] = a[:D].triu().contiguous()
        if k not in keep:
            moments.centred[k] = None                # the rows are no longer needed: D x D is smaller

    parallel_classes(factor, range(len(counts)), n_jobs)
    if torch.device(device).type != "cpu":                # one device copy, shared by rows and factor
        for k in range(len(counts)):
            if moments.centred[k] is not None:
                moments.centred[k] = moments.centred[k].to(device)
            if mats[k] is not None:
                mats[k] = moments.centred[k] if counts[k] <= D else mats[k].to(device)
    scales = np.array([scale_for(int(n)) for n in counts])
    return Factors(mats=mats, scales=scales, qr_classes=np.flatnonzero(counts > D))


def gap_counts(counts, tail_mask, cap: int = 0, balance_head: bool = True) -> np.ndarray:
    """Synthetic rows per class per generation epoch: the gap to the largest class (paper §4.2).

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


def epoch_segments(need, tail_mask, counts, epoch: int, batch_rows: int):
    """Batches of (class, local source rows or None, n) segments for one generation epoch.

    Tail rows go round-robin over the class's samples, continuing where the
    previous epoch stopped, so over many epochs every sample is used equally.
    Non-tail rows carry no source (None): they come from N(mu_k, Sigma_k).
    """
    batch, size = [], 0
    for k in np.flatnonzero(need):
        n, done = int(need[k]), 0
        first = (epoch * n) % int(counts[k]) if tail_mask[k] else 0
        while done < n:
            m = min(n - done, batch_rows - size)
            local = (first + done + np.arange(m)) % int(counts[k]) if tail_mask[k] else None
            batch.append((int(k), local, m))
            size, done = size + m, done + m
            if size == batch_rows:
                yield batch
                batch, size = [], 0
    if batch:
        yield batch


class CalibratedSampler:
    """Draws the store's (a, d = b - a) rows, batch by batch.

    Args:
        moments, factors: from `stats.class_moments` and `build_factors`.
        supports: `neighbors.Supports` for the tail samples.
        device: torch device of the factors.
    """

    def __init__(self, moments: ClassMoments, factors: Factors, supports, device="cpu"):
        self.m, self.f, self.sup, self.device = moments, factors, supports, torch.device(device)
        self.means = moments.means.float().to(self.device)                          # (C, D)

    def _gauss(self, out: torch.Tensor, k: int, gen, row_scale=None) -> torch.Tensor:
        """Fill out (rows, D) with rows of N(0, Sigma_k), each optionally scaled (sqrt of a weight)."""
        F = self.f.mats[k]
        e = torch.randn((len(out), F.shape[0]), generator=gen)
        e.mul_(float(self.f.scales[k]) if row_scale is None else row_scale[:, None] * float(self.f.scales[k]))
        return torch.matmul(e.to(self.device), F, out=out)                          # Eq. (6) via factor

    def batch(self, segments, gen) -> dict:
        """Rows for a list of (class, local sources or None, n) segments.

        Returns:
            {"a", "d": (n, D) float32 numpy; "label", "source": (n,) int64} with
            source = bank train row of the tail sample (-1 for class-distribution rows).
        """
        total = sum(n for _, _, n in segments)
        a = torch.empty((total, self.means.shape[1]), device=self.device)
        tail_rows, tail_ids, labels, sources, offset = [], [], [], [], 0
        for k, local, n in segments:
            out = self._gauss(a[offset:offset + n], k, gen)                          # z_own
            out += self.means[k]                                                     # class distribution
            if local is None:
                sources.append(np.full(n, -1, np.int64))
            else:
                out += self.m.centred[k][torch.as_tensor(local, device=self.device)]  # a = x_hat_i + z_own
                tail_rows.append(offset + np.arange(n))
                tail_ids.append(self.sup.start[k] + local)
                sources.append(self.m.index[k][local])
            labels.append(np.full(n, k, np.int64))
            offset += n
        if tail_rows and sum(map(len, tail_rows)) == total:
            d = self._support_half(np.concatenate(tail_ids), gen).sub_(a)            # d = b - a
        else:
            d = torch.zeros_like(a)
            if tail_rows:
                rows = torch.as_tensor(np.concatenate(tail_rows), device=self.device)
                d[rows] = self._support_half(np.concatenate(tail_ids), gen) - a[rows]
        return {"a": a.cpu().numpy(), "d": d.cpu().numpy(), "label": np.concatenate(labels),
                "source": np.concatenate(sources)}

    def _support_half(self, ids: np.ndarray, gen) -> torch.Tensor:
        """b = mu_S + z_S for tail samples `ids` (one row per id).

        The K draws of every row are grouped by support class: one GEMM per
        class writes a contiguous block of `P`; each of the K slots then adds
        its block rows back in row order (no scatter-add).
        """
        uniq, inv = np.unique(ids, return_inverse=True)
        cls, w = self.sup.classes[uniq], self.sup.weights[uniq].astype(np.float64)  # (u, K)
        wn = w / w.sum(axis=1, keepdims=True)                                       # w~_j, Eq. (8)-(9)
        coef = torch.as_tensor(np.where(cls >= 0, wn, 0.0), dtype=torch.float32, device=self.device)
        idx = torch.as_tensor(np.maximum(cls, 0), device=self.device)
        mu_s = torch.einsum("uk,ukd->ud", coef, self.means[idx])                   # mu_S, Eq. (8)
        b = mu_s[torch.as_tensor(inv, device=self.device)]                           # (n, D)
        n, K = len(ids), cls.shape[1]
        flat, root = cls[inv].ravel(), np.sqrt(wn[inv].ravel()).astype(np.float32)   # slot r*K+j
        slots = np.flatnonzero(flat >= 0)
        slots = slots[np.argsort(flat[slots], kind="stable")]                        # grouped by class
        P = torch.zeros((len(slots) + 1, b.shape[1]), device=self.device)           # last row: padding
        cuts = np.flatnonzero(np.r_[True, flat[slots][1:] != flat[slots][:-1], True])
        for s, e in zip(cuts[:-1], cuts[1:]):                                        # one GEMM per class
            self._gauss(P[s:e], int(flat[slots[s]]), gen, torch.from_numpy(root[slots[s:e]]))
        where = np.full(n * K, len(slots), np.int64)
        where[slots] = np.arange(len(slots))
        where = torch.as_tensor(where.reshape(n, K), device=self.device)
        for j in range(K):
            b += P[where[:, j]]                                                      # z_S, Eq. (9)
        return b
