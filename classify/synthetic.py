"""Synthetic rows for stage two, drawn where the head trains from the store's fitted generator.

Each chunk of an epoch's plan draws its synthetic rows in one go, grouped by class
(`glag.data.synthesis.Synthesizer.draw`), from a stream keyed by (store seed, run seed,
epoch, chunk): the rows are a deterministic function of the store, the seed and the
epoch, whatever the lanes, the pass (AD's search or refit) or the process. Every lane
mixes the same halves with its own beta (Eq. 8-9 via glag.data.mixing) and the same
gamma noise, so lanes differ by beta alone.
"""
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from glag.data.mixing import gamma_noise, mix_rows
from glag.data.synthesis import Synthesizer, make_generator, stream_seed
from glag.data.tukey import tukey_inverse

SAMPLE_CHUNK = 2 ** 31 - 1     # the t-SNE sample's stream: no epoch has this many chunks


def source_samples(classes: np.ndarray, items: np.ndarray, epoch: int, need, counts, tail) -> np.ndarray:
    """Local source sample of synthetic item `items` (< need) of each class: a tail class's items go round
    its samples, continuing where the previous epoch stopped (every sample serves equally); -1 for rows
    drawn from a class's own distribution."""
    local = (epoch * need[classes] + items) % np.maximum(counts[classes], 1)
    return np.where(tail[classes], local, -1)


@dataclass
class Drawn:
    """A chunk's synthetic rows in the store's (Tukey) space: halves a, d (n, D), labels (n,), noise or None;
    `at` (n,) maps the i-th item asked for to its row (the draws are grouped by class, not copied back in order)."""
    a: Tensor
    d: Tensor
    labels: Tensor
    eps: Tensor | None
    at: Tensor | None = None


class SyntheticRows:
    """The store's generator on the head's device, and how its rows enter the head's space.

    Args:
        store: glag.data.store.Store.
        space: the head's space, "raw" or "tukey".
        gamma, gamma_mode: dispersion added at mixing time (Eq. 9).
        seed: the run's seed (with the store's own seed, it keys every draw).
        device: where rows are drawn (the factors live there in float32).
    """

    def __init__(self, store, space: str, gamma=0.0, gamma_mode="isotropic", seed: int = 0, device="cpu"):
        self.synth = Synthesizer(store.generator(), device)
        self.need = np.asarray(store.need, np.int64)                                     # (C,) gap rows
        self.counts = np.asarray(store.counts, np.int64)                                 # (C,) N_k of the moments
        self.tail = np.zeros(len(self.need), bool)
        self.tail[np.asarray(store.tail_classes, np.int64)] = True
        self.lam, self.space = float(store.attrs["tukey_lambda"]), space
        self.gamma, self.gamma_mode = float(gamma), gamma_mode
        self.key = (int(store.attrs["seed"]), int(seed))
        self.device = torch.device(device)
        self.seconds = 0.0                  # spent drawing, for the progress meter

    def sources(self, classes: np.ndarray, items: np.ndarray, epoch: int) -> np.ndarray:
        """source_samples of this store."""
        return source_samples(classes, items, epoch, self.need, self.counts, self.tail)

    def draw(self, classes: np.ndarray, sources: np.ndarray, epoch: int, chunk: int) -> Drawn:
        """Rows for items (class, local source or -1), in the given order."""
        started = time.perf_counter()
        try:
            return self._draw(classes, sources, epoch, chunk)
        finally:
            self.seconds += time.perf_counter() - started

    def _draw(self, classes, sources, epoch, chunk) -> Drawn:
        order = np.argsort(classes, kind="stable")
        cls, src = classes[order], sources[order]
        cuts = np.flatnonzero(np.r_[True, cls[1:] != cls[:-1], True]) if len(cls) else np.zeros(1, np.int64)
        segments = [(int(cls[s]), None if src[s] < 0 else src[s:e], int(e - s)) for s, e in zip(cuts[:-1], cuts[1:])]
        gen = make_generator(stream_seed(*self.key, epoch, chunk), self.device)
        rows = self.synth.draw(segments, gen)
        at = torch.as_tensor(np.argsort(order, kind="stable"), device=self.device)     # given order -> grouped row
        eps = None
        if self.gamma > 0:
            eps = gamma_noise(len(cls), self.synth.D, self.gamma_mode, gen).to(self.device)
        return Drawn(rows["a"], rows["d"], rows["label"], eps, at)

    def mix(self, drawn: Drawn, beta: Tensor, rows=slice(None)) -> tuple[Tensor, Tensor]:
        """(head-space rows, raw rows) of `drawn[rows]` mixed with per-class beta (C,) (Eq. 8-9)."""
        return self.mix_taken(self.take(drawn, rows), beta)

    @staticmethod
    def take(drawn: Drawn, rows) -> Drawn:
        """The items `rows` (in the order asked for) of drawn: gathered once per batch, mixed once per lane."""
        at = drawn.at[rows] if drawn.at is not None else rows
        return Drawn(drawn.a[at], drawn.d[at], drawn.labels[at], drawn.eps[at] if drawn.eps is not None else None)

    def mix_taken(self, drawn: Drawn, beta: Tensor) -> tuple[Tensor, Tensor]:
        mixed = mix_rows(drawn.a, drawn.d, beta[drawn.labels], self.gamma, self.gamma_mode, eps=drawn.eps)  # Eq. 8-9
        raw = tukey_inverse(mixed, self.lam)
        return (raw if self.space == "raw" else mixed), raw

    def sample(self, classes, per_class: int, beta: np.ndarray, epoch: int) -> tuple[Tensor, Tensor]:
        """Up to `per_class` mixed rows (head space) of each class that gets synthetic rows: the t-SNE plot."""
        classes = np.asarray([c for c in classes if self.need[c] > 0], np.int64)
        n = np.minimum(self.need[classes], per_class)
        cls = np.repeat(classes, n)
        items = np.concatenate([np.arange(k) for k in n]) if len(n) else np.zeros(0, np.int64)
        drawn = self.take(self.draw(cls, self.sources(cls, items, epoch), epoch, chunk=SAMPLE_CHUNK), slice(None))
        feats, _ = self.mix_taken(drawn, torch.as_tensor(beta, dtype=torch.float32, device=self.device))
        return feats, drawn.labels

    def nbytes(self) -> int:
        return self.synth.nbytes()

