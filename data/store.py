"""The synthetic store: AFG's output, read by stage two.

Each synthetic row keeps the two halves of a calibrated sample (DESIGN.md §3),
in the feature space named by the `feature_space` attr (Tukey-transformed by default):

    a = x_hat_i + z_own,        z_own ~ N(0, Sigma_{y_i})
    d = b - a,  b = mu_S + z_S, z_S ~ N(0, sum_j w_j Sigma_j / sum_j w_j)

so that stage two can rebuild `s = a + beta_k * d + sqrt(gamma) * eps` with any
per-class beta at any epoch, without regenerating. Rows are grouped by
generation epoch (`epoch_offsets`), so epoch e of stage two reads one block.

Layout:
    attrs: schema, bank_fingerprint, config (JSON), upstream (bank config JSON), created,
           code_version, feature_space, tukey_lambda, beta_init, gamma, gamma_mode, k,
           seed, dtype, epochs, complete
    tail_classes (T,) i64
    supports/source (S,) i64 train row of each tail sample; supports/classes (S, K) i64
    (-1 pads a tail class with fewer than K larger classes); supports/weights (S, K) f32
    (Eq. 10, unnormalised; 0 for padding)
    rows/a (R, D), rows/d (R, D) in `dtype`; rows/label (R,) i64; rows/source (R,) i64: the
    bank train row the sample was drawn around, -1 for rows from a class's own distribution
    epoch_offsets (E + 1,) i64: rows of epoch e are [offsets[e], offsets[e+1])
    attr fingerprint: SHA-256 of every array as written (like the bank's; stores from before it lack it)

Every dataset carries Fletcher-32 checksums; a read that fails them is a one-line GlagError.
"""
import json
from pathlib import Path

import h5py
import numpy as np

from glag.data.errors import GlagError, open_error, read_error
from glag.data.h5writer import CHECKSUM, AtomicH5Writer, checked, fingerprint
from glag.data.provenance import code_version, config_json, now

SCHEMA = "glag-store/1"
DTYPES = {"float32": np.float32, "float16": np.float16}
CHUNK_ROWS = 4096
ROW_FIELDS = ("a", "d", "label", "source")
SUPPORT_FIELDS = ("source", "classes", "weights")
REGENERATE = "rerun `glag-generate --force`"


def store_bytes(rows: int, feature_dim: int, dtype: str) -> int:
    """Bytes the row arrays will take: a and d, plus label and source."""
    return rows * (2 * feature_dim * np.dtype(DTYPES[dtype]).itemsize + 16)


