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
"""
import json
from pathlib import Path

import h5py
import numpy as np

from glag.data.errors import GlagError
from glag.data.h5writer import AtomicH5Writer
from glag.data.provenance import code_version, config_json, now

SCHEMA = "glag-store/1"
DTYPES = {"float32": np.float32, "float16": np.float16}
CHUNK_ROWS = 4096


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

    def __init__(self, path, *, bank, feature_dim, dtype, meta: dict, config: dict):
        if dtype not in DTYPES:
            raise GlagError(f"--dtype {dtype!r}: choose from {sorted(DTYPES)}")
        self.path, self.D, self.dtype = Path(path), int(feature_dim), DTYPES[dtype]
        super().__init__(self.path)
        self.h5.attrs.update(schema=SCHEMA, bank_fingerprint=bank.fingerprint, config=config_json(config),
                             upstream=config_json(bank.config), created=now(), code_version=code_version(),
                             dtype=dtype, complete=False, **meta)
        rows = self.h5.create_group("rows")
        for name, tail, dt in (("a", (self.D,), self.dtype), ("d", (self.D,), self.dtype),
                               ("label", (), np.int64), ("source", (), np.int64)):
            rows.create_dataset(name, shape=(0,) + tail, maxshape=(None,) + tail, dtype=dt,
                                chunks=(CHUNK_ROWS,) + tail)
        self.offsets = [0]

    def set_supports(self, tail_classes, source, classes, weights):
        self.h5.create_dataset("tail_classes", data=np.asarray(tail_classes, np.int64))
        self.h5.create_dataset("supports/source", data=np.asarray(source, np.int64))
        self.h5.create_dataset("supports/classes", data=np.asarray(classes, np.int64))
        self.h5.create_dataset("supports/weights", data=np.asarray(weights, np.float32))

    def add_rows(self, a, d, label, source):
        """Append rows to the current epoch's block: a, d (n, D); label, source (n,)."""
        n = len(label)
        rows = self.h5["rows"]
        start = rows["label"].shape[0]
        for name, arr in (("a", a), ("d", d), ("label", label), ("source", source)):
            rows[name].resize(start + n, axis=0)
            rows[name][start:] = arr
        return start + n

    def end_epoch(self):
        self.offsets.append(self.h5["rows/label"].shape[0])

    def close(self):
        if "tail_classes" not in self.h5:
            self.abort()
            raise GlagError(f"{self.path}: store not written, supports were never set")
        self.h5.create_dataset("epoch_offsets", data=np.asarray(self.offsets, np.int64))
        self.h5.attrs["epochs"] = len(self.offsets) - 1
        self._finish()


class Store:
    """A synthetic store opened read-only; checks it belongs to `bank` when one is given."""

    def __init__(self, path, bank=None):
        self.path = Path(path)
        if not self.path.is_file():
            raise GlagError(f"{self.path}: no synthetic store there; run `glag-generate` first")
        try:
            self.h5 = h5py.File(self.path, "r", locking=False)
        except OSError:
            raise GlagError(f"{self.path}: not a readable HDF5 file; it is truncated, delete it and rerun "
                            "`glag-generate`") from None
        a = self.h5.attrs
        if a.get("schema") != SCHEMA or not a.get("complete", False):
            self.h5.close()
            raise GlagError(f"{self.path}: not a complete {SCHEMA} store (schema {a.get('schema')!r}); "
                            "rerun `glag-generate`")
        self.attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in a.items()}
        self.config = json.loads(a["config"])
        if bank is not None and self.attrs["bank_fingerprint"] != bank.fingerprint:
            self.h5.close()
            raise GlagError(f"{self.path}: made from another bank (fingerprint {self.attrs['bank_fingerprint']}, "
                            f"{bank.path} has {bank.fingerprint}); rerun `glag-generate --bank {bank.path}`")
        self.offsets = self.h5["epoch_offsets"][:]
        self.epochs = len(self.offsets) - 1
        self.tail_classes = self.h5["tail_classes"][:]

    def epoch_rows(self, epoch: int) -> dict:
        """Rows of generation epoch `epoch % epochs` as float32: a, d (n, D); label, source (n,)."""
        e = epoch % max(self.epochs, 1)
        lo, hi = int(self.offsets[e]), int(self.offsets[e + 1])
        r = self.h5["rows"]
        return {"a": r["a"][lo:hi].astype(np.float32), "d": r["d"][lo:hi].astype(np.float32),
                "label": r["label"][lo:hi], "source": r["source"][lo:hi]}

    @property
    def supports(self) -> dict:
        g = self.h5["supports"]
        return {k: g[k][:] for k in ("source", "classes", "weights")}

    def close(self):
        self.h5.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
