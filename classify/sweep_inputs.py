"""A sweep's inputs, checked before its first run: banks made alike, and a store wherever a run needs one.

A comparison across banks (Table 6: cRT / LWS / MiSLAS on the CE, GraLoss and logit-adjust banks)
means something only when the banks differ in what is compared, the stage-one loss, and in
nothing else: a 5-epoch CE bank beside a 30-epoch GraLoss bank compares schedules. `check_banks`
refuses such a sweep in one line naming the settings and the banks (or, with --mixed-banks, returns
the settings so every row names them); `check_stores` refuses a sweep some of whose runs would fail
for want of a synthetic store, before any of them starts.
"""
import os
from pathlib import Path

from glag.data.errors import GlagError
from glag.data.layout import bank_config
from glag.extract.names import LOSS_NAMES

# Stage-one settings that do not change the bank's features (how it ran, where it went), or that the
# comparison is about (the loss and its options) or labels anyway (the seed); data_source is where the
# data was read, data_fingerprint what it was.
NOT_COMPARED = frozenset({"device", "amp", "threads", "compile", "compile_mode", "out", "dump_only", "resume",
                          "data_root", "groups", "stop_after_epochs", "workers", "preload_mb", "dump_batch_size",
                          "current", "tensorboard", "decode", "views_dtype", "views_logits", "loss", "seed",
                          "dataset_meta", "data_source"})
SHOWN = ("dataset", "im", "seed", "epochs", "backbone", "views")   # named in a row label first, when they differ


def compared(key: str) -> bool:
    return key not in NOT_COMPARED and not any(key.startswith(f"{loss}_") for loss in LOSS_NAMES)


def differences(configs: dict) -> dict:
    """{setting: {bank: value}} for the settings in which the banks' configs differ (a setting a bank does
    not record is left out for that bank: banks from before it existed)."""
    keys = sorted({k for cfg in configs.values() for k in cfg if compared(k)})
    out = {}
    for key in keys:
        values = {bank: cfg[key] for bank, cfg in configs.items() if key in cfg}
        if len({repr(v) for v in values.values()}) > 1:
            out[key] = values
    return out


def short(bank, banks) -> str:
    """A bank's folder relative to the banks' common folder, e.g. ce/seed0."""
    parents = [str(Path(b).parent) for b in banks]
    root = os.path.commonpath(parents) if len(parents) > 1 else str(Path(parents[0]).parent)
    return os.path.relpath(Path(bank).parent, root)


def check_banks(name: str, banks: list, mixed: bool) -> dict:
    """{bank: the settings it differs in, as "key=value, ..."} ("" when the banks are alike).

    Raises GlagError, unless `mixed`, when the banks differ in anything but the loss and the seed.
    """
    configs = {str(b): bank_config(b) for b in banks}
    diffs = differences(configs)
    seeds = {str(c.get("seed")) for c in configs.values()}
    if diffs and not mixed:
        said = "; ".join(f"{k} " + ", ".join(f"{v!r} ({short(b, banks)})" for b, v in values.items())
                         for k, values in list(diffs.items())[:3])
        raise GlagError(f"--grid {name}: its banks differ in more than the stage-one loss: {said}; build them with "
                        "the same options, or pass --mixed-banks to compare them anyway (rows then name them)")
    keys = [k for k in SHOWN if k in diffs or (k == "seed" and len(seeds) > 1)] + \
        [k for k in diffs if k not in SHOWN]
    return {b: bank_tag(configs[b], keys) for b in configs}


def bank_tag(cfg: dict, keys) -> str:
    """The bank's values of `keys` for a row label, e.g. "stage-one seed=1, epochs=5"."""
    return ", ".join(f"{'stage-one ' if k == 'seed' else ''}{k}={cfg.get(k)}" for k in keys)


def needs_store(options: dict, explicit) -> bool:
    """The run trains on synthetic rows (its method's preset, unless the grid set synthetic itself)."""
    from .config import apply_preset
    return bool(apply_preset(options, set(explicit))["synthetic"])


def store_missing(options: dict) -> str | None:
    """What is missing for the run's store (--store auto: the bank's synthetic/latest.json), or None."""
    store = options.get("store")
    if store not in ("auto", "", None):
        return None if Path(store).is_file() else str(store)
    pointer = Path(options["bank"]).parent / "synthetic" / "latest.json"
    return None if pointer.is_file() else str(pointer)


def check_stores(name: str, configs: list) -> None:
    """Refuse the sweep when a run needs a synthetic store its bank does not have, naming the glag-generate
    that makes it; nothing has run yet."""
    missing = {}
    for number, (options, explicit) in enumerate(configs, 1):
        if needs_store(options, explicit):
            what = store_missing(options)
            if what:
                missing.setdefault((options["bank"], what), []).append(number)
    if missing:
        said = "; ".join(f"run(s) {', '.join(map(str, nums))}: no {what} (`glag-generate --bank {bank}`)"
                         for (bank, what), nums in missing.items())
        raise GlagError(f"--grid {name}: runs need a synthetic store their bank does not have, nothing was run: "
                        f"{said}")
