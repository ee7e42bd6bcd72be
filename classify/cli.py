"""`glag-classify`: stage two on a cached feature bank (run, sweep, table). Thin: parse, call, print."""
import click
from click.core import ParameterSource

from glag.cli.util import RUNS_ROOT, config_option, friendly_errors, version_option
from glag.data.errors import GlagError
from glag.parallel import backend_options

from .options import run_options
from .table import bank_of, csv_text, find_runs, markdown


@click.group()
@version_option
def main():
    """Stage two of GLAG: heads (cRT, LWS, tau-norm, NCM, post-hoc LA) and GLAG (synthetic tail rows,
    KD, adaptive beta) trained on the cached feature bank, never on images."""


@main.command()
@config_option
@run_options
@friendly_errors
def run(**options):
    """Train or calibrate one stage-two head; writes <bank folder>/stage2/<run>/ and prints its table."""
    from .run import run_stage2
    ctx = click.get_current_context()
    explicit = {k for k in options if ctx.get_parameter_source(k) is not ParameterSource.DEFAULT}
    path = run_stage2(options, explicit)
    for split in ("val", "test"):
        try:
            click.echo(markdown([path], split, [bank_of(path)]))
        except GlagError:  # a bank without a val split
            pass


@main.command()
@click.option("--grid", "grid", default="table7", show_default=True,
              help="A shipped grid (table6, table7, heads, glag-beta) or a JSON file {base, grid, runs}.")
@click.option("--bank", default="", show_default=True, help="Bank for grid entries that name none.")
@click.option("--dataset", default="", show_default=True, help="Fills {dataset} in the grid; finds the bank.")
@click.option("--runs-root", default=RUNS_ROOT, show_default=True, help="Fills {runs_root}; searched for banks.")
@click.option("--im", default=None, type=float, show_default=True,
              help="Fills {experiment} = <dataset>-im<IM>; default: the one such folder under --runs-root.")
@click.option("--jobs", default=2, show_default=True, help="Runs in parallel (processes, threads or dask tasks).")
@backend_options("loky")
@click.option("--out", default="auto", show_default=True,
              help="Folder of table.md / table.csv; auto: <bank folder>/stage2/sweeps/<grid>.")
@click.option("--mixed-banks", is_flag=True, default=False,
              help="Compare banks that differ in more than the stage-one loss and seed (epochs, views, data, ...); "
                   "without it such a sweep is refused before it runs. Rows then name the differing settings.")
@friendly_errors
def sweep(grid, bank, dataset, runs_root, im, jobs, backend, scheduler, out, mixed_banks):
    """Run a grid of stage-two configurations in parallel; write and print one comparison table. Banks, stores
    and every value are checked before the first run."""
    from .sweep import run_sweep
    runs, folder = run_sweep(grid, {"bank": bank, "dataset": dataset, "runs_root": runs_root, "im": im}, jobs, out,
                             backend, scheduler, mixed_banks)
    click.echo((folder / "table.md").read_text())
    click.echo(f"{len(runs)} runs; tables in {folder}", err=True)


@main.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--split", type=click.Choice(["val", "test"]), default="test", show_default=True)
@click.option("--stage-one", "banks", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Bank(s) whose stage-one accuracy heads the table (repeatable).")
@click.option("--csv", "as_csv", is_flag=True, default=False,
              help="CSV instead of markdown: one line per run, val and test (fractions); --split ignored.")
@friendly_errors
def table(runs, split, banks, as_csv):
    """Print the accuracy table of finished runs: RUNS are run folders or folders holding them (searched
    recursively for run folders with a metrics.json)."""
    found = find_runs(runs)
    click.echo(csv_text(found) if as_csv else markdown(found, split, banks), nl=not as_csv)


if __name__ == "__main__":
    main()
