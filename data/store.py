"""The synthetic store: the fitted Adaptive Feature Generator, written by glag-generate, read by stage two.

A store holds the generator, not its rows (docs/afg.md, "The synthetic store"): class
means, the thin covariance factors, the tail set and every tail sample's supports and
weights (Eq. 7, 10). Stage two draws each epoch's rows from it on its own device
(`glag.data.synthesis.Synthesizer`), so the store's size is about the bank's train
features (the centred rows are the factors) however many epochs, classes or gap rows a
run draws. Beta and gamma are applied at mixing time (`s = a + beta d + sqrt(gamma) eps`),
so one store serves every beta, gamma and seed, by many runs at once.

Layout (schema glag-store/2):
    attrs: schema, bank_fingerprint, config (JSON), upstream (bank config JSON), created, code_version,
           feature_space ("tukey"), tukey_lambda, beta_init, gamma, gamma_mode, k, seed, tail_rule,
           balance_head, max_rows_per_class, rows_per_epoch, dtype, complete, fingerprint
    classes/counts (C,) i64   N_k of the moments;  classes/need (C,) i64   gap-rule rows per class (N_max - N_k,
                                                   capped; 0 for classes that get none)
    classes/means (C, D) f32  mu_k (Eq. 5) in the Tukey space
    factors/rows (R, D) dtype, factors/row_offsets (C + 1,) i64, factors/row_index (R,) i64
    factors/qr (Q, D, D) dtype, factors/qr_classes (Q,) i64
    tail_classes (T,) i64
    supports/source (S,) i64 bank train row of each tail sample; supports/classes (S, K) i64 (-1 = none);
    supports/weights (S, K) f32 (Eq. 10, unnormalised; 0 for padding)
    sample/a, sample/d (n, D) f32, sample/label, sample/source (n,) i64   optional: rows drawn for inspection
    (glag-generate --sample-per-class), exactly as stage two draws them

glag-store/1 (every generation epoch's rows) is refused with the command that rebuilds the store.
Every dataset carries Fletcher-32 checksums and is hashed into the fingerprint by its name.
"""
import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from glag.data.errors import GlagError, open_error, read_error
from glag.data.h5writer import CHECKSUM, AtomicH5Writer, check_attrs, checked, fingerprint
from glag.data.names import STORE_DTYPES
from glag.data.validate import check_finite
from glag.data.provenance import code_version, config_json, now

SCHEMA = "glag-store/2"
OLD_SCHEMAS = ("glag-store/1",)
DTYPES = {name: np.dtype(name).type for name in STORE_DTYPES}      # glag-generate --dtype
SUPPORT_FIELDS = ("source", "classes", "weights")
SAMPLE_FIELDS = ("a", "d", "label", "source")
REGENERATE = "rerun `glag-generate --force`"


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


TABLES = {  # GeneratorArrays field: (dataset, stored type); the factors are written by _write_factors
    "counts": ("classes/counts", np.int64), "means": ("classes/means", np.float32),
    "tail_classes": ("tail_classes", np.int64), "sup_classes": ("supports/classes", np.int64),
    "sup_weights": ("supports/weights", np.float32),
}
FACTORS = ("factors/rows", "factors/row_offsets", "factors/row_index", "factors/qr", "factors/qr_classes")
BLOCK_BYTES = 2 ** 26            # rows are written in blocks of about 64 MB


def plan_bytes(counts, tail, feature_dim: int, k: int, dtype: str, sample_rows: int = 0) -> int:
    """The store's size from the train counts: kept rows (classes with N_k <= D and tail classes), QR
    factors (N_k > D), means, supports of the tail samples, and the inspection sample."""
    counts, tail = np.asarray(counts, np.int64), np.asarray(tail, bool)
    D, size = int(feature_dim), np.dtype(DTYPES[dtype]).itemsize
    kept = int(counts[(counts <= D) | tail].sum())
    return int(kept * (D * size + 8) + (counts > D).sum() * D * D * size + len(counts) * D * 4
               + counts[tail].sum() * (12 * k + 8) + sample_rows * (8 * D + 16))


