"""The feature bank `bank.h5`: stage one's output, read-only for everything after it.

Layout (DESIGN.md §3, documented in docs/formats.md):

    attrs: schema, dataset, backbone, loss, feature_dim, num_classes, config (JSON),
           created, code_version, fingerprint, complete
    classes/names (C,) str, classes/train_counts (C,) int64
    {train,val,test}/features (N, D) f32, labels (N,) i64, logits (N, C) f32, index (N,) i64
    stage1/classifier/weight (C, D), stage1/classifier/bias (C,)
    stage1 attrs: metrics (JSON)

`BankWriter` streams rows in, hashes them as they arrive and renames the temp
file onto the bank only on success. `Bank` opens read-only (many readers at
once are fine), validates structure on open and reads whole splits or chunks.
"""
import hashlib
import json
from pathlib import Path

import h5py
import numpy as np

from data.errors import GlagError
from data.h5writer import AtomicH5Writer
from data.provenance import code_version, config_json, now

SCHEMA = "glag-bank/1"
SPLITS = ("train", "val", "test")
FIELDS = ("features", "labels", "logits", "index")
CHUNK_ROWS = 4096
REQUIRED_ATTRS = ("schema", "dataset", "backbone", "loss", "feature_dim", "num_classes", "config",
                  "created", "code_version", "fingerprint")


