"""CIFAR-10 as JPEG class folders: `<data root>/cifar10-jpeg/{train,test}/<class>/NNNN.jpg`.

This is the offline copy in shared/data/cifar10-jpeg.tar.gz (50,000 / 10,000
images, 32x32 RGB, re-encoded as JPEG quality 75, so pixels differ from the
original pickles). All 60k images are decoded into memory (184 MB) and cached
in `cifar10-jpeg/.glag-cache.npz` so later loads skip the decoding.
Classes are the sorted folder names of train/.
"""
from pathlib import Path

from glag.data.datasets.base import ImageSet, RawDataset, need_file, register_dataset
from glag.data.datasets.cache import load_decoded
from glag.data.datasets.folder import scan_split
from glag.data.errors import GlagError

FOLDER = "cifar10-jpeg"
SIZE = 32


@register_dataset("cifar10-jpeg")
def load_cifar10_jpeg(root: Path, cache: bool = True, workers: int = 2) -> RawDataset:
    """Read and decode CIFAR-10-JPEG.

    Args:
        root: the data root holding cifar10-jpeg/.
        cache: read/write the decoded-pixel cache beside the images.
        workers: decoding threads on a cache miss.
    Returns:
        RawDataset with in-memory train (N, 32, 32, 3) and test uint8 images; no official val.
    """
    base = need_file(Path(root) / FOLDER, "CIFAR-10 JPEG folder (cifar10-jpeg/{train,test}/<class>/NNNN.jpg)")
    layout = "split folder of cifar10-jpeg (<split>/<class>/NNNN.jpg)"
    train_paths, train_labels, names = scan_split(need_file(base / "train", layout), extensions=(".jpg",))
    test_paths, test_labels, _ = scan_split(need_file(base / "test", layout), names, extensions=(".jpg",))
    if not train_paths or not test_paths:
        raise GlagError(f"{base}: train/ or test/ holds no <class>/*.jpg images; re-extract cifar10-jpeg.tar.gz")
    pixels = load_decoded(base, {"train": train_paths, "test": test_paths}, channels=3, size=SIZE,
                          cache=cache, workers=workers)
    return RawDataset(name="cifar10-jpeg", class_names=names,
                      train=ImageSet(labels=train_labels, images=pixels["train"]),
                      test=ImageSet(labels=test_labels, images=pixels["test"]),
                      channels=3, image_size=SIZE)