class StoreWriter(AtomicH5Writer):
    """Write a fitted generator as a synthetic store; it appears at `path` only on success.

    with StoreWriter(path, bank=bank, dtype="float32", meta={...}, config=cfg) as w:
        w.set_generator(arrays, need, source)     # GeneratorArrays, (C,) need, (S,) tail-sample bank rows
        w.set_sample(rows)                         # optional
    `meta` holds the attrs that describe the generation (feature_space, tukey_lambda, beta_init,
    gamma, gamma_mode, k, seed, tail_rule, balance_head, max_rows_per_class, rows_per_epoch).
    """

    def __init__(self, path, *, bank, dtype, meta: dict, config: dict, need_bytes=None):
        if dtype not in DTYPES:
            raise GlagError(f"--dtype {dtype!r}: choose from {sorted(DTYPES)}")
        self.path, self.dtype = Path(path), DTYPES[dtype]
        super().__init__(self.path, need_bytes)
        self.h5.attrs.update(schema=SCHEMA, bank_fingerprint=bank.fingerprint, config=config_json(config),
                             upstream=config_json(bank.config), created=now(), code_version=code_version(),
                             dtype=dtype, complete=False, **meta)

    def _write(self, name, arr, dtype=None):
        """A whole dataset, in its stored type, hashed as stored."""
        arr = np.ascontiguousarray(arr, dtype or self.dtype)
        self.h5.create_dataset(name, data=arr, **CHECKSUM)
        self._digest(name, arr.tobytes())

    @checked
    def set_generator(self, arrays: GeneratorArrays, need, source):
        """The fitted generator; need (C,) gap rows per class, source (S,) bank row of each tail sample."""
        for field, (name, dtype) in TABLES.items():
            self._write(name, getattr(arrays, field), dtype)
        self._write_factors(arrays)
        self._write("classes/need", need, np.int64)
        self._write("supports/source", source, np.int64)
        self.h5.attrs["tukey_lambda"] = float(arrays.lam)

    def _write_factors(self, arrays: GeneratorArrays):
        """Kept centred rows, class after class, in blocks (never one copy of them all), and the QR factors."""
        C, D = len(arrays.counts), arrays.feature_dim
        sizes = np.array([0 if r is None else len(r) for r in arrays.class_rows], np.int64)
        rows = self.h5.create_dataset("factors/rows", shape=(int(sizes.sum()), D), dtype=self.dtype,
                                      chunks=(max(1, min(int(sizes.sum()), 2 ** 20 // D)), D) if sizes.sum() else None,
                                      **CHECKSUM)
        block, at, limit = [], 0, max(1, BLOCK_BYTES // (4 * D))
        for k in range(C + 1):
            if k == C or (block and sum(map(len, block)) + sizes[k] > limit):
                if block:
                    arr = np.ascontiguousarray(np.concatenate([np.asarray(b) for b in block]), self.dtype)
                    rows[at:at + len(arr)] = arr
                    self._digest("factors/rows", arr.tobytes())
                    at, block = at + len(arr), []
            if k < C and sizes[k]:
                block.append(arrays.class_rows[k])
        self._write("factors/row_offsets", np.r_[0, np.cumsum(sizes)], np.int64)
        index = [np.asarray(i, np.int64) for i in arrays.class_index if i is not None]
        self._write("factors/row_index", np.concatenate(index) if index else np.zeros(0), np.int64)
        qr_classes = sorted(arrays.qr)
        qr = np.stack([np.asarray(arrays.qr[k]) for k in qr_classes]) if qr_classes else np.zeros((0, D, D))
        self._write("factors/qr", qr)
        self._write("factors/qr_classes", np.asarray(qr_classes, np.int64), np.int64)

    @checked
    def set_sample(self, rows: dict):
        """Rows drawn for inspection: a, d (n, D), label, source (n,)."""
        for name in SAMPLE_FIELDS:
            dtype = np.float32 if name in ("a", "d") else np.int64
            self._write(f"sample/{name}", np.asarray(rows[name]), dtype)

    def close(self):
        if "classes/means" not in self.h5:
            self.abort()
            raise GlagError(f"{self.path}: store not written, the generator was never set")
        self.h5.attrs["fingerprint"] = fingerprint(self._hash)
        self._finish()


class Store:
    """A synthetic store opened read-only; checks it belongs to `bank` when one is given."""

    def __init__(self, path, bank=None):
        self.path = Path(path)
        if not self.path.is_file():
            raise GlagError(f"{self.path}: no synthetic store there; run `glag-generate` first")
        try:
            self.h5 = h5py.File(self.path, "r", locking=False)
        except OSError as e:
            raise open_error(self.path, e, "synthetic store", "rerun `glag-generate`") from None
        try:
            self._load(bank)
        except BaseException:
            self.h5.close()
            raise

    def _load(self, bank):
        a = self.h5.attrs
        rebuild = f"glag-generate --bank {bank.path} --force" if bank is not None else "glag-generate --force"
        if a.get("schema") in OLD_SCHEMAS:
            raise GlagError(f"{self.path}: a store of the old format ({a.get('schema')}: every epoch's rows); this "
                            f"GLAG stores the generator instead: rebuild it with `{rebuild}`")
        if a.get("schema") != SCHEMA or not a.get("complete", False):
            raise GlagError(f"{self.path}: not a complete {SCHEMA} store (schema {a.get('schema')!r}); "
                            f"rebuild it with `{rebuild}`")
        check_attrs(self.h5, self.path, REGENERATE)
        self.attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in a.items()}
        self.config = json.loads(a["config"])
        if bank is not None and self.attrs["bank_fingerprint"] != bank.fingerprint:
            raise GlagError(f"{self.path}: made from another bank (fingerprint {self.attrs['bank_fingerprint']}, "
                            f"{bank.path} has {bank.fingerprint}); rerun `glag-generate --bank {bank.path}`")
        self._check_layout(bank)
        self.tail_classes = self.read("tail_classes")
        self.need = self.read("classes/need")
        self.counts = self.read("classes/counts")

    def dataset_names(self) -> list:
        """Every dataset of the store, as StoreWriter hashed them (glag-verify re-hashes these)."""
        names = []
        self.h5.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        return sorted(names)

    def _check_layout(self, bank):
        """Every dataset there and of a consistent shape (and the bank's C and D); names the first that is not."""
        names = [name for name, _ in TABLES.values()] + list(FACTORS) + ["classes/need", "supports/source"]
        missing = [n for n in names if n not in self.h5 or not isinstance(self.h5[n], h5py.Dataset)]
        if missing:
            raise GlagError(f"{self.path}: dataset {', '.join(missing)} missing inside the store; the file was "
                            f"damaged after it was written: {REGENERATE}")
        C, D = self.h5["classes/means"].shape
        R, S, K = self.h5["factors/row_index"].shape[0], *self.h5["supports/classes"].shape
        Q = self.h5["factors/qr_classes"].shape[0]
        want = {"classes/counts": (C,), "classes/need": (C,), "factors/rows": (R, D), "factors/row_offsets": (C + 1,),
                "factors/qr": (Q, D, D), "supports/source": (S,), "supports/weights": (S, K)}
        for name, shape in want.items():
            if self.h5[name].shape != shape:
                raise GlagError(f"{self.path}: {name} has shape {self.h5[name].shape}, expected {shape}; "
                                f"the store is damaged: {REGENERATE}")
        if bank is not None and (C, D) != (bank.num_classes, bank.feature_dim):
            raise GlagError(f"{self.path}: its generator has {C} classes x {D} features, {bank.path} has "
                            f"{bank.num_classes} x {bank.feature_dim}; rerun `glag-generate --bank {bank.path}`")

    def read(self, name: str, selection=()):
        """`self.h5[name][selection]`; a failed read (checksum mismatch, I/O error) and NaN/Inf in float data
        (which the chunk checksums can miss) are one-line GlagErrors."""
        try:
            out = self.h5[name][selection]
        except OSError as e:
            raise read_error(self.path, name, e, REGENERATE) from None
        check_finite(out, self.path, name, selection)
        return out

    def generator(self) -> GeneratorArrays:
        """The fitted generator, every array read once in its stored type (class rows are views of one array)."""
        tables = {field: self.read(name) for field, (name, _) in TABLES.items()}
        offsets, index = self.read("factors/row_offsets"), self.read("factors/row_index")
        if offsets[0] != 0 or offsets[-1] != len(index) or (np.diff(offsets) < 0).any():
            raise GlagError(f"{self.path}: factors/row_offsets do not cover its {len(index)} rows in order; the store "
                            f"is damaged: {REGENERATE}")
        rows = self.read("factors/rows")
        spans = list(zip(offsets[:-1], offsets[1:]))
        qr = dict(zip(self.read("factors/qr_classes").tolist(), self.read("factors/qr")))
        return GeneratorArrays(class_rows=[rows[s:e] if e > s else None for s, e in spans],
                               class_index=[index[s:e] if e > s else None for s, e in spans], qr=qr,
                               lam=float(self.attrs["tukey_lambda"]), **tables)

    def generator_bytes(self) -> int:
        """Bytes the generator's arrays take in memory as stored."""
        names = [name for name, _ in TABLES.values()] + list(FACTORS)
        return sum(self.h5[name].size * self.h5[name].dtype.itemsize for name in names)

    def sample(self) -> dict | None:
        """The inspection rows (glag-generate --sample-per-class), or None."""
        if "sample" not in self.h5:
            return None
        return {f: self.read(f"sample/{f}") for f in SAMPLE_FIELDS}

    @property
    def supports(self) -> dict:
        return {k: self.read(f"supports/{k}") for k in SUPPORT_FIELDS}

    def close(self):
        self.h5.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
