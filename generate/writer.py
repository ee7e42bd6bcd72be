"""Write the synthetic store (format: data/store.py, docs/afg.md) and find where it goes.

The store holds the fitted generator, so its size is known from the train counts
alone (kept centred rows, QR factors, supports), announced and checked against the
free disk space before any heavy work starts. The store appears only when complete
(StoreWriter writes to a temp file and renames it).
"""
import hashlib
import json
from pathlib import Path

import click
import numpy as np

from glag.data.atomic import atomic_file, free_bytes
from glag.data.errors import GlagError
from glag.data.provenance import config_json, now
from glag.data.store import DTYPES, Store, StoreWriter, plan_bytes

SYNTHETIC_DIR = "synthetic"
LATEST = "latest.json"
DISK_MARGIN = 64 * 2 ** 20     # keep this much free beyond the store itself
# Stage two applies beta and gamma when it mixes (s = a + beta d + sqrt(gamma) eps): they never change
# the stored rows, so they are not part of a store's identity; latest.json carries them to stage two.
MIXING = ("beta_init", "gamma", "gamma_mode")
NOT_RESULTS = ("out", "jobs", "device", "dataset") + MIXING   # options that do not change the rows


def result_config(cfg: dict) -> str:
    """The settings that determine the store's rows, as canonical JSON."""
    return config_json({k: v for k, v in cfg.items() if k not in NOT_RESULTS})


def mixing(cfg: dict) -> dict:
    """The mixing settings of a glag-generate call, as stage two reads them from latest.json."""
    return {k: cfg[k] for k in MIXING}


def default_out(bank, cfg: dict) -> Path:
    """<bank folder>/synthetic/<hash of the settings and the bank>.h5: settings never clash."""
    key = result_config(cfg) + bank.fingerprint
    return Path(bank.path).parent / SYNTHETIC_DIR / (hashlib.sha256(key.encode()).hexdigest()[:12] + ".h5")


def planned_bytes(need, tail, counts, cfg: dict, feature_dim: int) -> int:
    """Bytes of the store for the moments' counts (train counts, x (V + 1) when pooled with views)."""
    if cfg["dtype"] not in DTYPES:
        raise GlagError(f"--dtype {cfg['dtype']!r}: choose from {sorted(DTYPES)}")
    sample = sum(min(cfg["sample_per_class"], int(n)) for n in need)
    return plan_bytes(counts, tail, feature_dim, cfg["k"], cfg["dtype"], sample)


def check_disk(out: Path, size: int):
    free = free_bytes(out.parent)
    if free < size + DISK_MARGIN:
        raise GlagError(f"--out {out}: the store needs {size / 2**30:.2f} GiB but only {free / 2**30:.2f} GiB "
                        "are free there; free space, write it elsewhere (--out) or use --dtype float16")


def is_current(out: Path, bank, cfg: dict) -> bool:
    """A complete store for this bank with the same settings is already at `out`."""
    if not out.is_file():
        return False
    try:
        with Store(out, bank) as s:
            return result_config(s.config) == result_config(cfg)
    except GlagError:
        return False


def store_meta(cfg: dict, need) -> dict:
    """The store attrs that describe the generation (data/store.py)."""
    return dict(feature_space="tukey", tukey_lambda=float(cfg["tukey"]), beta_init=float(cfg["beta_init"]),
                gamma=float(cfg["gamma"]), gamma_mode=cfg["gamma_mode"], k=int(cfg["k"]), seed=int(cfg["seed"]),
                tail_rule=cfg["tail"], balance_head=bool(cfg["balance_head"]),
                max_rows_per_class=int(cfg["max_rows_per_class"]), rows_per_epoch=int(need.sum()))


def write_store(afg, bank, out: Path, cfg: dict, size: int):
    """The fitted generator (and the inspection sample, if asked for) as one store."""
    with StoreWriter(out, bank=bank, dtype=cfg["dtype"], meta=store_meta(cfg, afg.need), config=cfg,
                     need_bytes=size) as w:
        w.set_generator(afg.arrays(), afg.need, afg.supports.source)
        if cfg["sample_per_class"]:
            w.set_sample(afg.sample(cfg["sample_per_class"]))


def warn_without_val(bank) -> None:
    """Stage two's adaptive beta (AD, on in `--method glag`) tunes beta on the bank's val split: a bank
    without one gets a warning (not an error: a store serves fixed-beta runs too)."""
    if "val" not in getattr(bank, "splits", ("val",)):
        click.echo(f"warning: {bank.path} has no val split, which stage two's adaptive beta (AD) needs: run "
                   "`glag-classify run` with --no-ad, or rebuild the bank with a val split", err=True)


def write_latest(out: Path, bank, cfg: dict) -> bool:
    """<bank folder>/synthetic/latest.json names the newest store of that folder and this call's mixing
    settings (beta_init, gamma, gamma_mode), which stage two uses by default (`make classify`).

    A store written elsewhere (--out outside that folder) leaves the pointer as it was: the bank
    folder's default must not silently become a file that may move or vanish. Returns whether it was written.
    """
    folder = Path(bank.path).parent / SYNTHETIC_DIR
    if Path(out).resolve().parent != folder.resolve():
        return False
    with atomic_file(folder / LATEST) as tmp:
        tmp.write_text(json.dumps({"store": Path(out).name, "bank_fingerprint": bank.fingerprint, "written": now(),
                                   "mixing": mixing(cfg)}, sort_keys=True, indent=1) + "\n")
    return True


def announce(out: Path, size: int, need, tail, quiet=False):
    if not quiet:
        click.echo(f"store {out}: the generator of {int(tail.sum())} tail classes, {size / 2**30:.2f} GiB; stage two "
                   f"draws its rows (gap rule: {int(need.sum()):,} synthetic rows per {int(len(need))}-class pool)",
                   err=True)
