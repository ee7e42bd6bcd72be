"""One glag-generate call: plan, check the disk, fit, write the store and the latest.json pointer."""
import time
from pathlib import Path

import click

from glag.cli.tensorboard import open_board
from glag.cli.util import echo_progress
from glag.generate.afg import AdaptiveFeatureGenerator
from glag.generate.writer import (announce, check_disk, default_out, is_current, planned_bytes, warn_without_val,
                                  write_latest, write_store)


def run(bank, cfg: dict, dry_run=False, force=False):
    """Plan, check the disk, fit, write the store and the latest.json pointer."""
    board_root = cfg.pop("tensorboard", None)    # where a summary goes, not what is drawn: kept out of the store
    afg = AdaptiveFeatureGenerator(cfg)
    tail, need = afg.plan(bank.train_counts)
    out = Path(cfg["out"]) if cfg["out"] else default_out(bank, cfg)
    cfg["out"] = str(out)
    pooled = 1 + (bank.views if cfg["moments_from"] == "views" else 0)
    size = planned_bytes(need, tail, bank.train_counts * pooled, cfg, bank.feature_dim)
    announce(out, size, need, tail)
    warn_without_val(bank)
    if not tail.any():
        click.echo(f"no class is a tail class by --tail {cfg['tail']} (smallest class: "
                   f"{int(min(c for c in bank.train_counts if c > 0))} images): nothing is calibrated; every class "
                   "is balanced from its own distribution", err=True)
    if dry_run:
        return out
    if not force and is_current(out, bank, cfg):
        click.echo(f"up to date: {out} (same bank, same generator; --force to refit); stage two will mix with "
                   f"beta_init {cfg['beta_init']}, gamma {cfg['gamma']} ({cfg['gamma_mode']})", err=True)
        finish(out, bank, cfg)
        return out
    check_disk(out, size)
    afg.fit(bank, progress=_throttled(bank.rows("train") * pooled, "moments"), log=lambda m: click.echo(m, err=True))
    click.echo("fit: " + ", ".join(f"{k} {v:.1f}s" for k, v in afg.fit_seconds.items()), err=True)
    write_store(afg, bank, out, cfg, size)
    finish(out, bank, cfg)
    write_board(board_root, out, int(need.sum()), tail, afg.fit_seconds)
    return out


def finish(out: Path, bank, cfg: dict) -> None:
    """Point latest.json at the store (when it sits in the bank's synthetic folder) and print its path."""
    if not write_latest(out, bank, cfg):
        click.echo(f"note: {out} is outside {Path(bank.path).parent / 'synthetic'}, so latest.json still names the "
                   f"store it named; pass --store {out} to glag-classify", err=True)
    click.echo(out)


def write_board(root, out: Path, rows: int, tail, seconds: dict) -> None:
    """--tensorboard: one summary of the store written (gap rows per epoch, tail classes, fit seconds) in
    <DIR>/generate-<store>."""
    board = open_board(root, f"generate-{out.stem}")
    try:
        summary = dict(rows=rows, tail_classes=int(tail.sum()), **{f"seconds_{k}": v for k, v in seconds.items()})
        board.scalars(0, summary, "generate/")
    finally:
        board.close()


def _throttled(total: int, what: str):
    """A progress callback that prints at most every 2 s (and at the end)."""
    started, last = time.time(), [0.0]

    def tick(done: int):
        if time.time() - last[0] > 2 or done == total:
            echo_progress(done, total, started, what)
            last[0] = time.time()
    return tick
