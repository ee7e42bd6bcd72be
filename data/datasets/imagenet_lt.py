"""ImageNet-LT: `<data root>/imagenet-lt/ImageNet_LT_{train,val,test}.txt` over an ImageNet tree.

Each list line is `relative/path.JPEG label` (label 0..999), e.g.
`train/n01440764/n01440764_190.JPEG 0`; paths are relative to the image root,
by default the imagenet-lt folder itself (put or link ImageNet's train/ and
val/ there), or `image_root`. The train list is already long-tailed
(listed_long_tail) and the official val list is the val split. Images stay on
disk as paths, decoded on demand (RGB, resized to image_size).
Class names are the wnid folder each label's train images sit in.
"""
from pathlib import Path

import numpy as np

from glag.data.datasets.base import ImageSet, RawDataset, need_file, register_dataset
from glag.data.errors import GlagError

FOLDER = "imagenet-lt"
LISTS = {"train": "ImageNet_LT_train.txt", "val": "ImageNet_LT_val.txt", "test": "ImageNet_LT_test.txt"}


def read_list(list_file: Path, image_root: Path) -> ImageSet:
    """One `path label` list file as a path-based ImageSet, in file order."""
    paths, labels = [], []
    for n, line in enumerate(list_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        rel, _, label = line.strip().rpartition(" ")
        if not rel or not label.isdigit():
            raise GlagError(f"{list_file}:{n}: expected `relative/path.JPEG label`, got {line[:80]!r}")
        paths.append(image_root / rel.strip())
        labels.append(int(label))
    if not paths:
        raise GlagError(f"{list_file}: lists no image; re-download the ImageNet-LT lists")
    return ImageSet(labels=np.asarray(labels, dtype=np.int64), paths=paths)


def names_from_folders(split: ImageSet, num_classes: int) -> list:
    """Each class's parent-folder name (its wnid) when that is unambiguous, else its label as text."""
    folder_of = {}
    for path, y in zip(split.paths, split.labels):
        folder_of.setdefault(int(y), set()).add(Path(path).parent.name)
    names = [next(iter(folder_of[k])) if len(folder_of.get(k, ())) == 1 else str(k) for k in range(num_classes)]
    return names if len(set(names)) == num_classes else [str(k) for k in range(num_classes)]


@register_dataset("imagenet-lt")
def load_imagenet_lt(root: Path, image_root: str | None = None, image_size: int = 224) -> RawDataset:
    """Read the ImageNet-LT lists (file paths, decoded lazily).

    Args:
        root: the data root holding imagenet-lt/.
        image_root: the ImageNet folder the list paths are relative to (default: imagenet-lt/).
        image_size: side the images are resized to when decoded.
    Returns:
        RawDataset with path-based train / val / test, listed_long_tail=True.
    """
    base = Path(root) / FOLDER
    images = Path(image_root) if image_root else base
    splits = {s: read_list(need_file(base / f, f"ImageNet-LT list {f}"), images) for s, f in LISTS.items()}
    num_classes = int(splits["train"].labels.max()) + 1
    for s, split in splits.items():
        if split.labels.max() >= num_classes:
            raise GlagError(f"{base / LISTS[s]}: label {split.labels.max()} never occurs in the train list "
                            f"(labels 0..{num_classes - 1}); use the lists of one ImageNet-LT release")
        if not Path(split.paths[0]).exists():
            raise GlagError(f"{split.paths[0]}: first image of {LISTS[s]} not found; set the reader's image_root "
                            "option to the ImageNet folder the list paths are relative to")
    return RawDataset(name="imagenet-lt", class_names=names_from_folders(splits["train"], num_classes),
                      train=splits["train"], val=splits["val"], test=splits["test"], channels=3,
                      image_size=image_size, listed_long_tail=True)
