"""One stage-two run, start to finish: resolve the config, fit, write the run folder atomically."""
import json
from pathlib import Path

import click

from glag.data.atomic import atomic_dir
from glag.data.bank import Bank
from glag.cli.tensorboard import open_board
from glag.cli.util import resolve_bank
from glag.data.errors import GlagError
from glag.data.store import Store
from glag.data.validate import validate_bank

from .config import AUTO, apply_preset, check, resolve_auto, run_dir, same_config
from .outputs import write_run
from .pipeline import fit, run_notes
from .report import write_report


def open_store(cfg: dict, bank):
    """The synthetic store for `bank` (None with --no-synthetic); refuses one made from another bank.

    `store.mixing` holds the beta_init / gamma / gamma_mode that `auto` options resolve to: those of
    the last `glag-generate` call, recorded in latest.json, when latest.json names this store (a store
    is reused, not redrawn, when only they change); else the store's own attrs.
    """
    if not cfg["synthetic"]:
        return None
    pointer = bank.path.parent / "synthetic" / "latest.json"
    latest = _read_pointer(pointer) if pointer.is_file() else None
    path = cfg["store"]
    if path in (AUTO, "", None):
        if latest is None:
            raise GlagError(f"--store auto: no {pointer}; run `glag-generate --bank {bank.path}` first, "
                            "pass --store PATH, or --no-synthetic")
        path = pointer.parent / latest["store"]
    store = Store(path, bank)
    named = latest is not None and (pointer.parent / latest["store"]).resolve() == Path(path).resolve()
    keys = ("beta_init", "gamma", "gamma_mode")
    store.mixing = {k: store.attrs[k] for k in keys if k in store.attrs}
    if named and isinstance(latest.get("mixing"), dict):
        store.mixing.update({k: v for k, v in latest["mixing"].items() if k in keys and v is not None})
    return store


def _read_pointer(pointer: Path) -> dict:
    try:
        latest = json.loads(pointer.read_text())
        str(latest["store"])
    except (ValueError, KeyError, TypeError):
        raise GlagError(f"{pointer}: expected JSON {{\"store\": \"<file name>\"}}; rerun `glag-generate`") from None
    return latest


def _check_space(cfg, store):
    lam = store.attrs.get("tukey_lambda") if store is not None else None
    if cfg["space"] == "tukey" and lam is not None and float(lam) != cfg["tukey_lambda"]:
        raise GlagError(f"--tukey-lambda {cfg['tukey_lambda']}: the store's rows use lambda {lam}; "
                        "real rows must match, so leave it at auto")


def run_stage2(options: dict, explicit=(), resume: bool = False, progress: bool = True) -> Path:
    """Run one stage-two configuration and return its run folder.

    Args:
        options: every key of config.OPTIONS (plus stage-two loss options), as the CLI gives them.
        explicit: keys the user set; the --method preset fills the others.
        resume: a finished run folder of the same config is kept and returned (sweeps); otherwise an
            existing folder is an error unless cfg["overwrite"].
    Returns:
        Path of the run folder.
    """
    cfg = apply_preset(options, set(explicit))
    bank = Bank(resolve_bank(cfg["bank"] or None, cfg["dataset"] or None, cfg["runs_root"]))
    with bank:
        store = open_store(cfg, bank)
        try:
            cfg = resolve_auto(cfg, bank, store)
            check(cfg, bank)
            _check_space(cfg, store)
            target = run_dir(cfg, bank.path)
            if target.exists() and resume and same_config(target, cfg):
                return target
            if target.exists() and not cfg["overwrite"]:
                raise GlagError(f"{target}: run folder exists; pass --overwrite or another --run name")
            validate_bank(bank, splits=splits_read(cfg, bank), views=cfg["views"],
                          lam=cfg["tukey_lambda"] if cfg["space"] == "tukey" else None,
                          fix="use --space raw (the default) or --tukey-lambda 1")
            for note in run_notes(cfg, bank):
                click.echo(f"note: {note}", err=True)
            result = fit(cfg, bank, store, progress=progress)
            _write(target, cfg, bank, store, result, resume)
            write_board(cfg, target.name, result)
        finally:
            if store is not None:
                store.close()
    return target


def splits_read(cfg: dict, bank) -> tuple:
    """The bank splits a run reads: train only for heads that train on it or fit from it (a post-hoc head reads
    the stage-one head, val and test), so only those are validated."""
    from .heads import HEADS
    head = HEADS[cfg["head"]]
    return tuple(s for s in bank.splits if s != "train" or head.trainable or head.needs_train_rows)


def _write(target, cfg, bank, store, result, resume):
    try:
        with atomic_dir(target, overwrite=cfg["overwrite"]) as tmp:
            write_run(tmp, target.name, cfg, bank, store, result)
            write_report(tmp, plots=cfg["plots"])
    except OSError:
        if resume and same_config(target, cfg):
            return  # a concurrent sweep finished the same run first: its folder is as good as ours
        if target.exists():
            raise GlagError(f"{target}: another process wrote this run folder meanwhile; nothing of this run "
                            "was kept (rerun with --overwrite or another --run)") from None
        raise
    click.echo(f"wrote {target}", err=True)


def write_board(cfg: dict, name: str, result) -> None:
    """--tensorboard: the run's history.json per epoch, AD's mean tail beta, and the final val/test accuracy,
    in <DIR>/<run>. Written once the run folder is, from the same numbers (a stage-two run takes minutes)."""
    board = open_board(cfg.get("tensorboard"), name)
    try:
        for record in result.history:
            # AD's refit repeats the epochs: its records carry pass "refit", its curves go under their own tags
            prefix = f"stage2/{record['pass']}/" if "pass" in record else "stage2/"
            board.scalars(record["epoch"], {k: record.get(k) for k in ("loss", "ce", "kd", "lr", "alpha", "rows",
                                                                        "val_overall", "seconds")}, prefix)
        beta = result.beta
        if beta is not None and beta.adaptive and len(beta.tail):
            for epoch, values in enumerate(beta.trajectory):       # the tail betas at the start of each epoch
                board.scalars(epoch, {"beta_mean": float(sum(values) / len(values))}, "stage2/")
        for split in ("val", "test"):
            scores = result.metrics.get(split) or {}
            board.scalars(cfg["epochs"], {k: scores.get(k) for k in ("overall", "many", "medium", "few")},
                          f"stage2/final/{split}/")
    finally:
        board.close()
