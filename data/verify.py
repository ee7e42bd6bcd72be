"""glag-verify's check: a bank's or a store's bytes against the digests stored in it, in one streaming pass.

A writer (glag.data.h5writer.AtomicH5Writer) keeps one running SHA-256 per key while the rows
stream in: per dataset, its bytes in C order and stored type, keyed by its path (`train/features`,
`train_views/logits`, `rows/a`, ...), plus the bank's two composite keys (`classes`: the class names
and train counts; `head`: the stage-one weight and bias). At close it stores them as the root attr
`digests` (JSON {key: hex}), the 32-hex `fingerprint` combined from them, and `attrs_digest`, a
SHA-256 over every other attribute of every object. This module recomputes all of it from the file
and names the first dataset or the attributes that no longer match: damage that the per-chunk
Fletcher-32 checksums cannot see (an erased 0.0 that reads as NaN) included.

Files from before the per-dataset digests are checked against their fingerprint alone (the
bank's keys, or the store's), and a store from before fingerprints is read whole (so every chunk
checksum is checked). Opening a file never does any of this (it reads every byte: minutes at
iNaturalist scale); readers check the structure and the attributes on open, the checksums and
finiteness on every read, and `glag.data.validate` the numbers.
"""
import hashlib
import json
from pathlib import Path

import h5py
import numpy as np

from glag.data import bank as bank_format
from glag.data import store as store_format
from glag.data.errors import GlagError, open_error, read_error
from glag.data.h5writer import DIGESTS, check_attrs, fingerprint

ROWS = 4096
BANK_FIX = "rebuild it with `make features` (stores and runs made from it describe the old content)"
REBUILD_EITHER = "rebuild it (a bank: `make features`; a store: `glag-generate --force`)"
NOT_OURS = "glag-verify checks feature banks (bank.h5) and the synthetic stores of glag-generate"


def verify(path) -> str:
    """Check a bank or a store at `path` against its digests; raise GlagError naming what differs.

    Returns:
        "" when everything matched, else a note on what could be checked (a file from before the
        per-dataset digests, or a store from before fingerprints).
    """
    path = Path(path)
    schema, fix = _check_header(path)
    is_bank = schema in bank_format.READABLE
    reader = bank_format.Bank(path) if is_bank else store_format.Store(path)
    old = bank_hashes if is_bank else store_hashes
    with reader:
        stored = reader.h5.attrs.get("fingerprint")
        if stored is None:   # a store from before fingerprints (it has no digests either)
            old(reader)
            return f"{path}: a store from before fingerprints; every chunk was read, none failed its checksum"
        if DIGESTS not in reader.h5.attrs:
            _compare(path, stored, fingerprint(old(reader)), "its content", fix)
            return f"{path}: written before per-dataset digests: its arrays match its fingerprint, its " \
                   "attributes have no digest"
        digests = _digests(reader.h5, path, fix)
        hashes = {key: dataset_hash(reader, key, fix) for key in digests}
        for key, h in hashes.items():
            _compare(path, digests[key], h.hexdigest(), key, fix)
        _compare(path, stored, fingerprint(hashes), "its content", fix)
    return ""


def _compare(path, stored, computed, what: str, fix: str) -> None:
    if computed != stored:
        raise GlagError(f"{path}: {what} does not match its fingerprint (stored {str(stored)[:16]}..., computed "
                        f"{computed[:16]}...); the file was altered or damaged after it was written: restore a good "
                        f"copy or {fix}")


def _digests(h5, path, fix) -> dict:
    try:
        digests = json.loads(h5.attrs[DIGESTS])
        assert isinstance(digests, dict) and digests
    except (ValueError, TypeError, AssertionError, OSError):
        raise GlagError(f"{path}: its {DIGESTS} attribute is unreadable; the file was damaged after it was written: "
                        f"restore a good copy or {fix}") from None
    return digests


