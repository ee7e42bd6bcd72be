"""The feature bank `bank.h5`: stage one's output, read-only for everything after it.

Layout (DESIGN.md §3, documented in docs/formats.md):

    attrs: schema, dataset, backbone, loss, feature_dim, num_classes, config (JSON),
           created, code_version, fingerprint, complete
    classes/names (C,) str, classes/train_counts (C,) int64
    {train,val,test}/features (N, D) f32, labels (N,) i64, logits (N, C) f32, index (N,) i64
    stage1/classifier/weight (C, D), stage1/classifier/bias (C,)
    stage1 attrs: metrics (JSON)
    train_views/features (V, N_train, D), train_views/logits (V, N_train, C) (optional),
        float16 or float32; attrs views (V), dtype   [schema 2 only, optional]

`BankWriter` streams rows in, hashes them as they arrive and renames the temp
file onto the bank only on success; every numeric dataset carries Fletcher-32
checksums (banks from before them still open). `Bank` opens read-only (many
readers at once are fine), validates structure on open (`glag.data.validate`
checks the numbers, `glag.data.verify` the fingerprint) and reads whole splits
or chunks; a read that fails its checksum is a one-line GlagError.
Schema 2 added the augmented views of the train split; a schema-1 file is a
schema-2 file without views, so `Bank` reads both.
"""
import json
from pathlib import Path

import h5py
import numpy as np

from glag.data.errors import GlagError, open_error, read_error
from glag.data.h5writer import CHECKSUM, AtomicH5Writer, check_attrs, checked, fingerprint
from glag.data.provenance import code_version, config_json, now
from glag.data.validate import check_finite

SCHEMA = "glag-bank/2"
READABLE = ("glag-bank/1", SCHEMA)   # schema 1 = the same layout without train_views
SPLITS = ("train", "val", "test")
FIELDS = ("features", "labels", "logits", "index")
CHUNK_ROWS = 4096
VIEWS = "train_views"
VIEW_FIELDS = ("features", "logits")
VIEW_DTYPES = ("float16", "float32")
REQUIRED_ATTRS = ("schema", "dataset", "backbone", "loss", "feature_dim", "num_classes", "config",
                  "created", "code_version", "fingerprint")
REQUIRED_SPLITS = ("train", "test")
REBUILD = "rebuild it with `make features`"


