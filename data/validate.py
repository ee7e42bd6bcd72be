"""One validation of a feature bank's numbers, shared by every stage that reads a bank.

`Bank` checks the structure when it opens (attrs, datasets, shapes); this module
checks the contents a run is about to use, streaming each split once in chunks
(bounded memory at any scale):

  - features, logits and augmented views finite (a NaN trains a head to NaN);
  - features >= 0: the bank contract (post-ReLU features), which a fractional Tukey power needs
    (x ** 0.5 of a negative is NaN); `check_rows` alone refuses them only under such a power;
  - labels inside 0..C-1;
  - the train labels' class counts equal classes/train_counts;
  - the stage-one head finite.

glag-generate runs the same checks (`check_rows`, `check_labels`, `check_counts`) on
the chunks of its own streaming pass over the train rows; glag-classify calls
`validate_bank` before it trains.

What passed is cached in `.<bank name>.checks.json` beside the bank, keyed by the
bank's fingerprint, size and modification time, so an edited bank is scanned
again. Where the folder cannot be written (a read-only bank) there is no cache.
Only `glag-verify` re-hashes the bytes against the fingerprint (glag.data.verify). Finiteness
is also checked by `Bank.read` on every float read (`check_finite`), so no cache can let a NaN
through: bytes damaged after the scan (an erased 0.0 reads as NaN and keeps a valid Fletcher-32
checksum) are refused when a stage reads them. `validate_bank` also checks the bank's attributes
against their digest (glag.data.h5writer.check_attrs) before a run trains on it.
"""
import json
import math
import os
from pathlib import Path

import numpy as np

from glag.data.errors import GlagError
from glag.data.h5writer import check_attrs

CACHE_SCHEMA = "glag-checks/1"
CHUNK_BYTES = 2 ** 26            # rows per scanned chunk: about 64 MB of them
REBUILD = "rebuild it with `make features`"
# A writer refuses non-finite features, so a NaN found later is most likely damage; logits and the head
# are not checked when written. glag-verify tells the two apart.
NON_FINITE = "the bank is unusable: if `glag-verify` finds it damaged, restore a good copy, else " + REBUILD


def fractional(lam) -> bool:
    """True for a Tukey power that needs non-negative input (lambda 0 = log, or a non-integer lambda)."""
    return lam is not None and lam != 1 and (lam == 0 or lam != int(lam))


def _minmax(x: np.ndarray) -> tuple:
    import torch
    own = x if x.dtype == np.float32 and x.flags.writeable and x.flags.c_contiguous else np.array(x, np.float32)
    lo, hi = torch.aminmax(torch.from_numpy(own))        # one pass finds NaN (both NaN), Inf and the minimum
    return float(lo), float(hi)


def check_rows(x, where, what: str, start: int = 0, lam=None, fix: str = "") -> float:
    """Refuse NaN/Inf in rows `x` (n, ...) and, under a fractional `lam`, negatives; returns their minimum.

    Args:
        where: the file, for the message; what: the dataset (e.g. "train/features"); start: row of x[0].
        lam: the Tukey lambda the rows will take (None: none); fix: the option that avoids the power.
    """
    x = np.asarray(x)
    if x.size == 0:
        return math.inf
    lo, hi = _minmax(x)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise non_finite(where, what, start + first_bad_row(x))
    check_min(lo, lam, where, what, fix)
    return lo


def non_finite(where, what: str, row: int) -> GlagError:
    return GlagError(f"{where}: NaN or Inf in {what} (row {row}); " + NON_FINITE.format(where=where))


