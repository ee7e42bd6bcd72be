"""Small pieces every console script shares: error reporting and finding a bank."""
import functools
import os
import sys
from pathlib import Path

import click

from glag.data.bank import find_banks
from glag.data.datasets import canonical_name
from glag.data.errors import GlagError

RUNS_ROOT = "runs"


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


def resolve_bank(bank, dataset=None, runs_root=RUNS_ROOT) -> Path:
    """--bank if given; else runs/<dataset>/bank.h5 for --dataset or $DATASET; else the only bank there is."""
    if bank:
        return Path(bank)
    dataset = dataset or os.environ.get("DATASET")
    if dataset:
        dataset = canonical_name(dataset)
        path = Path(runs_root) / dataset / "bank.h5"
        if path.is_file():
            return path
        raise GlagError(f"{path}: no bank for dataset {dataset!r}; run `make features DATASET={dataset}` "
                        f"or pass --bank (banks found: {_names(runs_root)})")
    banks = find_banks(runs_root)
    if len(banks) == 1:
        return banks[0]
    raise GlagError(f"--bank: {'several banks' if banks else 'no bank'} under {runs_root}/ "
                    f"({_names(runs_root)}); pass --bank PATH or --dataset NAME")


def _names(runs_root):
    banks = find_banks(runs_root)
    return ", ".join(str(b) for b in banks) if banks else "none"


def echo_progress(done: int, total: int, started: float, what: str, extra: str = ""):
    """One progress line on stderr: `what done/total (pct) rate ETA extra`."""
    import time
    elapsed = max(time.time() - started, 1e-9)
    rate = done / elapsed
    eta = (total - done) / rate if rate > 0 else float("inf")
    click.echo(f"{what} {done}/{total} ({100 * done / max(total, 1):.0f}%) {rate:,.1f}/s "
               f"ETA {eta:,.0f}s {extra}".rstrip(), err=True)
