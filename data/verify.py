"""glag-verify's check: a bank's or a store's bytes against the fingerprint stored in it, in one streaming pass.

The fingerprint is what BankWriter and StoreWriter hash while the rows stream in: one
running SHA-256 per key (`classes`, `<split>/<field>`, `train_views/<field>`, `head` for a
bank; each dataset's name for a store), each array in its stored type and row order,
combined by `glag.data.h5writer.fingerprint`. Recomputed here from the file, it gives the
same 32 hex digits exactly when nothing was altered. Opening a file never does this (it
reads every byte: minutes at iNaturalist scale); readers check the structure on open,
the Fletcher-32 checksums on every read, and `glag.data.validate` the numbers.
"""
import hashlib
from pathlib import Path

import h5py
import numpy as np

from glag.data import bank as bank_format
from glag.data import store as store_format
from glag.data.errors import GlagError, open_error
from glag.data.h5writer import fingerprint

ROWS = 4096


def verify(path) -> str:
    """Check a bank or a store at `path` against its fingerprint; raise GlagError when they differ.

    Returns:
        "" when the fingerprint matched, else a note on what could be checked (a store from
        before fingerprints: every chunk was read, so its checksums were checked).
    """
    path = Path(path)
    schema = _schema(path)
    if schema in bank_format.READABLE:
        with bank_format.Bank(path) as bank:
            stored, got = bank.fingerprint, fingerprint(bank_hashes(bank))
        fix = "rebuild it with `make features` (stores and runs made from it describe the old content)"
    elif schema == store_format.SCHEMA:
        with store_format.Store(path) as store:
            stored, got = store.attrs.get("fingerprint"), fingerprint(store_hashes(store))
        fix = store_format.REGENERATE
        if stored is None:
            return f"{path}: a store from before fingerprints; every chunk was read, none failed its checksum"
    else:
        raise GlagError(f"{path}: neither a feature bank nor a synthetic store (schema {schema!r}); "
                        "glag-verify checks bank.h5 files and the stores of glag-generate")
    if got != stored:
        raise GlagError(f"{path}: its content does not match its fingerprint (stored {stored}, computed {got}); "
                        f"the file was altered or damaged after it was written: {fix}")
    return ""


def _schema(path: Path):
    if not path.is_file():
        raise GlagError(f"{path}: no such file; give a bank.h5 or a synthetic store")
    try:
        with h5py.File(path, "r", locking=False) as h5:
            return h5.attrs.get("schema")
    except OSError as e:
        raise open_error(path, e, "file", "rebuild it") from None


def _rows(reader, name: str, leading: int = 0):
    """A running SHA-256 of dataset `name` read ROWS rows at a time (per index of a leading axis of `leading`)."""
    h, shape = hashlib.sha256(), reader.h5[name].shape
    n = shape[1] if leading else (shape[0] if shape else 1)
    for lead in range(leading) if leading else [None]:
        for start in range(0, n, ROWS):
            rows = slice(start, start + ROWS) if shape else ()
            h.update(np.ascontiguousarray(reader.read(name, rows if lead is None else (lead, rows))).tobytes())
    return h


def bank_hashes(bank) -> dict:
    """The running hashes BankWriter kept, recomputed from an open Bank."""
    names = np.asarray(bank.class_names, dtype=h5py.string_dtype()).astype(str)
    classes = hashlib.sha256(names.tobytes() + np.asarray(bank.train_counts, np.int64).tobytes())
    hashes = {"classes": classes}
    for split in bank.splits:
        for field in bank_format.FIELDS:
            hashes[f"{split}/{field}"] = _rows(bank, f"{split}/{field}")
    if bank.views:
        for field in bank.h5[bank_format.VIEWS]:
            hashes[f"{bank_format.VIEWS}/{field}"] = _rows(bank, f"{bank_format.VIEWS}/{field}", bank.views)
    W, b = bank.head
    hashes["head"] = hashlib.sha256(W.tobytes() + b.tobytes())
    return hashes


def store_hashes(store) -> dict:
    """The running hashes StoreWriter kept, recomputed from an open Store."""
    return {name: _rows(store, name) for name in store.dataset_names()}
