"""What makes one dataset's data differ from another's: the identity a stage-one run is checked against.

Two image folders with the same class counts are different data; a run (its output folder, its
checkpoint) must never be shared between them. `fingerprint(raw, root)` hashes what a reader
returned: class names, labels, and per image either its file (path relative to the data root, and
size; reading every file's bytes would cost as much as decoding them) or its pixels (in-memory readers).
`source(name, root)` is the data root a reader read, absolute (None for digits, which ships in
scikit-learn). Both go into the run's config, so the checkpoint resume check compares them.
"""
import hashlib
import os
from pathlib import Path

import numpy as np

from glag.data.errors import GlagError

FORMAT = "glag-data-fingerprint/1"
NO_ROOT = ("digits",)        # readers that never look at the data root


def source(name: str, root) -> str | None:
    """The absolute data root the dataset `name` is read from, or None when the reader reads none."""
    return None if name in NO_ROOT else str(Path(root).expanduser().resolve())


def fingerprint(raw, root) -> str:
    """blake2b (32 hex) over class names and every split's labels and files (or pixels), in row order."""
    h = hashlib.blake2b(f"{FORMAT}\n{raw.name}\n".encode(), digest_size=16)
    h.update("\n".join(map(str, raw.class_names)).encode())
    base = str(Path(root)) + os.sep if root is not None else ""     # the root as the reader joined it
    for split in ("train", "val", "test"):
        images = getattr(raw, split)
        if images is None:
            continue
        h.update(f"\n[{split}] {len(images)}\n".encode())
        h.update(np.ascontiguousarray(images.labels, dtype=np.int64).tobytes())
        if images.paths is None:
            h.update(np.ascontiguousarray(images.images).tobytes())
        else:
            h.update(_listing(images.paths, base).encode())
    return h.hexdigest()


def _listing(paths, base: str) -> str:
    """'path<TAB>size' per file, the path relative to the data root (so a moved root keeps its fingerprint)."""
    lines = []
    for path in paths:
        text = str(path)
        try:
            size = os.stat(path).st_size
        except OSError:
            raise GlagError(f"{path}: image file not found or unreadable; restore it or remove it from the "
                            "dataset") from None
        lines.append(f"{text[len(base):] if base and text.startswith(base) else text}\t{size}")
    return "\n".join(lines)
