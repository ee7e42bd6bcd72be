"""Tiny-ImageNet (202-class variant): `<data root>/tiny-imagenet-202/`.

Layout: wnids.txt (one WordNet id per line), words.txt (`wnid<TAB>names`),
train/<wnid>/images/*.JPEG (500 per class), val/images/*.JPEG labelled by
val/val_annotations.txt (`file<TAB>wnid<TAB>box...`, 50 per class); 64x64,
some grayscale (made RGB). The official val set is the labelled held-out set,
so it is used as TEST; the val split is then taken from train leftovers by
glag.data.longtail. Classes are the sorted wnids, named by the first synonym in
words.txt. Everything is decoded into memory (101k x 64x64x3 = 1.2 GB) and
cached in `tiny-imagenet-202/.glag-cache.npz`; `--image-size 32` decodes at
32x32 instead (CIFAR-sized, for a ResNet-32 on a CPU; the cache holds one size
at a time).
"""
import os
from pathlib import Path

from glag.data.datasets.base import ImageSet, RawDataset, need_file, register_dataset
from glag.data.datasets.cache import load_decoded
from glag.data.errors import GlagError

FOLDER = "tiny-imagenet-202"
SIZE = 64


@register_dataset("tiny-imagenet")
def load_tiny_imagenet(root: Path, cache: bool = True, workers: int = 2, image_size: int = SIZE) -> RawDataset:
    """Read and decode Tiny-ImageNet-202.

    Args:
        root: the data root holding tiny-imagenet-202/.
        cache: read/write the decoded-pixel cache beside the images.
        workers: decoding threads on a cache miss.
        image_size: side the images are resized to (64: as stored).
    Returns:
        RawDataset with in-memory train and test (N, S, S, 3) uint8 images; no official val.
    """
    if not 8 <= image_size <= 256:
        raise GlagError(f"--image-size {image_size}: give a side between 8 and 256 pixels")
    base = need_file(Path(root) / FOLDER, "Tiny-ImageNet folder (tiny-imagenet-202/ from tiny-imagenet-202.tar.gz)")
    wnids_file = need_file(base / "wnids.txt", "class list wnids.txt")
    wnids = sorted({line.strip() for line in wnids_file.read_text().splitlines() if line.strip()})
    if not wnids:
        raise GlagError(f"{wnids_file}: lists no class; re-extract the dataset")
    names = _class_names(need_file(base / "words.txt", "class names words.txt"), wnids)
    train_paths, train_labels = [], []
    for k, wnid in enumerate(wnids):
        folder = need_file(base / "train" / wnid / "images", f"train folder of class {wnid}")
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith((".jpeg", ".jpg")))   # str sort: fast
        train_paths += [folder / f for f in files]
        train_labels += [k] * len(files)
    test_paths, test_labels = _val_annotations(base, {w: k for k, w in enumerate(wnids)})
    pixels = load_decoded(base, {"train": train_paths, "test": test_paths}, channels=3, size=image_size,
                          cache=cache, workers=workers)
    return RawDataset(name="tiny-imagenet", class_names=names,
                      train=ImageSet(labels=train_labels, images=pixels["train"]),
                      test=ImageSet(labels=test_labels, images=pixels["test"]),
                      channels=3, image_size=image_size)


def _class_names(words_file: Path, wnids: list) -> list:
    """First synonym of each wnid (`n02124075<TAB>Egyptian cat` -> 'Egyptian cat'); the wnid if unlisted."""
    wanted, words = set(wnids), {}
    for line in words_file.read_text().splitlines():
        wnid, _, text = line.partition("\t")
        if wnid in wanted:
            words[wnid] = text.split(",")[0].strip() or wnid
    names = [words.get(w, w) for w in wnids]
    # two wnids sharing a first synonym would make report rows ambiguous
    return [f"{n} ({w})" if names.count(n) > 1 else n for n, w in zip(names, wnids)]


def _val_annotations(base: Path, label_of: dict):
    """Paths and labels of the official val images, in val_annotations.txt order."""
    ann = need_file(base / "val" / "val_annotations.txt", "val labels val/val_annotations.txt")
    paths, labels = [], []
    for n, line in enumerate(ann.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in label_of:
            raise GlagError(f"{ann}:{n}: expected `file<TAB>wnid...` with a wnid from wnids.txt, got {line[:80]!r}")
        paths.append(base / "val" / "images" / fields[0])
        labels.append(label_of[fields[1]])
    if not paths:
        raise GlagError(f"{ann}: lists no image; re-extract the dataset")
    return paths, labels
