"""CIFAR-10 and CIFAR-100 in their original python-pickle layout.

  <data root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
      batches: {b"data": (N, 3072) uint8, b"labels": [N]}; meta: {b"label_names": [10]}
  <data root>/cifar-100-python/{train, test, meta}
      splits: {b"data", b"fine_labels"}; meta: {b"fine_label_names": [100]}

This is also torchvision's layout: `torchvision.datasets.CIFAR10(root)` / `CIFAR100(root)`
extract into these same folders, so a torchvision root works as the data root as it is.
When only the downloaded archive (`cifar-10-python.tar.gz`, `cifar-100-python.tar.gz`) is
there, the error says to extract it: nothing is unpacked or downloaded here.

Rows of `data` are 1024 red, then 1024 green, then 1024 blue bytes of a 32x32 image.

Unpickling: these files are pickles (written by Python 2), so reading them
means unpickling. `unpickle` below is the ONLY place GLAG unpickles anything;
GLAG's own outputs are HDF5 / JSON / npz / torch weights_only. It calls
pickle with encoding="bytes" (Python 2 strings stay bytes) through an
Unpickler that resolves only the globals a numpy array needs, so a tampered
file cannot run code: it is refused with a GlagError.
"""
import pickle
from pathlib import Path

import numpy as np

from glag.data.datasets.base import ImageSet, RawDataset, need_file, register_dataset
from glag.data.errors import GlagError

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR100_FOLDER = "cifar-100-python"
# what numpy arrays in a pickle refer to (old and new numpy module names), and Python 3's bytes
_ALLOWED_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}")
        return super().find_class(module, name)


def unpickle(path: Path) -> dict:
    """One CIFAR pickle as a dict with bytes keys (the only unpickling in GLAG; see module docstring)."""
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise GlagError(f"{path}: not a CIFAR python pickle ({type(e).__name__}: {e}); re-download it") from None
    if not isinstance(obj, dict):
        raise GlagError(f"{path}: holds a {type(obj).__name__}, not the dict of a CIFAR batch; re-download it")
    return obj


def read_batches(paths: list, label_key: bytes, num_classes: int) -> ImageSet:
    """Concatenate CIFAR batch files. Returns an in-memory ImageSet of (N, 32, 32, 3) uint8."""
    images, labels = [], []
    for path in paths:
        batch = unpickle(path)
        if b"data" not in batch or label_key not in batch:
            raise GlagError(f"{path}: missing b'data' or {label_key!r}; is it a CIFAR-{num_classes} file?")
        data, y = np.asarray(batch[b"data"]), np.asarray(batch[label_key], dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(y):
            raise GlagError(f"{path}: data {data.dtype}{data.shape} with {len(y)} labels, expected uint8 (N, 3072) "
                            "and N labels; re-download it")
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise GlagError(f"{path}: labels outside 0..{num_classes - 1}; is it a CIFAR-{num_classes} file?")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))   # planes -> (N, 32, 32, 3)
        labels.append(y)
    return ImageSet(labels=np.concatenate(labels), images=np.ascontiguousarray(np.concatenate(images)))


def read_names(path: Path, key: bytes, num_classes: int) -> list:
    names = unpickle(path).get(key)
    if names is None or len(names) != num_classes:
        raise GlagError(f"{path}: expected {num_classes} class names under {key!r}; re-download it")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


ARCHIVES = {CIFAR10_FOLDER: "cifar-10-python.tar.gz", CIFAR100_FOLDER: "cifar-100-python.tar.gz"}


def _folder(root: Path, folder: str, what: str) -> Path:
    """The extracted pickle folder; when only its archive lies there (torchvision's download), say to extract it."""
    base, archive = Path(root) / folder, Path(root) / ARCHIVES[folder]
    if not base.exists() and archive.exists():
        raise GlagError(f"{base}: not found but {archive} is; extract it there (tar xzf {archive.name} "
                        f"-C {Path(root)}), GLAG reads the extracted {folder}/ folder")
    return need_file(base, what)


def _files(base: Path, names: list) -> list:
    return [need_file(base / name, f"CIFAR file {name}") for name in names]


@register_dataset("cifar10")
def load_cifar10(root: Path) -> RawDataset:
    """CIFAR-10 (50,000 / 10,000 images, 32x32 RGB) from cifar-10-batches-py/ under the data root."""
    base = _folder(root, CIFAR10_FOLDER, "CIFAR-10 python folder (cifar-10-python.tar.gz extracted)")
    *batches, test_batch, meta = _files(base, [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"])
    train = read_batches(batches, b"labels", 10)
    test = read_batches([test_batch], b"labels", 10)
    names = read_names(meta, b"label_names", 10)
    return RawDataset(name="cifar10", class_names=names, train=train, test=test, channels=3, image_size=32)


@register_dataset("cifar100")
def load_cifar100(root: Path) -> RawDataset:
    """CIFAR-100 (50,000 / 10,000 images, 32x32 RGB, fine labels) from cifar-100-python/ under the data root."""
    base = _folder(root, CIFAR100_FOLDER, "CIFAR-100 python folder (cifar-100-python.tar.gz extracted)")
    train_file, test_file, meta = _files(base, ["train", "test", "meta"])
    train = read_batches([train_file], b"fine_labels", 100)
    test = read_batches([test_file], b"fine_labels", 100)
    names = read_names(meta, b"fine_label_names", 100)
    return RawDataset(name="cifar100", class_names=names, train=train, test=test, channels=3, image_size=32)
