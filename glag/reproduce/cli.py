"""`glag-reproduce`: stage one per loss and seed, every stage-two method from each bank, one table."""
import click

from glag.cli.util import friendly_errors, version_option

from .run import reproduce_options


@click.command()
@version_option
@reproduce_options
@friendly_errors
def main(**options):
    """The whole comparison on one dataset: stage one per loss and seed, then every stage-two method
    from each bank, one mean ± std table (runs/<dataset>-im<IM>/results/). Reruns skip finished steps."""
    from .run import run_reproduce
    for folder in run_reproduce(options):
        click.echo((folder / "table.md").read_text())
        click.echo(f"results in {folder}", err=True)


if __name__ == "__main__":
    main()
