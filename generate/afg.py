"""The Adaptive Feature Generator (paper §4.2), orchestrated.

Order of steps (fixed here because the paper leaves parts implicit):
  1. Tukey's ladder of powers on every train feature of every class,
     x_hat = x ** lambda, before any statistic: means, covariances, distances
     and samples all live in the transformed space (support classes' moments
     must be in the space of the tail samples they calibrate).
  2. Class moments (Eq. 5, 6) from the transformed rows, streamed from the bank:
     means accumulated in float64, covariances kept implicit as centred rows.
  3. Tail classes by the tail rule (default N_k <= 100: medium + few).
  4. For every tail sample, its support set (Eq. 7) among classes with
     strictly more training samples, and weights w_j = N_j / d_ij (Eq. 10).
  5. A thin factor of every class covariance (`sampler.build_factors`).
  6. Per generation epoch, the gap rule gives each class N_max - N_k rows
     (optionally capped). A tail row of sample i stores a = x_hat_i + z_own and
     d = b - a, b = mu_S + z_S; beta (Eq. 8-9) and the gamma noise are applied
     by stage two (`glag.data.mixing.mix_rows`), so beta can adapt per class without
     regenerating. A non-tail row is a draw from its class's own distribution,
     a = mu_k + z_own, with d = 0.
"""
import time

import numpy as np
import torch