class BankWriter(AtomicH5Writer):
    """Stream a feature bank to disk; it appears at `path` only when `close()` succeeds.

    Use as a context manager:
        with BankWriter(path, dataset=..., backbone=..., loss=..., class_names=...,
                        train_counts=..., feature_dim=D, config=cfg) as w:
            w.add_rows("train", features, labels, logits, index)   # any number of times
            w.set_head(weight, bias); w.set_metrics(metrics)
    """

    def __init__(self, path, *, dataset, backbone, loss, class_names, train_counts, feature_dim, config,
                 views=0, views_dtype="float16", views_logits=True, need_bytes=None):
        self.path, self.D, self.C = Path(path), int(feature_dim), len(class_names)
        if len(train_counts) != self.C:
            raise GlagError(f"{path}: {len(train_counts)} train counts for {self.C} classes")
        if views_dtype not in VIEW_DTYPES or int(views) < 0:
            raise ValueError(f"views {views} (>= 0) of dtype {views_dtype!r}; choose the dtype from {VIEW_DTYPES}")
        self.views, self.views_dtype, self.views_logits = int(views), np.dtype(views_dtype), bool(views_logits)
        self._view_pos = 0  # view rows written so far, over all views: view v holds [v N, (v + 1) N)
        super().__init__(self.path, need_bytes)
        self.h5.attrs.update(schema=SCHEMA, dataset=dataset, backbone=backbone, loss=loss,
                             feature_dim=self.D, num_classes=self.C, config=config_json(config),
                             created=now(), code_version=code_version(), complete=False)
        names = np.asarray([str(n) for n in class_names], dtype=h5py.string_dtype())
        self.h5.create_dataset("classes/names", data=names)
        self.h5.create_dataset("classes/train_counts", data=np.asarray(train_counts, dtype=np.int64), **CHECKSUM)
        self._digest("classes", names.astype(str).tobytes(), np.asarray(train_counts, np.int64).tobytes())

    def _split(self, split):
        if split in self.h5:
            return self.h5[split]
        g = self.h5.create_group(split)
        shapes = {"features": (self.D,), "labels": (), "logits": (self.C,), "index": ()}
        for name, dtype in zip(FIELDS, (np.float32, np.int64, np.float32, np.int64)):
            tail = shapes[name]
            g.create_dataset(name, shape=(0,) + tail, maxshape=(None,) + tail, dtype=dtype, **CHECKSUM,
                             chunks=(min(CHUNK_ROWS, max(1, 2 ** 22 // (4 * max(1, *tail, 1)))),) + tail)
        return g

    @checked
    def add_rows(self, split, features, labels, logits, index):
        """Append rows: features (n, D), labels (n,), logits (n, C), index (n,)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
        if split == "train" and VIEWS in self.h5:
            raise ValueError("train rows after its views: write the whole train split first")
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

    def _views_group(self):
        """train_views/, created at the first view row: (V, N, D) features and (V, N, C) logits."""
        if VIEWS in self.h5:
            return self.h5[VIEWS]
        if self.views < 1 or "train" not in self.h5:
            raise ValueError("view rows need a writer made with views >= 1 and the train split written first")
        N = self.h5["train/labels"].shape[0]
        g = self.h5.create_group(VIEWS)
        g.attrs.update(views=self.views, dtype=self.views_dtype.name)
        for name, width in (("features", self.D), ("logits", self.C))[: 2 if self.views_logits else 1]:
            # one view per chunk, <= 4 MiB: a reader of the first k views touches only those
            rows = min(CHUNK_ROWS, max(1, N), max(1, 2 ** 22 // (self.views_dtype.itemsize * width)))
            g.create_dataset(name, shape=(self.views, N, width), dtype=self.views_dtype, chunks=(1, rows, width),
                             **CHECKSUM)
        return g

    @checked
    def add_view_rows(self, view, features, logits=None):
        """Append rows of augmented view `view` of the train split, in the train split's row order.

        Views are written one after the other (view 0's N rows, then view 1's ...), after the
        whole train split. features (n, D); logits (n, C) exactly when the writer keeps view logits.
        """
        g = self._views_group()
        N = g["features"].shape[1]
        arrays = {"features": np.asarray(features, np.float32)}
        if (logits is None) == self.views_logits:
            raise ValueError(f"view logits {'missing' if self.views_logits else 'given'}: the writer was made "
                             f"with views_logits={self.views_logits}")
        if logits is not None:
            arrays["logits"] = np.asarray(logits, np.float32)
        n, pos = len(arrays["features"]), self._view_pos
        if view != pos // N or pos % N + n > N:
            raise ValueError(f"view rows out of order: got {n} rows of view {view}, the writer is at row "
                             f"{pos % N} of view {pos // N} ({N} rows per view)")
        for name, arr in arrays.items():
            if arr.shape != (n, self.D if name == "features" else self.C):
                raise ValueError(f"view {name} of shape {arr.shape}; expected ({n}, {g[name].shape[2]})")
            with np.errstate(over="ignore"):
                stored = arr.astype(self.views_dtype)
            if not np.isfinite(stored).all():   # float16 overflows above 65504
                raise GlagError(f"--views-dtype {self.views_dtype.name}: non-finite view {name} in view {view}; "
                                "use --views-dtype float32 (or check the backbone)")
            g[name][view, pos % N:pos % N + n] = stored
            self._digest(f"{VIEWS}/{name}", stored.tobytes())
        self._view_pos = pos + n

    @checked
    def set_head(self, weight, bias):
        w, b = np.asarray(weight, np.float32), np.asarray(bias, np.float32)
        if w.shape != (self.C, self.D) or b.shape != (self.C,):
            raise ValueError(f"head shapes {w.shape}, {b.shape}; expected ({self.C}, {self.D}), ({self.C},)")
        self.h5.create_dataset("stage1/classifier/weight", data=w, **CHECKSUM)
        self.h5.create_dataset("stage1/classifier/bias", data=b, **CHECKSUM)
        self._digest("head", w.tobytes(), b.tobytes())

    @checked
    def set_metrics(self, metrics: dict):
        self.h5.require_group("stage1").attrs["metrics"] = json.dumps(metrics, sort_keys=True)

    def close(self):
        missing = [s for s in ("train", "test") if s not in self.h5] + \
                  ([] if "stage1/classifier/weight" in self.h5 else ["stage1/classifier"])
        expected = self.views * (self.h5["train/labels"].shape[0] if "train" in self.h5 else 0)
        if self._view_pos != expected:
            missing.append(f"{VIEWS} ({self._view_pos} of {expected} rows)")
        if missing:
            self.abort()
            raise GlagError(f"{self.path}: bank not written, missing {missing}")
        self.h5.attrs["fingerprint"] = fingerprint(self._hash)
        self._finish()


class Bank:
    """A feature bank opened read-only (schema 1 or 2).

    Attributes: path, fingerprint, config (dict), dataset, backbone, loss,
    class_names (list), train_counts (C,), num_classes, feature_dim, splits,
    views (V augmented views of the train split, 0 without), views_dtype
    ("float16"/"float32", None without views), has_view_logits.
    """

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            raise GlagError(f"{self.path}: no feature bank there; run `make features` (glag-extract) first")
        try:
            self.h5 = h5py.File(self.path, "r", locking=False)
        except OSError as e:
            raise open_error(self.path, e, "feature bank", "rerun `make features`") from None
        try:
            self._validate()
        except BaseException:
            self.h5.close()
            raise
        a = self.h5.attrs
        self.fingerprint, self.config = str(a["fingerprint"]), json.loads(a["config"])
        self.dataset, self.backbone, self.loss = str(a["dataset"]), str(a["backbone"]), str(a["loss"])
        self.num_classes, self.feature_dim = int(a["num_classes"]), int(a["feature_dim"])
        self.class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in self.read("classes/names")]
        self.train_counts = self.read("classes/train_counts")
        self.splits = tuple(s for s in SPLITS if s in self.h5)
        g = self.h5.get(VIEWS)
        self.views = int(g.attrs["views"]) if g is not None else 0
        self.views_dtype = str(g.attrs["dtype"]) if g is not None else None
        self.has_view_logits = g is not None and "logits" in g

    def read(self, name: str, selection=()):
        """`self.h5[name][selection]`; a failed read (checksum mismatch, I/O error) and NaN/Inf in float data
        (damage a chunk checksum can miss; checked on every read, so no validation cache skips it) are
        one-line GlagErrors."""
        try:
            out = self.h5[name][selection]
        except OSError as e:
            raise read_error(self.path, name, e, REBUILD) from None
        check_finite(out, self.path, name, selection)
        return out

    def _validate(self):
        a = self.h5.attrs
        schema = a.get("schema")
        if schema not in READABLE:
            raise GlagError(f"{self.path}: schema {schema!r}, this GLAG reads {' and '.join(map(repr, READABLE))}; "
                            "rebuild the bank with this version's `make features`")
        missing = [k for k in REQUIRED_ATTRS if k not in a]
        if missing or not a.get("complete", False):
            raise GlagError(f"{self.path}: incomplete bank (missing {missing or 'completion mark'}); "
                            "delete it and rerun `make features`")
        C, D = int(a["num_classes"]), int(a["feature_dim"])
        shapes = {"classes/names": (C,), "classes/train_counts": (C,), "stage1/classifier/weight": (C, D),
                  "stage1/classifier/bias": (C,)}
        for split in dict.fromkeys(REQUIRED_SPLITS + tuple(s for s in SPLITS if s in self.h5)):
            n = self.h5[f"{split}/labels"].shape[0] if f"{split}/labels" in self.h5 else None
            shapes.update({f"{split}/features": (n, D), f"{split}/labels": (n,), f"{split}/logits": (n, C),
                           f"{split}/index": (n,)})
        self._check_shapes(shapes, f"num_classes {C}, feature_dim {D}")
        if VIEWS in self.h5:
            self._validate_views(C, D)
        check_attrs(self.h5, self.path, REBUILD)      # config, metrics: damaged JSON is one line, not a traceback

    def _check_shapes(self, shapes: dict, context: str):
        """Name the first missing dataset, else the first of the wrong shape (None in a shape: any length)."""
        missing = [name for name in shapes if name not in self.h5 or not isinstance(self.h5[name], h5py.Dataset)]
        if missing:
            raise GlagError(f"{self.path}: dataset {', '.join(missing)} missing inside the bank; the file was damaged "
                            f"after it was written: {REBUILD}")
        for name, want in shapes.items():
            got = self.h5[name].shape
            if len(got) != len(want) or any(w is not None and g != w for g, w in zip(got, want)):
                raise GlagError(f"{self.path}: {name} has shape {got}, expected {tuple(want)} ({context}); "
                                f"the bank is damaged: {REBUILD}")

    def _validate_views(self, C, D):
        """train_views: (V, N_train, D) features, optional (V, N_train, C) logits, all of the group's dtype."""
        g = self.h5[VIEWS]
        V, dtype = int(g.attrs.get("views", 0)), g.attrs.get("dtype")
        N = self.h5["train/labels"].shape[0]
        fix = f"re-dump it with `glag-extract --dump-only --views {max(V, 1)} --out {self.path}`"
        if V < 1 or dtype not in VIEW_DTYPES:
            raise GlagError(f"{self.path}: {VIEWS} has views {V}, dtype {dtype!r} (expected >= 1 of "
                            f"{list(VIEW_DTYPES)}); the bank is damaged: {fix}")
        unknown = [f for f in g if f not in VIEW_FIELDS]
        if "features" not in g or unknown:
            raise GlagError(f"{self.path}: {VIEWS} holds {sorted(g)}, expected features (and logits); "
                            f"the bank is damaged: {fix}")
        shapes = {"features": (V, N, D), "logits": (V, N, C)}
        for f in g:
            if g[f].shape != shapes[f] or g[f].dtype.name != dtype:
                raise GlagError(f"{self.path}: {VIEWS}/{f} is {g[f].shape} {g[f].dtype.name}, expected {shapes[f]} "
                                f"{dtype} (views {V}, {N} train rows); the bank is damaged: {fix}")

    def rows(self, split) -> int:
        return self.h5[self._need(split)]["labels"].shape[0]

    def _need(self, split):
        if split not in self.splits:
            raise GlagError(f"{self.path}: no {split!r} split in this bank (it has {list(self.splits)})")
        return split

    def load(self, split, fields=("features", "labels")) -> dict:
        """Whole split in memory: {field: array}."""
        split = self._need(split)
        return {f: self.read(f"{split}/{f}") for f in fields}

    def iter_chunks(self, split, fields=("features", "labels"), chunk_rows=CHUNK_ROWS):
        """Yield (start, {field: array}) over a split, `chunk_rows` rows at a time."""
        n = self.rows(split)
        for start in range(0, n, chunk_rows):
            yield start, {f: self.read(f"{split}/{f}", slice(start, start + chunk_rows)) for f in fields}

    def iter_view_chunks(self, view: int, chunk_rows=CHUNK_ROWS):
        """Yield (start, {"features": (n, D) float32, "labels": (n,)}) over augmented view `view` of the train
        split (its rows are the train rows' copies, so the labels are theirs)."""
        self._view_request(("features",), view + 1)
        n, name = self.rows("train"), f"{VIEWS}/features"
        for start in range(0, n, chunk_rows):
            rows = slice(start, start + chunk_rows)
            yield start, {"features": self.read(name, (view, rows)).astype(np.float32),
                          "labels": self.read("train/labels", rows)}

    def _view_request(self, fields, count):
        """Check a request for views; returns (fields, count) with count resolved."""
        if not self.views:
            raise GlagError(f"{self.path}: the bank has no augmented train views; add them from its checkpoint "
                            f"with `glag-extract --dump-only --views V --out {self.path}`")
        unknown = [f for f in fields if f not in VIEW_FIELDS]
        if unknown:
            raise ValueError(f"unknown view fields {unknown}; choose from {VIEW_FIELDS}")
        if "logits" in fields and not self.has_view_logits:
            raise GlagError(f"{self.path}: the bank's views have no logits (dumped with --no-views-logits); "
                            "compute them as W f + b from the stored head, or re-dump with --views-logits")
        count = self.views if count is None else int(count)
        if not 1 <= count <= self.views:
            raise GlagError(f"{self.path}: {count} views asked for, the bank has {self.views}; re-dump it with "
                            f"`glag-extract --dump-only --views {max(count, 1)}`")
        return tuple(fields), count

    def load_views(self, fields=VIEW_FIELDS, count=None, keep_dtype=False) -> dict:
        """The first `count` (None = all) augmented views of the train split, as float32 (or as stored).

        Returns:
            {"features": (count, N_train, D), "logits": (count, N_train, C)}, the fields asked for;
            row i of every view is an augmented copy of train row i (same label and index).
        """
        fields, count = self._view_request(fields, count)
        out = {}
        for f in fields:
            name = f"{VIEWS}/{f}"
            out[f] = np.empty((count,) + self.h5[name].shape[1:], self.h5[name].dtype if keep_dtype else np.float32)
            for v in range(count):   # one stored view at a time: a converted copy stays small
                out[f][v] = self.read(name, v)
        return out

    def view_bytes(self, count=None, fields=VIEW_FIELDS) -> int:
        """Bytes the float32 arrays of `load_views(fields, count)` take in memory."""
        fields, count = self._view_request(fields, count)
        width = sum(self.feature_dim if f == "features" else self.num_classes for f in fields)
        return count * self.rows("train") * width * 4

    @property
    def head(self):
        """Stage-one classifier: weight (C, D), bias (C,)."""
        return self.read("stage1/classifier/weight"), self.read("stage1/classifier/bias")

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
