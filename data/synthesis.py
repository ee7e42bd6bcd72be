"""The fitted Adaptive Feature Generator, as both stage-two tools use it: draw calibrated rows (Eq. 8-9).

`glag-generate` fits the generator (class moments, supports, thin factors) and writes it
to the synthetic store; `glag-classify` reads it back and draws each epoch's rows on
its own device, so the store's size does not grow with epochs x classes x N_max
(docs/afg.md, "The synthetic store"). Both draw through `Synthesizer.draw`, so a
row drawn for inspection by glag-generate and the same row drawn by stage two are
the same numbers.

Each class k has a thin factor F_k (r_k, D), r_k = min(N_k, D), Sigma_k = s_k^2 F_k^T F_k:

    N_k <= D:  F_k = Xc_k (the centred rows x_hat - mu_k themselves), s_k = 1 / sqrt(N_k - 1)
    N_k >  D:  F_k = R_k  (triangular factor of the thin QR Xc_k = Q_k R_k), same s_k

so `z = (s_k * e) @ F_k`, e ~ N(0, I_{r_k}), is exactly N(0, Sigma_k) (Eq. 6). A synthetic
row of tail sample i (class y_i, supports S with weights w_j, Eq. 10) is drawn as its two
independent halves

    a = x_hat_i + z_own,            z_own ~ N(0, Sigma_{y_i})
    b = mu_S + z_S,  mu_S = sum_j w~_j mu_j,  z_S = sum_j sqrt(w~_j) z_j,  z_j ~ N(0, Sigma_j)

with w~ = w / sum(w), and kept as (a, d = b - a): s = a + beta d + sqrt(gamma) eps then has
the mean of Eq. 8 and the covariance of Eq. 9 for any beta chosen later (glag.data.mixing).
A non-tail row is a draw from its own class distribution, a = mu_k + z_own, d = 0.

Random numbers come from the generator handed to `draw`, on the device the rows are
drawn on, in a fixed order; the same generator state gives the same rows.
"""
import math
from dataclasses import dataclass

import numpy as np
import torch

def scale_for(n: int) -> float:
    """1 / sqrt(N_k - 1), with N_k = 1 (no covariance: the centred row is zero) mapped to 1."""
    return 1.0 / math.sqrt(max(n - 1, 1))


def stream_seed(*key) -> int:
    """An independent, reproducible random stream per key, e.g. (seed, epoch, batch)."""
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(1, np.uint64)[0] >> 1)


def make_generator(seed: int, device) -> torch.Generator:
    """A torch.Generator on `device` (CPU draws and device draws are different streams)."""
    return torch.Generator(device=torch.device(device)).manual_seed(int(seed))


@dataclass
class GeneratorArrays:
    """What a fitted generator is (the synthetic store holds exactly these).

    Attributes:
        counts: (C,) int64 N_k the moments were taken over.
        means: (C, D) float32 mu_k in the Tukey space (Eq. 5).
        class_rows: C entries: the centred rows x_hat - mu_k (N_k, D) of a class whose rows are kept
            (every class with N_k <= D, whose rows are its factor, and every tail class, whose rows are
            its samples), else None. Numpy arrays or CPU tensors.
        class_index: C entries: the bank train row of each kept row (N_k,) int64, else None.
        qr: {class: (D, D) R_k} for the classes with N_k > D.
        tail_classes: (T,) int64.
        sup_classes, sup_weights: (S, K) support classes (-1 = none) and w_j (Eq. 10) of every tail
            sample: tail classes in class order, samples in the order of their rows.
        lam: the Tukey lambda of the space.
    """
    counts: np.ndarray
    means: np.ndarray
    class_rows: list
    class_index: list
    qr: dict
    tail_classes: np.ndarray
    sup_classes: np.ndarray
    sup_weights: np.ndarray
    lam: float

    @property
    def feature_dim(self) -> int:
        return self.means.shape[1]

    def kept_rows(self) -> int:
        return sum(len(r) for r in self.class_rows if r is not None)

    def tail_start(self) -> np.ndarray:
        """(C,) id of each tail class's first sample in the support tables (-1 for other classes)."""
        start = np.full(len(self.counts), -1, np.int64)
        t = np.asarray(self.tail_classes, np.int64)
        if len(t):
            start[t] = np.r_[0, np.cumsum(np.asarray(self.counts)[t])[:-1]]
        return start


