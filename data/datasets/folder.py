"""A user's own images: `<root>/<split>/<class>/*.{jpg,jpeg,png,bmp}`.

`train` and `test` are required, `val` is optional (without it, glag.data.longtail
takes a balanced val split from the train images the subsampling left out).
Classes are the sorted folder names of `train`; `test` and `val` may lack a
class but may not add one. Images stay on disk as paths and are decoded on
demand by glag.data.images.decode_image (RGB or L, resized to image_size).
"""
import os
from pathlib import Path

import numpy as np

from glag.data.datasets.base import ImageSet, RawDataset, need_file, register_dataset
from glag.data.errors import GlagError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def scan_split(split_dir: Path, class_names: list | None = None, extensions=EXTENSIONS):
    """The image files of one `<split>/<class>/*` tree, in (class, file name) order.

    Args:
        split_dir: folder holding one subfolder per class.
        class_names: the known classes (label = position); None: this split's sorted subfolders define them.
        extensions: file name endings accepted, compared case-insensitively; other files are ignored.
    Returns:
        (paths: list of N Path, labels: (N,) int64, class_names: list of C str).
    """
    found = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
    names = list(found) if class_names is None else list(class_names)
    label_of = {name: k for k, name in enumerate(names)}
    unknown = [c for c in found if c not in label_of]
    if unknown:
        raise GlagError(f"{split_dir}: class folders {unknown[:5]} have no folder in train; "
                        "every class needs training images (rename or remove them)")
    paths, labels = [], []
    for name in found:
        files = sorted(f for f in os.listdir(split_dir / name) if f.lower().endswith(tuple(extensions)))
        paths += [split_dir / name / f for f in files]
        labels += [label_of[name]] * len(files)
    return paths, np.asarray(labels, dtype=np.int64), names


@register_dataset("folder")
def load_folder(root: Path, image_size: int = 64, channels: int = 3) -> RawDataset:
    """Read `root` itself as an image-folder dataset (file paths, decoded lazily).

    Args:
        root: the folder holding train/, test/ and optionally val/.
        image_size: side the images are resized to when decoded.
        channels: 3 (RGB) or 1 (grayscale).
    """
    if channels not in (1, 3):
        raise GlagError(f"--channels {channels}: choose 1 (grayscale) or 3 (RGB)")
    if image_size < 1:
        raise GlagError(f"--image-size {image_size}: must be >= 1")
    layout = "image folder (<root>/train/<class>/*.jpg)"
    paths, labels, names = scan_split(need_file(Path(root) / "train", layout))
    if not names or not paths:
        raise GlagError(f"{Path(root) / 'train'}: no class folder with .jpg/.jpeg/.png/.bmp images; "
                        "expected train/<class>/<image> (see docs/datasets.md)")
    test = _split(need_file(Path(root) / "test", layout), names)
    val_dir = Path(root) / "val"
    val = _split(val_dir, names) if val_dir.is_dir() else None
    return RawDataset(name="folder", class_names=names, train=ImageSet(labels=labels, paths=paths),
                      test=test, val=val, channels=channels, image_size=image_size)


def _split(split_dir: Path, names: list) -> ImageSet:
    paths, labels, _ = scan_split(split_dir, names)
    if not paths:
        raise GlagError(f"{split_dir}: no .jpg/.jpeg/.png/.bmp images under its class folders; "
                        "add images or remove the folder")
    return ImageSet(labels=labels, paths=paths)
