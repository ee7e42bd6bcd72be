"""Small pieces every console script shares: error reporting and finding a bank."""
import functools
import sys
from pathlib import Path

import click

from glag.data import layout
from glag.data.errors import GlagError
from glag.data.layout import RUNS_ROOT


def friendly_errors(fn):
    """Turn GlagError (bad input) into a one-line `Error: ...` with exit code 1."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except GlagError as e:
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt:
            click.echo("interrupted; outputs were not written (rerun to resume)", err=True)
            sys.exit(130)
    return wrapper


def resolve_bank(bank, dataset=None, runs_root=RUNS_ROOT, say: bool = True) -> Path:
    """The bank a tool works on (glag.data.layout.resolve_bank); says on stderr which and why when not given."""
    path, how = layout.resolve_bank(bank, dataset, runs_root)
    if say and how != "--bank":
        click.echo(f"bank: {path} ({how})", err=True)
    return path


def echo_progress(done: int, total: int, started: float, what: str, extra: str = ""):
    """One progress line on stderr: `what done/total (pct) rate ETA extra`."""
    import time
    elapsed = max(time.time() - started, 1e-9)
    rate = done / elapsed
    eta = (total - done) / rate if rate > 0 else float("inf")
    click.echo(f"{what} {done}/{total} ({100 * done / max(total, 1):.0f}%) {rate:,.1f}/s "
               f"ETA {eta:,.0f}s {extra}".rstrip(), err=True)
