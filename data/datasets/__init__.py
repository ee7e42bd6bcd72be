"""Dataset readers. Each module registers its reader in `DATASETS` by name.

Importing this package pulls in no torchvision: readers decode images with
Pillow only when a split is read from files.
"""
from data.datasets.base import DATASETS, ImageSet, LongTailDataset, RawDataset, data_root, register_dataset
from data.datasets import digits  # noqa: F401  (registers "digits")


def load_dataset(name: str, root=None, **options) -> RawDataset:
    """The raw dataset `name` read from `root` (default: data_root())."""
    from data.errors import GlagError
    if name not in DATASETS:
        raise GlagError(f"--dataset {name!r}: unknown; choose from {sorted(DATASETS)}")
    return DATASETS[name](data_root(root), **options)
