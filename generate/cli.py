"""glag-generate: the Adaptive Feature Generator fitted on a feature bank, written as a synthetic store. Thin: the
options (answered without importing torch) and a call of glag.generate.run."""
import click

from glag.cli.options import Beta, Device, NonNegative, Positive
from glag.cli.tensorboard import option as tensorboard_option
from glag.cli.util import config_option, friendly_errors, resolve_bank, version_option
from glag.data.errors import GlagError
from glag.data.names import GAMMA_MODES, MOMENTS_FROM, STORE_DTYPES
from glag.generate.tail import TAIL_RULES


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
@click.option("--dtype", type=click.Choice(sorted(STORE_DTYPES)), default="float32", show_default=True,
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
    from glag.data.bank import Bank
    from glag.generate.run import run
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


if __name__ == "__main__":
    main()