class StoreWriter(AtomicH5Writer):
    """Stream a synthetic store; it appears at `path` only on success.

    with StoreWriter(path, bank=bank, feature_dim=D, dtype="float32", meta={...}, config=cfg) as w:
        w.set_supports(tail_classes, source, classes, weights)
        for e in range(E):
            w.add_rows(a, d, label, source)   # any number of times
            w.end_epoch()
    `meta` holds the attrs that describe the generation (feature_space, tukey_lambda,
    beta_init, gamma, gamma_mode, k, seed; generate adds tail_rule, balance_head,
    max_rows_per_class, rows_per_epoch).
    """

    def __init__(self, path, *, bank, feature_dim, dtype, meta: dict, config: dict, need_bytes=None):
        if dtype not in DTYPES:
            raise GlagError(f"--dtype {dtype!r}: choose from {sorted(DTYPES)}")
        self.path, self.D, self.dtype = Path(path), int(feature_dim), DTYPES[dtype]
        super().__init__(self.path, need_bytes)
        self.h5.attrs.update(schema=SCHEMA, bank_fingerprint=bank.fingerprint, config=config_json(config),
                             upstream=config_json(bank.config), created=now(), code_version=code_version(),
                             dtype=dtype, complete=False, **meta)
        rows = self.h5.create_group("rows")
        for name, tail, dt in (("a", (self.D,), self.dtype), ("d", (self.D,), self.dtype),
                               ("label", (), np.int64), ("source", (), np.int64)):
            rows.create_dataset(name, shape=(0,) + tail, maxshape=(None,) + tail, dtype=dt,
                                chunks=(CHUNK_ROWS,) + tail, **CHECKSUM)
        self.offsets = [0]

    def _write(self, name, arr):
        """A whole dataset, hashed as stored."""
        self.h5.create_dataset(name, data=arr, **CHECKSUM)
        self._digest(name, arr.tobytes())

    @checked
    def set_supports(self, tail_classes, source, classes, weights):
        self._write("tail_classes", np.ascontiguousarray(tail_classes, np.int64))
        for name, arr, dt in zip(SUPPORT_FIELDS, (source, classes, weights), (np.int64, np.int64, np.float32)):
            self._write(f"supports/{name}", np.ascontiguousarray(arr, dt))

    @checked
    def add_rows(self, a, d, label, source):
        """Append rows to the current epoch's block: a, d (n, D); label, source (n,)."""
        n = len(label)
        rows = self.h5["rows"]
        start = rows["label"].shape[0]
        for name, arr in zip(ROW_FIELDS, (a, d, label, source)):
            arr = np.ascontiguousarray(arr, rows[name].dtype)     # the stored type is what the fingerprint sees
            rows[name].resize(start + n, axis=0)
            rows[name][start:] = arr
            self._digest(f"rows/{name}", arr.tobytes())
        return start + n

    def end_epoch(self):
        self.offsets.append(self.h5["rows/label"].shape[0])

    @checked
    def close(self):
        if "tail_classes" not in self.h5:
            self.abort()
            raise GlagError(f"{self.path}: store not written, supports were never set")
        self._write("epoch_offsets", np.asarray(self.offsets, np.int64))
        self.h5.attrs["epochs"] = len(self.offsets) - 1
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
        if a.get("schema") != SCHEMA or not a.get("complete", False):
            raise GlagError(f"{self.path}: not a complete {SCHEMA} store (schema {a.get('schema')!r}); "
                            "rerun `glag-generate`")
        self.attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in a.items()}
        self.config = json.loads(a["config"])
        if bank is not None and self.attrs["bank_fingerprint"] != bank.fingerprint:
            raise GlagError(f"{self.path}: made from another bank (fingerprint {self.attrs['bank_fingerprint']}, "
                            f"{bank.path} has {bank.fingerprint}); rerun `glag-generate --bank {bank.path}`")
        self._check_layout()
        self.offsets = self.read("epoch_offsets")
        self.epochs = len(self.offsets) - 1
        rows, o = self.h5["rows/label"].shape[0], self.offsets
        if not len(o) or o[0] != 0 or o[-1] != rows or (np.diff(o) < 0).any():
            raise GlagError(f"{self.path}: epoch_offsets {o.tolist()[:6]} do not cover its {rows} rows in order; "
                            f"the store is damaged: {REGENERATE}")
        self.tail_classes = self.read("tail_classes")

    def _check_layout(self):
        """Every dataset there and of a consistent shape; names the first that is not."""
        names = [f"rows/{f}" for f in ROW_FIELDS] + [f"supports/{f}" for f in SUPPORT_FIELDS] + \
            ["tail_classes", "epoch_offsets"]
        missing = [n for n in names if n not in self.h5 or not isinstance(self.h5[n], h5py.Dataset)]
        if missing:
            raise GlagError(f"{self.path}: dataset {', '.join(missing)} missing inside the store; the file was "
                            f"damaged after it was written: {REGENERATE}")
        R, D = self.h5["rows/label"].shape[0], self.h5["rows/a"].shape[-1]
        S, K = self.h5["supports/source"].shape[0], self.h5["supports/classes"].shape[-1]
        want = {"rows/a": (R, D), "rows/d": (R, D), "rows/source": (R,), "supports/classes": (S, K),
                "supports/weights": (S, K)}
        for name, shape in want.items():
            if self.h5[name].shape != shape:
                raise GlagError(f"{self.path}: {name} has shape {self.h5[name].shape}, expected {shape}; "
                                f"the store is damaged: {REGENERATE}")

    def read(self, name: str, selection=()):
        """`self.h5[name][selection]`; a failed read (checksum mismatch, I/O error) is a one-line GlagError."""
        try:
            return self.h5[name][selection]
        except OSError as e:
            raise read_error(self.path, name, e, REGENERATE) from None

    def epoch_rows(self, epoch: int) -> dict:
        """Rows of generation epoch `epoch % epochs` as float32: a, d (n, D); label, source (n,)."""
        e = epoch % max(self.epochs, 1)
        rows = slice(int(self.offsets[e]), int(self.offsets[e + 1]))
        out = {f: self.read(f"rows/{f}", rows) for f in ROW_FIELDS}
        out["a"], out["d"] = out["a"].astype(np.float32), out["d"].astype(np.float32)
        return out

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
