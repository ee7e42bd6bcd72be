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

import numpy as np
import torch

from glag.data.store import GeneratorArrays


def scale_for(n: int) -> float:
    """1 / sqrt(N_k - 1), with N_k = 1 (no covariance: the centred row is zero) mapped to 1."""
    return 1.0 / math.sqrt(max(n - 1, 1))


def stream_seed(*key) -> int:
    """An independent, reproducible random stream per key, e.g. (seed, epoch, batch)."""
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(1, np.uint64)[0] >> 1)


def make_generator(seed: int, device) -> torch.Generator:
    """A torch.Generator on `device` (CPU draws and device draws are different streams)."""
    return torch.Generator(device=torch.device(device)).manual_seed(int(seed))


class Synthesizer:
    """Draws (a, d) rows from a fitted generator on one device.

    The kept centred rows live in one (R, D) tensor (class k's are rows[offsets[k]:offsets[k + 1]]),
    so a batch's tail samples are gathered in one index; each draw call takes its Gaussian numbers
    in two flat blocks (own halves, then support halves) and runs one GEMM per class, which on a
    GPU keeps the launches per class, not per row.

    Args:
        arrays: GeneratorArrays (from a store, or a fit).
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
        sizes = np.array([0 if r is None else len(r) for r in arrays.class_rows], np.int64)
        self.offsets = np.r_[0, np.cumsum(sizes)]
        self.rows = self._place(_flat(arrays.class_rows, arrays.feature_dim))                           # (R, D)
        self.index = np.concatenate([i for i in arrays.class_index if i is not None] or [np.zeros(0, np.int64)])
        self.qr = {int(k): self._place(r) for k, r in arrays.qr.items()}                              # (D, D)
        self.scales = np.array([scale_for(int(n)) for n in self.counts], np.float32)

    def _place(self, x) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x)).to(self.device, torch.float32)

    def factor(self, k: int) -> torch.Tensor:
        """F_k (r_k, D): the QR factor of a class larger than D, else its centred rows."""
        return self.qr[k] if k in self.qr else self.rows[self.offsets[k]:self.offsets[k + 1]]

    def _gauss(self, classes: np.ndarray, scale: np.ndarray, gen) -> tuple[torch.Tensor, torch.Tensor]:
        """One draw of N(0, Sigma_k) per request (request i of class classes[i]), times scale[i].

        Requests are grouped by class, so each class's factor is read once, by one GEMM, however many
        own rows and support slots of the call need it; the Gaussian numbers come in one flat block.
        Returns:
            (z (n, D) in grouped order, where (n,) the row of z of each request).
        """
        order = np.argsort(classes, kind="stable")
        groups, counts = np.unique(classes[order], return_counts=True)
        ranks = np.array([self.factor(int(k)).shape[0] for k in groups], np.int64)
        z = torch.empty((len(classes), self.D), device=self.device)
        e = torch.randn(int(np.dot(counts, ranks)), generator=gen, device=self.device)
        e_scale = torch.as_tensor(np.repeat(scale[order], np.repeat(ranks, counts)), device=self.device)
        e.mul_(e_scale)                                                                      # s_k (sqrt w~_j) e
        row = at = 0
        for k, n, r in zip(groups, counts, ranks):
            torch.matmul(e[at:at + n * r].view(n, r), self.factor(int(k)), out=z[row:row + n])     # Eq. (6)
            row, at = row + n, at + n * r
        where = np.empty(len(classes), np.int64)
        where[order] = np.arange(len(classes))
        return z, torch.as_tensor(where, device=self.device)

    def draw(self, segments, gen) -> dict:
        """Rows for a list of (class, local source indices or None, n) segments.

        A segment with sources draws tail rows around those samples of the class (index j is the
        class's j-th sample); None draws n rows from the class's own distribution.
        Returns:
            {"a", "d": (n, D) float32 tensors on the device, "label": (n,) int64 tensor on the
            device, "source": (n,) int64 numpy, the bank train row of the sample (-1: class distribution)}.
        """
        classes = np.array([k for k, _, _ in segments], np.int64)
        counts = np.array([n for _, _, n in segments], np.int64)
        labels = np.repeat(classes, counts)
        starts = np.r_[0, np.cumsum(counts)[:-1]]
        tail = [(k, np.asarray(local, np.int64), s) for (k, local, _), s in zip(segments, starts) if local is not None]
        where = np.concatenate([s + np.arange(len(local)) for _, local, s in tail]) if tail else np.zeros(0, int)
        ids = np.concatenate([self.start[k] + local for k, local, _ in tail]) if tail else np.zeros(0, int)
        cls, wn = self._weights(ids)
        slots, slot_scale = self._slots(cls, wn)                                            # support draws
        z, at = self._gauss(np.r_[labels, slots[:, 2]], np.r_[self.scales[labels], slot_scale], gen)
        y = torch.as_tensor(labels, device=self.device)
        a = z[at[:len(labels)]]                                                              # z_own ~ N(0, Sigma_k)
        a += self.means[y]                                                                   # class distribution
        sources = np.full(len(labels), -1, np.int64)
        d = torch.zeros_like(a)
        if tail:
            flat = np.concatenate([self.offsets[k] + local for k, local, _ in tail])
            sources[where] = self.index[flat]
            where_t = torch.as_tensor(where, device=self.device)
            a[where_t] += self.rows[torch.as_tensor(flat, device=self.device)]              # a = x_hat_i + z_own
            d[where_t] = self._support_half(wn, slots, z, at[len(labels):]) - a[where_t]   # d = b - a
        return {"a": a, "d": d, "label": y, "source": sources}

    def _slots(self, cls: np.ndarray, wn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The support draws of tail samples with support classes `cls` and weights `wn` (n, K): (row, slot j,
        class) of each used slot (n_slots, 3), in slot-major order, and its scale sqrt(w~_j) s_j (Eq. 9)."""
        j, row = np.nonzero(cls.T >= 0)                                                     # slot-major
        scale = (np.sqrt(wn[row, j]) * self.scales[cls[row, j]]).astype(np.float32)
        return np.stack([row, j, cls[row, j]], axis=1), scale

    def _weights(self, ids: np.ndarray):
        """(support classes (n, K), normalised weights w~ (n, K)) of tail samples `ids` (Eq. 10, then w / sum(w))."""
        cls, w = self.sup_classes[ids], self.sup_weights[ids]
        return cls, w / np.maximum(w.sum(axis=1, keepdims=True), 1e-300)

    def _support_half(self, wn: np.ndarray, slots: np.ndarray, z: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        """b = mu_S + z_S of the tail samples whose normalised weights are `wn` (n, K); z[at[s]] is slot s's
        scaled support draw.

        Slot by slot: each pass adds at most one term to each row of b, so the sums are the same on any device."""
        b = torch.zeros((len(wn), self.D), device=self.device)
        for j in range(wn.shape[1]):
            used = np.flatnonzero(slots[:, 1] == j)
            rows = slots[used, 0]
            term = self.means[torch.as_tensor(slots[used, 2], device=self.device)]
            term.mul_(torch.as_tensor(wn[rows, j], dtype=torch.float32, device=self.device)[:, None])   # w~_j mu_j
            term += z[at[torch.as_tensor(used, device=self.device)]]                                  # + z_j
            b.index_add_(0, torch.as_tensor(rows, device=self.device), term)              # mu_S + z_S, Eq. (8)-(9)
        return b

    def nbytes(self) -> int:
        """Device bytes of the factors and means."""
        tensors = [self.rows, self.means] + list(self.qr.values())
        return sum(t.numel() * t.element_size() for t in tensors)


def _flat(class_rows, D: int) -> np.ndarray:
    """The kept class rows as one (R, D) array: the store's own array when the rows are consecutive views of it
    (no copy), else a concatenation."""
    kept = [np.asarray(r) for r in class_rows if r is not None]
    if not kept:
        return np.zeros((0, D), np.float32)
    base = kept[0].base
    if base is not None and base.ndim == 2 and sum(len(r) for r in kept) == len(base) and \
            all(r.base is base for r in kept) and np.shares_memory(kept[0], base[:1]):
        return base
    return np.concatenate(kept)
