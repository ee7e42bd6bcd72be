"""What every dataset reader returns, and the registry that names them.

A reader turns files on disk into a `RawDataset` (full train split, test split,
the official val split when the dataset has one). `glag.data.longtail` then makes
the long-tailed train split and a balanced val split from it.
"""
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from glag.data.errors import GlagError
from glag.data.registry import registrar

DEFAULT_ROOT = "datasets"


def data_root(root=None) -> Path:
    """--data-root, else $GLAG_DATA, else ./datasets."""
    return Path(root or os.environ.get("GLAG_DATA") or DEFAULT_ROOT)


@dataclass
class ImageSet:
    """One split: images in memory (N, H, W, C) uint8, or files decoded on demand."""
    labels: np.ndarray                      # (N,) int64
    images: np.ndarray | None = None        # (N, H, W, C) uint8
    paths: list | None = None               # N image files (when not in memory)
    index: np.ndarray | None = None         # (N,) row index in the source split

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.index is None:
            self.index = np.arange(len(self.labels), dtype=np.int64)
        if (self.images is None) == (self.paths is None):
            raise ValueError("an ImageSet holds either images or paths")

    def __len__(self):
        return len(self.labels)

    def subset(self, rows) -> "ImageSet":
        rows = np.asarray(rows, dtype=np.int64)
        return ImageSet(labels=self.labels[rows], index=self.index[rows],
                        images=None if self.images is None else self.images[rows],
                        paths=None if self.paths is None else [self.paths[i] for i in rows])


@dataclass
class RawDataset:
    name: str
    class_names: list
    train: ImageSet
    test: ImageSet
    val: ImageSet | None = None             # official val split, if the dataset has one
    channels: int = 3
    image_size: int = 32                    # side of the (square) images the backbone sees
    listed_long_tail: bool = False          # already long-tailed as listed (ImageNet-LT, iNat)


@dataclass
class LongTailDataset:
    name: str
    class_names: list
    train: ImageSet
    val: ImageSet
    test: ImageSet
    train_counts: np.ndarray                # (C,) int64
    channels: int
    image_size: int
    meta: dict = field(default_factory=dict)  # how it was built: im, profile, seed, val source

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


DATASETS: dict[str, Callable[..., RawDataset]] = {}


register_dataset = registrar(DATASETS, "dataset")


def need_file(path: Path, what: str) -> Path:
    """The path if it exists, else a GlagError that says where it was looked for."""
    if not Path(path).exists():
        raise GlagError(f"{path}: {what} not found; put the dataset there or point --data-root / GLAG_DATA "
                        "at the folder that holds it (see docs/datasets.md)")
    return Path(path)
