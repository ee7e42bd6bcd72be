"""`glag-verify PATH`: check a feature bank or a synthetic store against the fingerprint stored in it.

    glag-verify runs/cifar100-im100/graloss/seed0/bank.h5      # prints "ok", or one Error line (exit 1)

Reads the whole file once, in chunks (glag.data.verify); readers never do this on open.
"""
import click

from glag.cli.util import friendly_errors, version_option
from glag.data.verify import verify


@click.command()
@version_option
@click.argument("path", type=click.Path(dir_okay=False))
@friendly_errors
def main(path):
    """Recompute the fingerprint of PATH (a bank.h5 or a synthetic store) and compare it with the stored one."""
    note = verify(path)
    if note:
        click.echo(note, err=True)
    click.echo("ok")


if __name__ == "__main__":
    main()
