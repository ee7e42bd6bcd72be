"""Dataset readers. Each module registers its reader in `DATASETS` by name.

Importing this package pulls in no torchvision: readers decode images with
Pillow only when a split is read from files.
"""
from glag.data.datasets.base import DATASETS, ImageSet, LongTailDataset, RawDataset, data_root, register_dataset
from glag.data.datasets import digits  # noqa: F401  (registers "digits")
from glag.data.datasets import cifar  # noqa: F401
from glag.data.datasets import cifar10_jpeg  # noqa: F401
from glag.data.datasets import fashion_mnist  # noqa: F401
from glag.data.datasets import folder  # noqa: F401
from glag.data.datasets import imagenet_lt  # noqa: F401
from glag.data.datasets import inat  # noqa: F401
from glag.data.datasets import tiny_imagenet  # noqa: F401


# Short names users type (`make features DATASET=inat`).
ALIASES = {"inat": "inat2018", "imagenet": "imagenet-lt", "tiny": "tiny-imagenet", "fmnist": "fashion-mnist"}


def canonical_name(name: str) -> str:
    return ALIASES.get(name, name)


def load_dataset(name: str, root=None, **options) -> RawDataset:
    """The raw dataset `name` (or an alias) read from `root` (default: data_root())."""
    from glag.data.errors import GlagError
    name = canonical_name(name)
    if name not in DATASETS:
        raise GlagError(f"--dataset {name!r}: unknown; choose from {sorted(DATASETS)}")
    return DATASETS[name](data_root(root), **options)
