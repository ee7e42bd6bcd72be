"""iNaturalist 2018: `<data root>/inat2018/{train2018.json, val2018.json}` over the image root.

The JSON files are COCO-style: `images` [{id, file_name}], `annotations`
[{image_id, category_id}], `categories` [{id, name}]; file_name is relative
to the image root (default: the inat2018 folder, e.g.
`train_val2018/Plantae/7477/<hash>.jpg`). Category ids are mapped to labels
0..C-1 in increasing id order. The train split is already long-tailed
(listed_long_tail). iNat 2018 has no labelled test set: the official val set is
used both as the val split and as the test split (the published iNat numbers
are val numbers), so val accuracy is not an independent estimate here.
Images stay on disk as paths, decoded on demand (RGB, resized to image_size).

torchvision's layout is accepted too: `torchvision.datasets.INaturalist(root, "2018")`
extracts train_val2018.tar.gz as `<root>/2018/<super>/<id>/<hash>.jpg`, i.e. without
the `train_val2018/` prefix of file_name. When no image_root is given and the images are
not under inat2018/, they are looked for there (the JSON files still come from inat2018/:
torchvision does not fetch them).
"""
import json
from pathlib import Path

import numpy as np

from glag.data.datasets.base import ImageSet, RawDataset, need_file, register_dataset
from glag.data.errors import GlagError

FOLDER = "inat2018"
TORCHVISION_FOLDER = "2018"                 # torchvision.datasets.INaturalist(root, version="2018")
ARCHIVE_PREFIX = "train_val2018"            # first part of file_name, dropped by torchvision's extraction


def read_coco(path: Path) -> dict:
    """A COCO-style JSON file with its three lists checked for presence."""
    try:
        with open(path) as f:
            coco = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GlagError(f"{path}: not valid JSON ({e}); re-download it") from None
    missing = [k for k in ("images", "annotations", "categories") if k not in coco]
    if missing:
        raise GlagError(f"{path}: no {missing} list; expected a COCO-style iNaturalist file")
    return coco


def coco_split(path: Path, coco: dict, label_of: dict, image_root: Path) -> ImageSet:
    """Images of one COCO file, in its `images` order, labelled through `label_of` (category id -> label)."""
    try:
        category = {a["image_id"]: a["category_id"] for a in coco["annotations"]}
        rows = [(image_root / im["file_name"], category.get(im["id"])) for im in coco["images"]]
    except (KeyError, TypeError) as e:
        raise GlagError(f"{path}: an image or annotation lacks {e}; expected COCO-style entries") from None
    unlabelled = [str(p) for p, c in rows if c is None]
    if unlabelled:
        raise GlagError(f"{path}: {len(unlabelled)} images have no annotation (first: {unlabelled[0]})")
    unknown = sorted({c for _, c in rows if c not in label_of})
    if unknown:
        raise GlagError(f"{path}: category ids {unknown[:5]} are not among train2018.json's categories")
    if not rows:
        raise GlagError(f"{path}: lists no image; re-download it")
    return ImageSet(labels=np.asarray([label_of[c] for _, c in rows], dtype=np.int64),
                    paths=[p for p, _ in rows])


def _torchvision_paths(split: ImageSet, base: Path, folder: Path) -> ImageSet:
    """The split's paths moved from base/train_val2018/... to torchvision's folder/... (prefix dropped)."""
    def move(path):
        parts = Path(path).relative_to(base).parts
        return folder.joinpath(*(parts[1:] if parts and parts[0] == ARCHIVE_PREFIX else parts))
    return ImageSet(labels=split.labels, paths=[move(p) for p in split.paths], index=split.index)


@register_dataset("inat2018")
def load_inat2018(root: Path, image_root: str | None = None, image_size: int = 224) -> RawDataset:
    """Read iNaturalist 2018 (file paths, decoded lazily).

    Args:
        root: the data root holding inat2018/.
        image_root: the folder the file_name entries are relative to (default: inat2018/).
        image_size: side the images are resized to when decoded.
    Returns:
        RawDataset with path-based train, val = test = the official val set, listed_long_tail=True.
    """
    base = Path(root) / FOLDER
    images = Path(image_root) if image_root else base
    train_file = need_file(base / "train2018.json", "iNaturalist 2018 train2018.json")
    val_file = need_file(base / "val2018.json", "iNaturalist 2018 val2018.json")
    train_coco, val_coco = read_coco(train_file), read_coco(val_file)
    try:
        categories = sorted((c["id"], c.get("name", str(c["id"]))) for c in train_coco["categories"])
    except (KeyError, TypeError):
        raise GlagError(f"{train_file}: a category lacks its id; expected [{{id, name}}]") from None
    label_of = {cid: k for k, (cid, _) in enumerate(categories)}
    train = coco_split(train_file, train_coco, label_of, images)
    val = coco_split(val_file, val_coco, label_of, images)
    if not image_root and not Path(train.paths[0]).exists() and (Path(root) / TORCHVISION_FOLDER).is_dir():
        train, val = (_torchvision_paths(s, base, Path(root) / TORCHVISION_FOLDER) for s in (train, val))
    if not Path(train.paths[0]).exists():
        raise GlagError(f"{train.paths[0]}: first image of train2018.json not found (looked under {base} and "
                        f"torchvision's {Path(root) / TORCHVISION_FOLDER}); set the reader's image_root option to "
                        "the folder its file_name entries are relative to")
    return RawDataset(name="inat2018", class_names=[name for _, name in categories], train=train,
                      val=val, test=val, channels=3, image_size=image_size, listed_long_tail=True)