def first_bad_row(x: np.ndarray) -> int:
    """Index of the first row of `x` (n, ...) holding a NaN or an Inf (0 if none), a block of rows at a time."""
    rows = x.reshape(len(x), -1) if x.ndim else x.reshape(1, 1)
    step = max(1, 2 ** 22 // max(1, rows.shape[1]))
    for start in range(0, len(rows), step):
        bad = ~np.isfinite(rows[start:start + step]).all(axis=1)
        if bad.any():
            return start + int(np.argmax(bad))
    return 0


def check_finite(x: np.ndarray, where, name: str, selection=()) -> None:
    """Refuse NaN/Inf in the float array `x` just read as `name[selection]`; the message names the row.

    For a selection `(v, rows)` of a 3-d dataset (the views) the row is counted within view v.
    """
    if x.dtype.kind != "f" or x.size == 0:
        return
    with np.errstate(invalid="ignore"):
        if np.isfinite(x.min()) and np.isfinite(x.max()):     # NaN propagates through both; no temporary array
            return
    parts = selection if isinstance(selection, tuple) else (selection,)
    views = [p for p in parts if isinstance(p, (int, np.integer))]
    start = next((p.start or 0 for p in parts if isinstance(p, slice)), 0)
    what = f"{name} of view {int(views[0])}" if views else name
    raise non_finite(where, what, start + first_bad_row(x if x.ndim else x.reshape(1)))


def check_min(lo, lam, where, what: str, fix: str) -> None:
    if fractional(lam) and lo is not None and lo < 0:
        raise GlagError(f"{where}: negative values in {what} (min {lo:.3g}) cannot take Tukey lambda {lam}; {fix}")


def check_non_negative(lo, where, what: str) -> None:
    """The bank contract: features are >= 0 (post-ReLU, docs/formats.md), whatever space a run uses."""
    if lo is not None and lo < 0:
        raise GlagError(f"{where}: negative values in {what} (min {lo:.3g}); a bank's features are >= 0 (the "
                        f"backbone's post-ReLU output), so this one was altered or not written by glag-extract: "
                        f"{REBUILD}")


def check_labels(labels, num_classes: int, where, what: str, start: int = 0) -> None:
    labels = np.asarray(labels)
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        i = int(np.argmax(bad))
        raise GlagError(f"{where}: label {int(labels[i])} in {what} (row {start + i}) is outside the classes "
                        f"0..{num_classes - 1}; the bank is damaged: {REBUILD}")


def check_counts(found, expected, where, at_least: bool = False) -> None:
    """The train rows per class (found; a lower bound in the middle of a pass) against classes/train_counts."""
    found, expected = np.asarray(found), np.asarray(expected)
    diff = np.flatnonzero(found > expected if at_least else found != expected)
    if len(diff):
        k = int(diff[0])
        raise GlagError(f"{where}: class {k} has {'at least ' if at_least else ''}{int(found[k])} train rows but "
                        f"classes/train_counts says {int(expected[k])}; the bank is inconsistent: {REBUILD}")


def validate_bank(bank, splits=None, logits=(), views: int = 0, lam=None, fix: str = "", cache: bool = True) -> dict:
    """Check the numbers a run will read; raise GlagError naming the bank and the first fault.

    Args:
        bank: an open glag.data.bank.Bank.
        splits: splits whose features and labels are read (default: every split the bank has).
        logits: splits whose stage-one logits are read (the KD teacher).
        views: augmented views read (0: none); their logits too where the bank keeps them.
        lam: the Tukey lambda the features will be raised to (None: no transform); fix: what to do
            when negative features meet a fractional lam.
        cache: use the sidecar cache.
    Returns:
        {dataset: minimum (float datasets) or True}, of every check made or found in the cache.
    """
    splits = tuple(bank.splits if splits is None else splits)
    check_attrs(bank.h5, bank.path, REBUILD)                 # cheap, never cached: metadata before any work
    key = _key(bank) if cache else None
    done = _load(bank, key) if cache else {}
    fresh = {}
    for split in splits:
        todo = [f for f in ("features", "labels") + (("logits",) if split in logits else ())
                if f"{split}/{f}" not in done]
        if todo:
            fresh.update(_scan_split(bank, split, todo))
    view_fields = ("features", "logits")[: 2 if bank.has_view_logits else 1] if views and bank.views else ()
    for f in view_fields:
        if f"train_views/{f}" not in done:
            fresh[f"train_views/{f}"] = _scan_views(bank, f)
    if "stage1/classifier" not in done:
        W, b = bank.head
        check_rows(W, bank.path, "stage1/classifier/weight")
        check_rows(b[:, None], bank.path, "stage1/classifier/bias")
        fresh["stage1/classifier"] = True
    found = dict(done, **fresh)
    for name in [f"{s}/features" for s in splits] + (["train_views/features"] if view_fields else []):
        check_non_negative(found[name], bank.path, name)
        check_min(found[name], lam, bank.path, name, fix)
    if cache and fresh:
        _save(bank, key, found)
    return found


def _scan_split(bank, split: str, fields: list) -> dict:
    """One chunked pass over `fields` of a split; {dataset: minimum or True}."""
    C, where = bank.num_classes, bank.path
    floats = [f for f in fields if f != "labels"]
    low = {f: math.inf for f in floats}
    counts = np.zeros(C, np.int64)
    width = sum(bank.num_classes if f == "logits" else bank.feature_dim if f == "features" else 1 for f in fields)
    step = bank.h5[f"{split}/features"].chunks[0] or 1        # whole HDF5 chunks: none is read twice
    rows = max(1, CHUNK_BYTES // (4 * width * step)) * step
    for start, chunk in bank.iter_chunks(split, fields, chunk_rows=rows):
        for f in floats:
            low[f] = min(low[f], check_rows(chunk[f], where, f"{split}/{f}", start))
        if "labels" in fields:
            check_labels(chunk["labels"], C, where, f"{split}/labels", start)
            counts += np.bincount(chunk["labels"], minlength=C)
    if "labels" in fields and split == "train":
        check_counts(counts, bank.train_counts, where)
    out = {f"{split}/{f}": (None if math.isinf(v) else v) for f, v in low.items()}
    if "labels" in fields:
        out[f"{split}/labels"] = True
    return out


def _scan_views(bank, field: str):
    """The minimum of train_views/<field> over every view, each checked finite, chunk by chunk."""
    name, n, low = f"train_views/{field}", bank.rows("train"), math.inf
    width = bank.feature_dim if field == "features" else bank.num_classes
    rows = max(1, CHUNK_BYTES // (4 * width))
    for v in range(bank.views):
        for start in range(0, n, rows):
            x = bank.read(name, (v, slice(start, start + rows))).astype(np.float32)
            low = min(low, check_rows(x, bank.path, f"{name} of view {v}", start))
    return None if math.isinf(low) else low


def cache_path(bank) -> Path:
    return Path(bank.path).with_name(f".{Path(bank.path).name}.checks.json")


def _key(bank) -> dict:
    st = os.stat(bank.path)
    return {"fingerprint": bank.fingerprint, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _load(bank, key) -> dict:
    try:
        data = json.loads(cache_path(bank).read_text())
    except (OSError, ValueError):
        return {}
    ok = isinstance(data, dict) and data.get("schema") == CACHE_SCHEMA and data.get("key") == key
    return dict(data.get("checked") or {}) if ok else {}


def _save(bank, key, found: dict) -> None:
    from glag.data.atomic import atomic_file
    try:
        with atomic_file(cache_path(bank)) as tmp:
            tmp.write_text(json.dumps({"schema": CACHE_SCHEMA, "key": key, "checked": found}, sort_keys=True,
                                      indent=1) + "\n")
    except (OSError, GlagError):
        pass   # a read-only bank folder (or a full disk) goes without the cache