def _check_header(path: Path) -> tuple:
    """(schema, what to do when damaged) of a bank or a store whose attributes match their digest.

    Refuses a missing file, a file that is not HDF5 (never advised to be deleted for it), an HDF5
    file that does not open (truncated or damaged), another kind of HDF5 file, and damaged attributes
    (checked here, before a reader parses them).
    """
    if not path.is_file():
        raise GlagError(f"{path}: no such file; give a bank.h5 or a synthetic store")
    try:
        is_hdf5 = h5py.is_hdf5(path)
    except OSError as e:
        raise open_error(path, e, "bank or store", REBUILD_EITHER) from None
    if not is_hdf5:
        raise GlagError(f"{path}: not an HDF5 file (a checkpoint, a JSON or another kind of file?); {NOT_OURS}")
    try:
        with h5py.File(path, "r", locking=False) as h5:
            schema = h5.attrs.get("schema")
            fix = BANK_FIX if schema in bank_format.READABLE else \
                store_format.REGENERATE if schema == store_format.SCHEMA else None
            if fix is None:
                raise GlagError(f"{path}: an HDF5 file that is neither a feature bank nor a synthetic store (schema "
                                f"{schema!r}; a damaged one, if it was one); {NOT_OURS}")
            if "fingerprint" in h5.attrs:
                check_attrs(h5, path, fix)
            return schema, fix
    except (OSError, UnicodeDecodeError) as e:
        raise open_error(path, e, "bank or store", REBUILD_EITHER) from None


def _read(reader, name: str, selection, fix: str):
    """Dataset bytes as stored, without the readers' finiteness check: damage is reported as a digest mismatch."""
    try:
        return reader.h5[name][selection]
    except OSError as e:
        raise read_error(reader.path, name, e, fix) from None


def _rows(reader, name: str, fix: str = BANK_FIX):
    """A running SHA-256 of dataset `name`'s bytes in C order, read ROWS rows at a time (for 3-d arrays, such
    as the views (V, N, D), ROWS rows of one leading index at a time)."""
    h, shape = hashlib.sha256(), reader.h5[name].shape
    if not shape:
        h.update(np.ascontiguousarray(_read(reader, name, (), fix)).tobytes())
        return h
    leads = range(shape[0]) if len(shape) >= 3 else [None]
    n = shape[1] if len(shape) >= 3 else shape[0]
    for lead in leads:
        for start in range(0, n, ROWS):
            rows = slice(start, start + ROWS)
            h.update(np.ascontiguousarray(_read(reader, name, rows if lead is None else (lead, rows), fix)).tobytes())
    return h


def _classes(reader, fix):
    names = np.asarray(_read(reader, "classes/names", (), fix), dtype=h5py.string_dtype())
    names = np.asarray([n.decode() if isinstance(n, bytes) else str(n) for n in names]).astype(str)
    counts = np.asarray(_read(reader, "classes/train_counts", (), fix), np.int64)
    return hashlib.sha256(names.tobytes() + counts.tobytes())


def _head(reader, fix):
    W = _read(reader, "stage1/classifier/weight", (), fix)
    b = _read(reader, "stage1/classifier/bias", (), fix)
    return hashlib.sha256(np.ascontiguousarray(W).tobytes() + np.ascontiguousarray(b).tobytes())


# Digest keys that are not one dataset's path, and how to recompute them (the bank's, from before the rule).
COMPOSITE = {"classes": _classes, "head": _head}


def dataset_hash(reader, key: str, fix: str):
    """The running hash a writer kept under `key`, recomputed from the open file."""
    if key in COMPOSITE:
        return COMPOSITE[key](reader, fix)
    if key not in reader.h5 or not isinstance(reader.h5[key], h5py.Dataset):
        raise GlagError(f"{reader.path}: dataset {key} missing inside the file; the file was damaged after it was "
                        f"written: restore a good copy or {fix}")
    return _rows(reader, key, fix)


def bank_hashes(bank) -> dict:
    """The running hashes BankWriter kept, recomputed from an open Bank (for banks without `digests`)."""
    hashes = {"classes": _classes(bank, BANK_FIX), "head": _head(bank, BANK_FIX)}
    for split in bank.splits:
        for field in bank_format.FIELDS:
            hashes[f"{split}/{field}"] = _rows(bank, f"{split}/{field}")
    if bank.views:
        for field in bank.h5[bank_format.VIEWS]:
            hashes[f"{bank_format.VIEWS}/{field}"] = _rows(bank, f"{bank_format.VIEWS}/{field}")
    return hashes


def store_hashes(store) -> dict:
    """The running hashes StoreWriter kept, recomputed from an open Store (for stores without `digests`)."""
    return {name: _rows(store, name, store_format.REGENERATE) for name in store.dataset_names()}