class Synthesizer:
    """Draws (a, d) rows from a fitted generator on one device.

    Args:
        arrays: GeneratorArrays (numpy or torch arrays are both accepted).
        device: where the factors live (in float32, whatever the store's type) and the rows are drawn.
    """

    def __init__(self, arrays: GeneratorArrays, device="cpu"):
        self.device = torch.device(device)
        self.counts = np.asarray(arrays.counts, np.int64)
        self.start = arrays.tail_start()
        self.tail_classes = np.asarray(arrays.tail_classes, np.int64)
        self.sup_classes = np.asarray(arrays.sup_classes, np.int64)
        self.sup_weights = np.asarray(arrays.sup_weights, np.float64)
        self.D = arrays.feature_dim
        self.means = torch.as_tensor(np.asarray(arrays.means), dtype=torch.float32).to(self.device)   # (C, D)
        self.rows = [None if r is None else self._place(r) for r in arrays.class_rows]              # (N_k, D)
        self.index = [None if i is None else np.asarray(i, np.int64) for i in arrays.class_index]
        self.qr = {int(k): self._place(r) for k, r in arrays.qr.items()}                              # (D, D)
        self.scales = np.array([scale_for(int(n)) for n in self.counts])

    def _place(self, x) -> torch.Tensor:
        return torch.as_tensor(x).to(self.device, torch.float32)

    def factor(self, k: int) -> torch.Tensor:
        """F_k (r_k, D): the QR factor of a class larger than D, else its centred rows."""
        return self.qr[k] if k in self.qr else self.rows[k]

    def _gauss(self, out: torch.Tensor, k: int, gen, row_scale=None) -> torch.Tensor:
        """Fill out (n, D) float32 with rows of N(0, Sigma_k), each optionally scaled (sqrt of a weight)."""
        F = self.factor(k)
        e = torch.randn((len(out), F.shape[0]), generator=gen, device=self.device)
        s = float(self.scales[k])
        e.mul_(s if row_scale is None else torch.as_tensor(row_scale, device=self.device)[:, None] * s)
        return torch.matmul(e, F, out=out)                                                   # Eq. (6) via factor

    def draw(self, segments, gen) -> dict:
        """Rows for a list of (class, local source indices or None, n) segments.

        A segment with sources draws tail rows around those samples of the class (index j is the
        class's j-th sample); None draws n rows from the class's own distribution.
        Returns:
            {"a", "d": (n, D) float32 tensors on the device, "label": (n,) int64 tensor on the
            device, "source": (n,) int64 numpy, the bank train row of the sample (-1: class distribution)}.
        """
        total = sum(n for _, _, n in segments)
        a = torch.empty((total, self.D), device=self.device)
        tail_rows, tail_ids, labels, sources, offset = [], [], [], [], 0
        for k, local, n in segments:
            out = self._gauss(a[offset:offset + n], k, gen)                                  # z_own
            out += self.means[k]                                                             # class distribution
            if local is None:
                sources.append(np.full(n, -1, np.int64))
            else:
                local = np.asarray(local, np.int64)
                out += self.rows[k][torch.as_tensor(local, device=self.device)]              # a = x_hat_i + z_own
                tail_rows.append(offset + np.arange(n))
                tail_ids.append(self.start[k] + local)
                sources.append(self.index[k][local])
            labels.append(np.full(n, k, np.int64))
            offset += n
        d = torch.zeros_like(a)
        if tail_rows:
            where = torch.as_tensor(np.concatenate(tail_rows), device=self.device)
            d[where] = self._support_half(np.concatenate(tail_ids), gen) - a[where]          # d = b - a
        label = torch.as_tensor(np.concatenate(labels) if labels else np.zeros(0, np.int64), device=self.device)
        return {"a": a, "d": d, "label": label,
                "source": np.concatenate(sources) if sources else np.zeros(0, np.int64)}

    def _support_half(self, ids: np.ndarray, gen) -> torch.Tensor:
        """b = mu_S + z_S for tail samples `ids` (one row per id).

        The K draws of every row are grouped by support class: one GEMM per class writes a
        contiguous block of `P`; each of the K slots then adds its block rows back in row order.
        """
        uniq, inv = np.unique(ids, return_inverse=True)
        cls, w = self.sup_classes[uniq], self.sup_weights[uniq]                            # (u, K)
        wn = w / w.sum(axis=1, keepdims=True)                                               # w~_j, Eq. (8)-(9)
        coef = torch.as_tensor(np.where(cls >= 0, wn, 0.0), dtype=torch.float32, device=self.device)
        idx = torch.as_tensor(np.maximum(cls, 0), device=self.device)
        mu_s = torch.einsum("uk,ukd->ud", coef, self.means[idx])                           # mu_S, Eq. (8)
        b = mu_s[torch.as_tensor(inv, device=self.device)]                                   # (n, D)
        n, K = len(ids), cls.shape[1]
        flat, root = cls[inv].ravel(), np.sqrt(wn[inv].ravel()).astype(np.float32)           # slot r*K+j
        slots = np.flatnonzero(flat >= 0)
        slots = slots[np.argsort(flat[slots], kind="stable")]                                # grouped by class
        P = torch.zeros((len(slots) + 1, self.D), device=self.device)                       # last row: padding
        cuts = np.flatnonzero(np.r_[True, flat[slots][1:] != flat[slots][:-1], True])
        for s, e in zip(cuts[:-1], cuts[1:]):                                                # one GEMM per class
            self._gauss(P[s:e], int(flat[slots[s]]), gen, torch.from_numpy(root[slots[s:e]]))
        where = np.full(n * K, len(slots), np.int64)
        where[slots] = np.arange(len(slots))
        where = torch.as_tensor(where.reshape(n, K), device=self.device)
        for j in range(K):
            b += P[where[:, j]]                                                              # z_S, Eq. (9)
        return b

    def nbytes(self) -> int:
        """Device bytes of the factors and means."""
        tensors = [r for r in self.rows if r is not None] + list(self.qr.values()) + [self.means]
        return sum(t.numel() * t.element_size() for t in tensors)
