"""The Adaptive Feature Generator (paper Sec. 4.2), fitted on a bank.

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
  6. The gap rule gives each class its share of synthetic rows, N_max - N_k
     (optionally capped). Stage two draws the rows where its head trains
     (`glag.data.synthesis.Synthesizer`): a tail row of sample i is
     a = x_hat_i + z_own and d = b - a, b = mu_S + z_S; beta (Eq. 8-9) and the
     gamma noise are applied when stage two mixes (`glag.data.mixing.mix_rows`),
     so beta can adapt per class. A non-tail row is a draw from its class's own
     distribution, a = mu_k + z_own, with d = 0.
"""
import time

import numpy as np
import torch

from glag.data.errors import GlagError
from glag.data.names import GAMMA_MODES, MOMENTS_FROM
from glag.data.store import GeneratorArrays
from glag.data.synthesis import Synthesizer, make_generator, stream_seed
from glag.generate.neighbors import check_k, support_classes
from glag.generate.parallel import release_memory
from glag.generate.sampler import build_factors, gap_counts, sample_segments
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
    if cfg["k"] < 1:
        raise GlagError(f"--k {cfg['k']}: must be >= 1")
    if cfg["max_rows_per_class"] < 0:
        raise GlagError("--max-rows-per-class must be >= 0 (0 = no cap)")
    if cfg.get("sample_per_class", 0) < 0:
        raise GlagError(f"--sample-per-class {cfg['sample_per_class']}: must be >= 0 (0 = no sample)")


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
    """Fit class statistics, supports and factors on a bank; hand out the fitted generator.

    Args:
        cfg: the resolved config (keys as glag-generate's options: k, tukey, beta_init, gamma,
            gamma_mode, tail, tail_max_count, tail_fraction, max_rows_per_class, balance_head,
            seed, device, jobs, moments_from, sample_per_class).
    """

    def __init__(self, cfg: dict):
        check_config(cfg)
        self.cfg = cfg
        self.device = resolve_device(cfg["device"])
        self.moments = self.qr = self.supports = self._sampler = None

    def plan(self, counts):
        """(tail mask (C,), rows per class per epoch of the gap rule (C,)); needs only the train counts."""
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
            self; `self.fit_seconds` holds the seconds per step; `self.sampler` draws rows.
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
        self.qr = build_factors(self.moments, tail_classes, self.cfg["jobs"])
        release_memory()
        self._sampler = None
        self.fit_seconds = {"moments": t1 - t0, "supports": t2 - t1, "factors": time.perf_counter() - t2}
        return self

    @property
    def sampler(self) -> Synthesizer:
        """The fitted generator drawing on the CPU (the inspection sample: the same numbers on any device); built
        on first use, since it holds the class rows a second time."""
        if self._sampler is None:
            self._sampler = Synthesizer(self.arrays(), "cpu")
        return self._sampler

    def arrays(self) -> GeneratorArrays:
        """The fitted generator, as the store holds it (the class rows are the moments' own buffers)."""
        if self.qr is None:
            raise RuntimeError("call fit() before asking for the generator")
        m, sup = self.moments, self.supports
        kept = [r is not None for r in m.centred]
        return GeneratorArrays(counts=m.counts, means=m.means.float().numpy(),
                               class_rows=[r.numpy() if r is not None else None for r in m.centred],
                               class_index=[i if k else None for i, k in zip(m.index, kept)], qr=self.qr,
                               tail_classes=sup.tail_classes, sup_classes=sup.classes, sup_weights=sup.weights,
                               lam=float(m.lam))

    def sample(self, per_class: int) -> dict:
        """An inspection sample: up to `per_class` rows of every class that gets synthetic rows, drawn as
        stage two draws (one stream seeded by (seed, "sample")). Returns numpy a, d, label, source."""
        segments = sample_segments(self.need, self.tail, self.moments.counts, per_class)
        gen = make_generator(stream_seed(self.cfg["seed"], SAMPLE_STREAM), "cpu")
        rows = self.sampler.draw(segments, gen)
        return {"a": rows["a"].cpu().numpy(), "d": rows["d"].cpu().numpy(), "label": rows["label"].cpu().numpy(),
                "source": rows["source"]}


SAMPLE_STREAM = 2 ** 31 - 1     # stage two's streams are keyed by epochs and chunks, never this
