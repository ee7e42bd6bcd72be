"""`glag-extract-group`: many stage-one runs of one dataset at once on one device, one bank each.

    glag-extract-group --dataset cifar10-jpeg --losses ce,graloss,logit_adjust,balanced_softmax,ldam --seeds 0,1,2
    glag-extract-group --dataset digits --losses ce,graloss --seeds 0,1 --threads 1

Every run (loss x seed) is the run `glag-extract --loss L --seed S` would make, with its bank and
checkpoint at the same place (runs/<dataset>-im<IM>/<loss>/seed<s>/), trained together as one
grouped network (docs/stage-one.md, "Many runs at once on one GPU"). Every other option is
glag-extract's and applies to every run; a rerun resumes from the runs' checkpoints.
"""
import click

from glag.cli.util import config_option, friendly_errors, version_option
from glag.data.errors import GlagError
from glag.data.layout import RUNS_ROOT
from glag.extract.hostmem import keep_freed_memory
from glag.extract.names import LOSS_NAMES
from glag.extract.options import apply_options

# glag-extract's options that name one run: here --losses, --seeds and --runs-root name them all. Banks of a
# group never become the current one (runs/current.json), as in a reproduction.
PER_RUN_OPTIONS = ("loss", "seed", "out", "current")


def parse_losses(text: str) -> list:
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in names if x not in LOSS_NAMES]
    if bad or not names:
        raise GlagError(f"--losses {text!r}: unknown loss(es) {bad}; choose from {list(LOSS_NAMES)}, comma-separated")
    return names


def parse_seeds(text: str) -> list:
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise GlagError(f"--seeds {text!r}: give seeds as integers, comma-separated, e.g. 0,1,2") from None
    if not seeds:
        raise GlagError(f"--seeds {text!r}: give at least one seed, e.g. 0,1,2")
    return seeds


@click.command(context_settings={"max_content_width": 110})
@version_option
@click.option("--losses", default="graloss", show_default=True,
              help=f"Stage-one losses, comma-separated (from {', '.join(LOSS_NAMES)}).")
@click.option("--seeds", default="0", show_default=True, help="Seeds, comma-separated; one run per loss and seed.")
@click.option("--max-group", type=click.IntRange(min=1), default=None, show_default="all runs",
              help="At most this many runs train at once; more are trained group after group.")
@click.option("--runs-root", type=click.Path(file_okay=False), default=RUNS_ROOT, show_default=True,
              help="Root of the banks: <runs-root>/<dataset>-im<IM>/<loss>/seed<s>/bank.h5.")
@config_option
@apply_options
@friendly_errors
def main(losses, seeds, max_group, runs_root, **options):
    """Train stage one for every loss x seed at once on one device and write one bank per run."""
    losses, seeds = parse_losses(losses), parse_seeds(seeds)     # refused before torch is imported
    from glag.extract.group_run import run_group
    keep_freed_memory()
    banks = run_group(options, losses, seeds, runs_root, max_group)
    if banks is not None:
        click.echo(f"{len(banks)} banks written", err=True)


main.params = [p for p in main.params if p.name not in PER_RUN_OPTIONS]

if __name__ == "__main__":
    main()