from glag.data.errors import GlagError
from glag.data.mixing import GAMMA_MODES
from glag.generate.neighbors import check_k, support_classes
from glag.generate.parallel import ordered_map, release_memory
from glag.generate.sampler import CalibratedSampler, build_factors, epoch_segments, gap_counts
from glag.generate.stats import class_moments
from glag.generate.tail import tail_mask


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when present, else cpu; anything else as torch names it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise GlagError(f"--device {name!r}: not a torch device (use auto, cpu, cuda, cuda:1)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise GlagError(f"--device {name}: CUDA is not available here; use --device auto or cpu")
    return dev


def stream_seed(seed: int, epoch: int, batch: int) -> int:
    """An independent, reproducible random stream per (seed, epoch, batch)."""
    return int(np.random.SeedSequence([seed, epoch, batch]).generate_state(1, np.uint64)[0] >> 1)


def check_config(cfg: dict):
    """Reject values the method cannot take, naming the option."""
    if not 0.0 <= cfg["beta_init"] <= 1.0:
        raise GlagError(f"--beta-init {cfg['beta_init']}: the confidence beta must be in [0, 1]")
    if cfg["gamma"] < 0:
        raise GlagError(f"--gamma {cfg['gamma']}: the dispersion must be >= 0")
    if cfg["gamma_mode"] not in GAMMA_MODES:
        raise GlagError(f"--gamma-mode {cfg['gamma_mode']!r}: choose from {list(GAMMA_MODES)}")
    if cfg["tukey"] < 0:
        raise GlagError(f"--tukey {cfg['tukey']}: lambda must be >= 0 (1 = no transform, 0 = log)")
    for key in ("epochs", "k"):
        if cfg[key] < 1:
            raise GlagError(f"--{key} {cfg[key]}: must be >= 1")
    if cfg["max_rows_per_class"] < 0 or cfg["batch_rows"] < 0:
        raise GlagError("--max-rows-per-class and --batch-rows must be >= 0 (0 = no cap / automatic)")


MOMENTS_FROM = ("base", "views")


def train_chunks(bank, moments_from: str):
    """(chunks, counts) the class moments are taken from: the un-augmented train rows ("base"), or those
    and every augmented view of them pooled ("views"; row i of view v is numbered (v + 1) N + i)."""
    if moments_from == "base":
        return bank.iter_chunks("train"), bank.train_counts
    if moments_from != "views":
        raise GlagError(f"--moments-from {moments_from!r}: choose from {list(MOMENTS_FROM)}")
    V, n = getattr(bank, "views", 0), int(np.asarray(bank.train_counts).sum())
    if not V:
        raise GlagError(f"--moments-from views: {bank.path} has no augmented views; add them with "
                        f"`glag-extract --dump-only --views V --out {bank.path}`, or use --moments-from base")

    def chained():
        yield from bank.iter_chunks("train")
        for v in range(V):
            for start, chunk in bank.iter_view_chunks(v):
                yield (v + 1) * n + start, chunk
    return chained(), np.asarray(bank.train_counts) * (V + 1)


class AdaptiveFeatureGenerator:
    """Fit class statistics and supports on a bank, then draw the store's rows epoch by epoch.

    Args:
        cfg: the resolved config (keys as glag-generate's options: k, tukey, beta_init,
            gamma, gamma_mode, tail, tail_max_count, tail_fraction, max_rows_per_class,
            balance_head, seed, device, jobs, batch_rows, epochs).
    """

    def __init__(self, cfg: dict):
        check_config(cfg)
        self.cfg = cfg
        self.device = resolve_device(cfg["device"])
        self.moments = self.factors = self.supports = None

    def plan(self, counts):
        """(tail mask (C,), rows per class per epoch (C,)); needs only the train counts."""
        counts = np.asarray(counts, np.int64)
        # No tail class (e.g. every class has > 100 images): with head balancing there is still
        # work, and calibrating well-sampled classes towards others measurably hurts, so none is.
        tail = tail_mask(counts, self.cfg["tail"], self.cfg, allow_empty=self.cfg["balance_head"])
        if tail.any():
            check_k(counts, np.flatnonzero(tail), self.cfg["k"])
        need = gap_counts(counts, tail, self.cfg["max_rows_per_class"], self.cfg["balance_head"])
        return tail, need

    def fit(self, bank, progress=None, log=None):
        """Steps 1-5 on `bank` (anything with train_counts, path and iter_chunks('train')).

        Args:
            progress: optional callable(rows_done) during the streaming pass.
            log: optional callable(message) at the start of each later step.
        Returns:
            self; `self.fit_seconds` holds the seconds per step.
        """
        say = log or (lambda message: None)
        t0 = time.perf_counter()
        self.tail, self.need = self.plan(bank.train_counts)
        chunks, counts = train_chunks(bank, self.cfg.get("moments_from", "base"))
        self.moments = class_moments(chunks, counts, self.cfg["tukey"], where=str(bank.path), n_jobs=self.cfg["jobs"],
                                     progress=progress)
        n = int(np.asarray(bank.train_counts).sum())                   # the train rows
        self.moments.index = [i % n for i in self.moments.index]      # a view's row stands for its train row
        t1 = time.perf_counter()
        tail_classes = np.flatnonzero(self.tail)
        say(f"supports: {int(self.moments.counts[tail_classes].sum()):,} tail samples, K = {self.cfg['k']}")
        self.supports = support_classes(self.moments, tail_classes, self.cfg["k"], self.device,
                                        n_jobs=self.cfg["jobs"])
        release_memory()
        t2 = time.perf_counter()
        say(f"factors: {int((self.moments.counts > self.moments.feature_dim).sum())} classes need a QR")
        self.factors = build_factors(self.moments, tail_classes, self.device, self.cfg["jobs"])
        release_memory()
        self.sampler = CalibratedSampler(self.moments, self.factors, self.supports, self.device)
        self.fit_seconds = {"moments": t1 - t0, "supports": t2 - t1, "factors": time.perf_counter() - t2}
        return self

    @property
    def batch_rows(self) -> int:
        """Rows per batch: --batch-rows, or about 64 MB of buffers (a, b, d and K support draws)."""
        return self.cfg["batch_rows"] or max(256, 2 ** 26 // (4 * self.moments.feature_dim * (self.cfg["k"] + 3)))

    def batches(self, epoch: int):
        """Yield the rows of generation epoch `epoch` (0-based) as dicts of numpy arrays:
        a, d (n, D) float32; label, source (n,) int64 (source -1: class-distribution row).

        Batch b draws from its own stream seeded by (seed, epoch, b), so the rows do
        not depend on --jobs or the device.
        """
        if self.factors is None:
            raise RuntimeError("call fit() before drawing rows")
        plan = enumerate(epoch_segments(self.need, self.tail, self.moments.counts, epoch, self.batch_rows))

        def draw(item):
            b, segments = item
            gen = torch.Generator().manual_seed(stream_seed(self.cfg["seed"], epoch, b))
            rows = self.sampler.batch(segments, gen)
            release_memory()                           # the batch's temporaries, not kept by the heap
            return rows

        jobs = 1 if self.device.type != "cpu" else self.cfg["jobs"]
        yield from ordered_map(draw, plan, jobs)