class BankWriter(AtomicH5Writer):
    """Stream a feature bank to disk; it appears at `path` only when `close()` succeeds.

    Use as a context manager:
        with BankWriter(path, dataset=..., backbone=..., loss=..., class_names=...,
                        train_counts=..., feature_dim=D, config=cfg) as w:
            w.add_rows("train", features, labels, logits, index)   # any number of times
            w.set_head(weight, bias); w.set_metrics(metrics)
    """

    def __init__(self, path, *, dataset, backbone, loss, class_names, train_counts, feature_dim, config):
        self.path, self.D, self.C = Path(path), int(feature_dim), len(class_names)
        if len(train_counts) != self.C:
            raise GlagError(f"{path}: {len(train_counts)} train counts for {self.C} classes")
        super().__init__(self.path)
        self._hash = {}
        self.h5.attrs.update(schema=SCHEMA, dataset=dataset, backbone=backbone, loss=loss,
                             feature_dim=self.D, num_classes=self.C, config=config_json(config),
                             created=now(), code_version=code_version(), complete=False)
        names = np.asarray([str(n) for n in class_names], dtype=h5py.string_dtype())
        self.h5.create_dataset("classes/names", data=names)
        self.h5.create_dataset("classes/train_counts", data=np.asarray(train_counts, dtype=np.int64))
        self._digest("classes", names.astype(str).tobytes(), np.asarray(train_counts, np.int64).tobytes())

    def _digest(self, key, *chunks):
        h = self._hash.setdefault(key, hashlib.sha256())
        for c in chunks:
            h.update(c)

    def _split(self, split):
        if split in self.h5:
            return self.h5[split]
        g = self.h5.create_group(split)
        shapes = {"features": (self.D,), "labels": (), "logits": (self.C,), "index": ()}
        for name, dtype in zip(FIELDS, (np.float32, np.int64, np.float32, np.int64)):
            tail = shapes[name]
            g.create_dataset(name, shape=(0,) + tail, maxshape=(None,) + tail, dtype=dtype,
                             chunks=(min(CHUNK_ROWS, max(1, 2 ** 22 // (4 * max(1, *tail, 1)))),) + tail)
        return g

    def add_rows(self, split, features, labels, logits, index):
        """Append rows: features (n, D), labels (n,), logits (n, C), index (n,)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
        arrays = dict(features=np.asarray(features, np.float32), labels=np.asarray(labels, np.int64),
                      logits=np.asarray(logits, np.float32), index=np.asarray(index, np.int64))
        n = len(arrays["labels"])
        if arrays["features"].shape != (n, self.D) or arrays["logits"].shape != (n, self.C):
            raise ValueError(f"rows for {split}: features {arrays['features'].shape}, logits "
                             f"{arrays['logits'].shape}; expected ({n}, {self.D}) and ({n}, {self.C})")
        if not np.isfinite(arrays["features"]).all():
            raise GlagError(f"{self.path}: non-finite features in the {split} split; the backbone diverged "
                            "(lower the learning rate or check the input normalisation)")
        g = self._split(split)
        start = g["labels"].shape[0]
        for name, arr in arrays.items():
            g[name].resize(start + n, axis=0)
            g[name][start:] = arr
            self._digest(f"{split}/{name}", np.ascontiguousarray(arr).tobytes())

    def set_head(self, weight, bias):
        w, b = np.asarray(weight, np.float32), np.asarray(bias, np.float32)
        if w.shape != (self.C, self.D) or b.shape != (self.C,):
            raise ValueError(f"head shapes {w.shape}, {b.shape}; expected ({self.C}, {self.D}), ({self.C},)")
        self.h5.create_dataset("stage1/classifier/weight", data=w)
        self.h5.create_dataset("stage1/classifier/bias", data=b)
        self._digest("head", w.tobytes(), b.tobytes())

    def set_metrics(self, metrics: dict):
        self.h5.require_group("stage1").attrs["metrics"] = json.dumps(metrics, sort_keys=True)

    def close(self):
        missing = [s for s in ("train", "test") if s not in self.h5] + \
                  ([] if "stage1/classifier/weight" in self.h5 else ["stage1/classifier"])
        if missing:
            self.abort()
            raise GlagError(f"{self.path}: bank not written, missing {missing}")
        total = hashlib.sha256()
        for key in sorted(self._hash):
            total.update(key.encode() + self._hash[key].digest())
        self.h5.attrs["fingerprint"] = total.hexdigest()[:32]
        self._finish()


class Bank:
    """A feature bank opened read-only.

    Attributes: path, fingerprint, config (dict), dataset, backbone, loss,
    class_names (list), train_counts (C,), num_classes, feature_dim, splits.
    """

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            raise GlagError(f"{self.path}: no feature bank there; run `make features` (glag-extract) first")
        try:
            self.h5 = h5py.File(self.path, "r", locking=False)
        except OSError as e:
            raise GlagError(f"{self.path}: not a readable HDF5 file ({e.__class__.__name__}); "
                            "it is truncated or not a bank, delete it and rerun `make features`") from None
        self._validate()
        a = self.h5.attrs
        self.fingerprint, self.config = str(a["fingerprint"]), json.loads(a["config"])
        self.dataset, self.backbone, self.loss = str(a["dataset"]), str(a["backbone"]), str(a["loss"])
        self.num_classes, self.feature_dim = int(a["num_classes"]), int(a["feature_dim"])
        self.class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in self.h5["classes/names"][:]]
        self.train_counts = self.h5["classes/train_counts"][:]
        self.splits = tuple(s for s in SPLITS if s in self.h5)

    def _validate(self):
        a = self.h5.attrs
        schema = a.get("schema")
        if schema != SCHEMA:
            self.h5.close()
            raise GlagError(f"{self.path}: schema {schema!r}, this GLAG reads {SCHEMA!r}; "
                            "rebuild the bank with this version's `make features`")
        missing = [k for k in REQUIRED_ATTRS if k not in a]
        if missing or not a.get("complete", False):
            self.h5.close()
            raise GlagError(f"{self.path}: incomplete bank (missing {missing or 'completion mark'}); "
                            "delete it and rerun `make features`")
        C, D = int(a["num_classes"]), int(a["feature_dim"])
        for split in (s for s in SPLITS if s in self.h5):
            g = self.h5[split]
            n = g["labels"].shape[0]
            shapes = {"features": (n, D), "labels": (n,), "logits": (n, C), "index": (n,)}
            bad = [f for f, shp in shapes.items() if f not in g or g[f].shape != shp]
            if bad:
                self.h5.close()
                raise GlagError(f"{self.path}: {split}/{bad} have wrong shapes; the bank is damaged, rebuild it")

    def rows(self, split) -> int:
        return self.h5[self._need(split)]["labels"].shape[0]

    def _need(self, split):
        if split not in self.splits:
            raise GlagError(f"{self.path}: no {split!r} split in this bank (it has {list(self.splits)})")
        return split

    def load(self, split, fields=("features", "labels")) -> dict:
        """Whole split in memory: {field: array}."""
        g = self.h5[self._need(split)]
        return {f: g[f][:] for f in fields}

    def iter_chunks(self, split, fields=("features", "labels"), chunk_rows=CHUNK_ROWS):
        """Yield (start, {field: array}) over a split, `chunk_rows` rows at a time."""
        g, n = self.h5[self._need(split)], self.rows(split)
        for start in range(0, n, chunk_rows):
            yield start, {f: g[f][start:start + chunk_rows] for f in fields}

    @property
    def head(self):
        """Stage-one classifier: weight (C, D), bias (C,)."""
        return self.h5["stage1/classifier/weight"][:], self.h5["stage1/classifier/bias"][:]

    @property
    def metrics(self) -> dict:
        g = self.h5.get("stage1")
        return json.loads(g.attrs["metrics"]) if g is not None and "metrics" in g.attrs else {}

    def close(self):
        self.h5.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def read_bank(path) -> Bank:
    return Bank(path)


def find_banks(runs_root="runs"):
    """All bank files under runs/<dataset>/...; used when a CLI was given no --bank."""
    root = Path(runs_root)
    return sorted(root.glob("*/bank.h5")) + sorted(root.glob("*/*/bank.h5")) if root.is_dir() else []
