"""Decode a JPEG-folder dataset once and keep the pixels in an .npz beside it.

Decoding CIFAR-10's 60k JPEGs or Tiny-ImageNet's 111k takes tens of seconds
on two cores; reading the decoded arrays back takes about one. The cache sits
inside the dataset's folder (`<folder>/.glag-cache.npz`), is written atomically
and is keyed by a fingerprint of the file list (relative paths and sizes) and
the decode settings, so an edited dataset is decoded again instead of read stale.
It holds only uint8 pixel arrays (np.load without pickle); labels always come
from the fresh file listing.
"""
import hashlib
import os
import sys
import zipfile
from pathlib import Path

import numpy as np

from glag.data.atomic import atomic_file
from glag.data.errors import GlagError
from glag.data.images import decode_all

CACHE_NAME = ".glag-cache.npz"
CACHE_FORMAT = "glag-image-cache/1"


def listing_fingerprint(splits: dict, base: Path, channels: int, size: int) -> str:
    """sha256 over the decode settings and every split's (relative path, size) in order."""
    h = hashlib.sha256(f"{CACHE_FORMAT} channels={channels} size={size}\n".encode())
    prefix = len(str(base)) + 1            # paths are listed under base: slicing beats os.path.relpath 5x
    for split in sorted(splits):
        lines = [f"[{split}]"]
        for path in splits[split]:
            try:
                nbytes = os.stat(path).st_size
            except FileNotFoundError:
                raise GlagError(f"{path}: image file not found; re-extract the dataset under {base}") from None
            lines.append(f"{str(path)[prefix:]}\t{nbytes}")
        h.update("\n".join(lines).encode())
    return h.hexdigest()


def load_decoded(base: Path, splits: dict, channels: int, size: int, cache: bool = True,
                 workers: int = 2) -> dict:
    """Pixels of every split, from the cache when it matches the files, else decoded (and cached).

    Args:
        base: the dataset's folder; the cache is base / CACHE_NAME.
        splits: {split name: list of N_split image paths}, in row order.
        channels, size: decode settings (see glag.data.images.decode_image).
        cache: read and write the cache; False always decodes and writes nothing.
        workers: decoding threads.
    Returns:
        {split name: (N_split, size, size, channels) uint8}.
    """
    base = Path(base)
    path = base / CACHE_NAME
    fingerprint = listing_fingerprint(splits, base, channels, size) if cache else ""
    if cache:
        arrays = _read_cache(path, fingerprint, splits)
        if arrays is not None:
            return arrays
    arrays = {split: decode_all(paths, channels, size, workers, what=f"{base.name} {split}")
              for split, paths in splits.items()}
    if cache:
        _write_cache(path, fingerprint, arrays)
    return arrays


def _read_cache(path: Path, fingerprint: str, splits: dict):
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["fingerprint"]) != fingerprint:
                print(f"{path}: the image files changed since this cache was written; decoding again",
                      file=sys.stderr)
                return None
            return {split: z[f"images_{split}"] for split in splits}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        # a cache we cannot read is only lost time, never an error: decode instead
        print(f"{path}: unreadable cache; decoding again", file=sys.stderr)
        return None


def _write_cache(path: Path, fingerprint: str, arrays: dict) -> None:
    try:
        with atomic_file(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, fingerprint=np.str_(fingerprint), **{f"images_{k}": v for k, v in arrays.items()})
            os.chmod(tmp, 0o644)        # the temp file is private (mkstemp); the data root may be shared
    except OSError as e:
        # a read-only dataset folder still loads, it just decodes every time
        print(f"{path}: cannot write the decode cache ({e.strerror}); the next load decodes again",
              file=sys.stderr)
