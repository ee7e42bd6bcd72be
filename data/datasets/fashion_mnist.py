"""Fashion-MNIST from its IDX files (60,000 / 10,000 images, 28x28 gray, 10 classes).

Files `{train,t10k}-{images-idx3,labels-idx1}-ubyte`, plain or `.gz`, are looked
for in `<data root>/fashion-mnist/`, then in torchvision's `<data root>/FashionMNIST/raw/`
(what `torchvision.datasets.FashionMNIST(root)` leaves behind), then in Debian's
/usr/share/datasets/fashion-mnist/ (package dataset-fashion-mnist).
IDX: big-endian; images have a 16-byte header (magic 2051, count, rows, cols),
labels an 8-byte header (magic 2049, count), then one unsigned byte per pixel / label.
"""
import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from glag.data.datasets.base import ImageSet, RawDataset, need_file, register_dataset
from glag.data.errors import GlagError

FOLDER = "fashion-mnist"
TORCHVISION_FOLDER = "FashionMNIST/raw"            # torchvision.datasets.FashionMNIST's layout under its root
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"   # where the Debian package installs the files
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049


@register_dataset("fashion-mnist")
def load_fashion_mnist(root: Path, system_dir: str | None = DEBIAN_DIR) -> RawDataset:
    """Read Fashion-MNIST into memory.

    Args:
        root: the data root; its fashion-mnist/, then FashionMNIST/raw/ folders are searched first.
        system_dir: second place to look (None: only the data root).
    Returns:
        RawDataset with (N, 28, 28, 1) uint8 train / test images; no official val.
    """
    candidates = [Path(root) / FOLDER, Path(root) / TORCHVISION_FOLDER] + ([Path(system_dir)] if system_dir else [])
    folder = _find_folder(candidates)
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx_images(_idx_file(folder, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx_labels(_idx_file(folder, f"{prefix}-labels-idx1-ubyte"))
        if len(images) != len(labels):
            raise GlagError(f"{folder}: {prefix} images ({len(images)}) and labels ({len(labels)}) differ in "
                            "count; re-download the files")
        if labels.size and labels.max() >= len(CLASS_NAMES):
            raise GlagError(f"{folder}: {prefix} labels go up to {labels.max()}, Fashion-MNIST has 10 classes")
        splits[split] = ImageSet(labels=labels, images=images[..., None])   # (N, 28, 28, 1)
    return RawDataset(name="fashion-mnist", class_names=list(CLASS_NAMES), train=splits["train"],
                      test=splits["test"], channels=1, image_size=int(splits["train"].images.shape[1]))


def _find_folder(candidates: list) -> Path:
    """The first folder that holds the train images file (plain or gzipped); else an error naming them all."""
    for folder in candidates:
        if any((folder / f"train-images-idx3-ubyte{ext}").exists() for ext in ("", ".gz")):
            return folder
    raise GlagError(f"Fashion-MNIST not found: no train-images-idx3-ubyte[.gz] in {', '.join(map(str, candidates))} "
                    "(GLAG's, torchvision's and Debian's layouts); put the files there, point --data-root / "
                    "GLAG_DATA at their parent or apt-get install dataset-fashion-mnist (see docs/datasets.md)")


def _idx_file(folder: Path, stem: str) -> Path:
    plain = folder / stem
    if plain.exists():
        return plain
    return need_file(folder / f"{stem}.gz",
                     f"Fashion-MNIST file {stem}[.gz] (or apt-get install dataset-fashion-mnist)")


def read_idx_images(path: Path) -> np.ndarray:
    """An IDX3 image file (plain or gzip). Returns (N, rows, cols) uint8."""
    raw = _read_bytes(path)
    magic, n, rows, cols = _header(path, raw, ">IIII")
    _check(path, magic, IMAGE_MAGIC, len(raw), 16 + n * rows * cols)
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, rows, cols).copy()  # writable


def read_idx_labels(path: Path) -> np.ndarray:
    """An IDX1 label file (plain or gzip). Returns (N,) int64."""
    raw = _read_bytes(path)
    magic, n = _header(path, raw, ">II")
    _check(path, magic, LABEL_MAGIC, len(raw), 8 + n)
    return np.frombuffer(raw, dtype=np.uint8, offset=8).astype(np.int64)


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise GlagError(f"{path}: broken gzip file ({e}); re-download it") from None


def _header(path: Path, raw: bytes, fmt: str) -> tuple:
    size = struct.calcsize(fmt)
    if len(raw) < size:
        raise GlagError(f"{path}: {len(raw)} bytes, shorter than the {size}-byte IDX header; re-download it")
    return struct.unpack_from(fmt, raw)


def _check(path: Path, magic: int, want_magic: int, size: int, want_size: int) -> None:
    if magic != want_magic:
        raise GlagError(f"{path}: IDX magic number {magic}, expected {want_magic}; "
                        "is it the right file (images vs labels)?")
    if size != want_size:
        raise GlagError(f"{path}: {size} bytes but its header announces {want_size} (truncated or corrupt); "
                        "re-download it")
