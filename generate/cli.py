"""glag-generate: synthetic tail features for a feature bank (the Adaptive Feature Generator)."""
import time
from pathlib import Path

import click

from glag.data.bank import Bank
from glag.cli.tensorboard import open_board
from glag.cli.tensorboard import option as tensorboard_option
from glag.cli.util import config_option, echo_progress, friendly_errors, resolve_bank, version_option
from glag.data.errors import GlagError
from glag.data.mixing import GAMMA_MODES
from glag.cli.options import Beta, Device, NonNegative, Positive
from glag.data.store import DTYPES
from glag.generate.afg import MOMENTS_FROM, AdaptiveFeatureGenerator
from glag.generate.tail import TAIL_RULES
from glag.generate.writer import (announce, check_disk, default_out, is_current, planned_bytes, warn_without_val,
                                  write_latest, write_store)


@click.command()
@version_option
@config_option
@click.option("--bank", type=click.Path(dir_okay=False), default=None, show_default=True,
              help="Feature bank; default: the bank of --dataset, else the current bank (runs/current.json).")
@click.option("--dataset", envvar="DATASET", default=None, show_default=True,
              help="Use this dataset's bank under runs/ (env DATASET): the current one if it is of this dataset.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, show_default=True,
              help="Store path; default: <bank folder>/synthetic/<hash of the settings>.h5.")
@click.option("--beta-init", type=Beta(), default=0.6, show_default=True,
              help="Initial confidence beta in [0, 1] (Eq. 8-9), applied by stage two.")
@click.option("--k", type=Positive(), default=3, show_default=True, help="Support classes per tail sample (Eq. 7).")
@click.option("--gamma", type=NonNegative(), default=0.0, show_default=True,
              help="Dispersion gamma (Eq. 9), applied by stage two.")
@click.option("--gamma-mode", type=click.Choice(GAMMA_MODES), default="isotropic", show_default=True,
              help="gamma * I, or gamma added to every covariance entry (free-lunch code).")
@click.option("--tukey", default=0.5, show_default=True, help="Tukey ladder-of-powers lambda; 1 = none.")
@click.option("--moments-from", type=click.Choice(MOMENTS_FROM), default="base", show_default=True,
              help="Class moments from the un-augmented train rows, or from them and the bank's augmented views.")
@click.option("--tail", type=click.Choice(sorted(TAIL_RULES)), default="max-count", show_default=True,
              help="Rule that picks the tail classes.")
@click.option("--tail-max-count", default=100, show_default=True, help="max-count rule: tail if N_k <= this.")
@click.option("--tail-fraction", default=0.5, show_default=True,
              help="fraction rule: this fraction of the classes, the smallest.")
@click.option("--max-rows-per-class", default=0, show_default=True,
              help="Cap on a class's synthetic share per epoch (0 = the full gap N_max - N_k).")
@click.option("--balance-head/--no-balance-head", default=True, show_default=True,
              help="Non-tail classes also get their gap, drawn from their own distribution.")
@click.option("--dtype", type=click.Choice(sorted(DTYPES)), default="float32", show_default=True,
              help="Type of the stored factors (float16 halves the store; stage two computes in float32 or bf16).")
@click.option("--sample-per-class", default=0, show_default=True,
              help="Also write this many synthetic rows per class, drawn as stage two draws them (inspection, plots).")
@click.option("--seed", default=0, show_default=True)
@click.option("--device", type=Device(), default="auto", show_default=True, help="auto, cpu or cuda[:n].")
@click.option("--jobs", default=0, show_default=True,
              help="Worker threads for per-class and per-batch work (0 = cores, at most 8; -1 = all cores).")
@tensorboard_option()
@click.option("--dry-run", is_flag=True, help="Print the plan and store size, write nothing.")
@click.option("--force", is_flag=True, help="Regenerate even if an identical store exists.")
@friendly_errors
def main(**cfg):
    """Fit the Adaptive Feature Generator on a feature bank and write it as a synthetic store (Eq. 5-10)."""
    dry_run, force = cfg.pop("dry_run"), cfg.pop("force")
    check_tail_options(click.get_current_context(), cfg["tail"])
    cfg["bank"] = str(resolve_bank(cfg["bank"], cfg["dataset"]))
    with Bank(cfg["bank"]) as bank:
        run(bank, cfg, dry_run=dry_run, force=force)


def check_tail_options(ctx, rule: str) -> None:
    """A rule's own option given with another rule would be silently ignored: refuse it instead."""
    from click.core import ParameterSource
    for other in TAIL_RULES:
        option = "tail_" + other.replace("-", "_")
        if other != rule and ctx.get_parameter_source(option) is ParameterSource.COMMANDLINE:
            raise GlagError(f"--tail-{other} applies to --tail {other} only (the rule is {rule}); "
                            f"add --tail {other} or drop it")


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


if __name__ == "__main__":
    main()
