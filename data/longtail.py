"""Long-tailed train splits and the balanced validation split.

Profiles:
  exp     n_i = int(n_max * IM ** (-i / (C - 1))), classes in natural order: the
          standard CIFAR-LT generator's counts (LDAM-DRW's `get_img_num_per_cls`).
  step    the first half of the classes keep n_max, the rest int(n_max / IM).
  listed  the train split exactly as the dataset lists it (ImageNet-LT, iNat) or as a user's
          folder holds it (the `folder` dataset's default: every image, its real counts).

Validation: a dataset with an official val split uses it. Otherwise the val split
is `val_per_class` images per class taken from the training images that the
long-tail subsampling left out, never from test. A class whose formula count
leaves fewer than `val_per_class` images over (the largest classes) is capped
at `size - val_per_class`; every other class gets exactly the standard count.
`val_per_class=0` gives the standard counts untouched and an empty val split.
A listed split without an official val split (a folder with no val/) holds
`val_per_class` images per class out of train, at most a fifth of the class, so
a class of 10 keeps 8 and a class of 4 keeps all 4.
"""
import numpy as np

from glag.data.datasets.base import ImageSet, LongTailDataset, RawDataset
from glag.data.errors import GlagError

PROFILES = ("exp", "step", "listed")


def class_counts(profile: str, num_classes: int, n_max: int, im: float) -> np.ndarray:
    """Per-class train counts of a profile, before the val cap. (C,) int64."""
    if im < 1:
        raise GlagError(f"--im {im}: the imbalance ratio must be >= 1 (1 = balanced)")
    if profile == "exp":
        i = np.arange(num_classes)
        return np.array([int(n_max * im ** (-k / max(num_classes - 1, 1))) for k in i], dtype=np.int64)
    if profile == "step":
        half = num_classes // 2
        return np.array([n_max] * half + [int(n_max / im)] * (num_classes - half), dtype=np.int64)
    raise GlagError(f"--profile {profile!r}: choose from {list(PROFILES)}")


def make_long_tail(raw: RawDataset, profile: str = "exp", im: float = 100.0, val_per_class: int = 20,
                   n_max: int | None = None, seed: int = 0) -> LongTailDataset:
    """Subsample `raw.train` into a long-tailed split and take a balanced val split.

    Selection is seeded (np.random.default_rng(seed)): each class's images are
    permuted once; the first n_i go to train, the last val_per_class to val.
    """
    C = len(raw.class_names)
    labels = raw.train.labels
    sizes = np.bincount(labels, minlength=C)
    if (sizes == 0).any():
        empty = [raw.class_names[k] for k in np.flatnonzero(sizes == 0)[:5]]
        raise GlagError(f"dataset {raw.name}: classes with no training image: {empty}; remove them or fix the labels")
    if profile == "listed" or raw.listed_long_tail:
        return _as_listed(raw, val_per_class, seed)
    if raw.val is None and val_per_class < 0:
        raise GlagError(f"--val-per-class {val_per_class}: must be >= 0")
    n_max = int(n_max or sizes.max())
    target = class_counts(profile, C, n_max, im)
    reserve = 0 if raw.val is not None else val_per_class
    counts = np.minimum(target, sizes - reserve)
    if (counts < 1).any():
        k = int(np.argmin(counts))
        raise GlagError(f"dataset {raw.name}: class {raw.class_names[k]!r} has {sizes[k]} training images, "
                        f"too few for --val-per-class {val_per_class}; lower it")
    rng = np.random.default_rng(seed)
    train_rows, val_rows = [], []
    for k in range(C):
        rows = rng.permutation(np.flatnonzero(labels == k))
        train_rows.append(rows[: counts[k]])
        if reserve:
            val_rows.append(rows[len(rows) - reserve:])
    train = raw.train.subset(np.concatenate(train_rows))
    val = raw.val if raw.val is not None else raw.train.subset(
        np.concatenate(val_rows) if val_rows else np.zeros(0, np.int64))
    meta = dict(profile=profile, im=float(im), n_max=n_max, val_per_class=reserve, seed=seed,
                val_source="official" if raw.val is not None else "train-leftover",
                capped_classes=int((counts < target).sum()))
    return _finish(raw, train, val, meta)


def _as_listed(raw: RawDataset, val_per_class: int, seed: int) -> LongTailDataset:
    """Every train image as listed; val is the official split, else a held-out part of train (module doc)."""
    if raw.val is not None:
        return _finish(raw, raw.train, raw.val, dict(profile="listed", val_source="official", seed=seed))
    if val_per_class < 0:
        raise GlagError(f"--val-per-class {val_per_class}: must be >= 0")
    rng = np.random.default_rng(seed)
    train_rows, val_rows = [], []
    for k in range(len(raw.class_names)):
        rows = rng.permutation(np.flatnonzero(raw.train.labels == k))
        held = min(val_per_class, len(rows) // 5)
        train_rows.append(np.sort(rows[: len(rows) - held]))
        val_rows.append(np.sort(rows[len(rows) - held:]))
    meta = dict(profile="listed", val_per_class=val_per_class, seed=seed, val_source="train-holdout")
    return _finish(raw, raw.train.subset(np.concatenate(train_rows)), raw.train.subset(np.concatenate(val_rows)),
                   meta)


def describe(data: LongTailDataset) -> str:
    """One line on the split used: classes, and train / val / test images with the train counts per class."""
    counts = [int(c) for c in data.train_counts]
    shown = "/".join(map(str, counts)) if len(counts) <= 20 else f"{max(counts)} ... {min(counts)}"
    how = {"listed": "every image, as listed", "exp": f"exponential long tail, IM {data.meta.get('im', 0):g}",
           "step": f"step long tail, IM {data.meta.get('im', 0):g}"}.get(data.meta.get("profile"), "")
    val = {"official": "the official val split", "train-holdout": "held out of train, at most a fifth of a class",
           "train-leftover": "from the train images the long tail left out"}.get(data.meta.get("val_source"), "")
    return (f"data: {data.name}, {len(counts)} classes; train {len(data.train)} images ({how}; per class "
            f"{shown}); val {len(data.val)} ({val}); test {len(data.test)}")


def _finish(raw, train, val, meta) -> LongTailDataset:
    counts = np.bincount(train.labels, minlength=len(raw.class_names)).astype(np.int64)
    return LongTailDataset(name=raw.name, class_names=list(raw.class_names), train=train, val=val,
                           test=raw.test, train_counts=counts, channels=raw.channels,
                           image_size=raw.image_size, meta=meta)
