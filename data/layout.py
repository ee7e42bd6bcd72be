"""Where outputs go under runs/, and which bank a tool uses when it is not told: one layout for every tool.

    runs/<dataset>-im<IM>/<loss>/seed<s>/bank.h5   stage one (make features, glag-extract, reproduce);
                                                   <dataset>-listed for the listed long tails (ImageNet-LT, iNat)
                                                   and a folder kept as it is; <dataset> of a user's folder is
                                                   folder-<its name>-<hash of its path>
        .../bank.ckpt.pt                           its checkpoint
        .../synthetic/<hash>.h5, latest.json       the bank's stores and its pointer to the newest
        .../stage2/<run>/                          stage-two runs
    runs/<dataset>-im<IM>/results/                 reproduce's tables
    runs/current.json                              {"bank": path}: the bank glag-extract wrote last

Several losses and seeds of one dataset sit side by side, so the Table 6/7 grids
and reproduce read what `make features` wrote. A tool given no --bank uses, in
order: the bank of --dataset / $DATASET (the current one if it is of that dataset,
else the only one), the current bank, the only bank under runs/; it says which.
"""
import hashlib
import json
import os
import re
from pathlib import Path

import h5py

from glag.data.atomic import atomic_file
from glag.data.errors import GlagError

RUNS_ROOT = "runs"
CURRENT = "current.json"
BANK = "bank.h5"


def dataset_folder(dataset: str, data_root=None) -> str:
    """The dataset part of an experiment's folder: its name; for `folder` (a user's images, wherever they
    are) folder-<the image folder's name>-<hash of its absolute path>, so two image folders never share a
    run, a checkpoint or a bank."""
    if dataset != "folder":
        return dataset
    from glag.data.datasets.base import data_root as resolve_root
    root = Path(resolve_root(data_root)).expanduser().resolve()
    name = re.sub(r"[^A-Za-z0-9._+-]+", "_", root.name).strip("._") or "root"
    return f"folder-{name}-{hashlib.blake2b(str(root).encode(), digest_size=3).hexdigest()}"


def experiment_name(dataset: str, im, data_root=None) -> str:
    """<dataset>-im<IM> (IM printed without a trailing .0), or <dataset>-listed when im is None
    (<dataset> as `dataset_folder` names it)."""
    name = dataset_folder(dataset, data_root)
    return f"{name}-im{float(im):g}" if im is not None else f"{name}-listed"


def bank_path(runs_root, dataset: str, im, loss: str, seed: int, data_root=None) -> Path:
    """runs/<dataset>-im<IM>/<loss>/seed<s>/bank.h5."""
    return Path(runs_root) / experiment_name(dataset, im, data_root) / loss / f"seed{seed}" / BANK


def set_current(bank, runs_root=RUNS_ROOT) -> None:
    """Remember `bank` as the current one (runs/current.json), for the tools run next."""
    with atomic_file(Path(runs_root) / CURRENT) as tmp:
        tmp.write_text(json.dumps({"bank": str(Path(bank).resolve())}, indent=1) + "\n")


def current_bank(runs_root=RUNS_ROOT) -> Path | None:
    """The bank runs/current.json names, if it still exists."""
    try:
        path = Path(json.loads((Path(runs_root) / CURRENT).read_text())["bank"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return path if path.is_file() else None


def list_banks(runs_root=RUNS_ROOT) -> list:
    """Every bank.h5 under runs_root, at any depth, sorted."""
    root = Path(runs_root)
    return sorted(p for p in root.rglob(BANK) if ".tmp" not in p.name) if root.is_dir() else []


def bank_config(path) -> dict:
    """The stage-one config a bank records; {} when it records none or cannot be read (damaged, hand-made)."""
    try:
        with h5py.File(path, "r", locking=False) as h5:
            config = json.loads(h5.attrs["config"])
    except (OSError, KeyError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def bank_dataset(path) -> str | None:
    """The dataset a bank was made from (its attrs), None when it cannot be read."""
    try:
        with h5py.File(path, "r", locking=False) as h5:
            return str(h5.attrs["dataset"])
    except (OSError, KeyError):
        return None


def resolve_bank(bank=None, dataset=None, runs_root=RUNS_ROOT) -> tuple:
    """(bank path, how it was chosen): --bank, else --dataset / $DATASET, else current, else the only one."""
    if bank:
        return Path(bank), "--bank"
    dataset = dataset or os.environ.get("DATASET") or None
    banks, current = list_banks(runs_root), current_bank(runs_root)
    if dataset:
        from glag.data.datasets import canonical_name
        dataset = canonical_name(dataset)
        mine = [b for b in banks if bank_dataset(b) == dataset]
        if current is not None and bank_dataset(current) == dataset:
            return current, f"the current bank of dataset {dataset!r} ({Path(runs_root) / CURRENT})"
        if len(mine) == 1:
            return mine[0], f"the only bank of dataset {dataset!r}"
        if mine:
            raise GlagError(f"--dataset {dataset}: {len(mine)} banks of this dataset under {runs_root}/ "
                            f"({_names(mine)}); pass --bank PATH")
        raise GlagError(f"--dataset {dataset}: no bank of this dataset under {runs_root}/ (banks there: "
                        f"{_names(banks)}); run `make features DATASET={dataset}` or pass --bank PATH")
    if current is not None:
        return current, f"the current bank ({Path(runs_root) / CURRENT}: the last one glag-extract wrote)"
    if len(banks) == 1:
        return banks[0], f"the only bank under {runs_root}/"
    raise GlagError(f"--bank: {'several banks' if banks else 'no bank'} under {runs_root}/ ({_names(banks)}); "
                    "pass --bank PATH or --dataset NAME")


def _names(banks) -> str:
    return ", ".join(str(b) for b in banks) if banks else "none"
