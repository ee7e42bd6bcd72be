"""Small pieces every console script shares: error reporting and finding a bank."""
import functools
import sys
from pathlib import Path

import click

from glag.data import layout
from glag.data.errors import GlagError
from glag.data.layout import RUNS_ROOT


def friendly_errors(fn):
    """Turn bad input into a one-line `Error: ...` with exit code 1: a GlagError (also one re-raised by a
    torch DataLoader worker, whose message carries the worker's traceback), and an OSError of the
    environment (disk full, permission denied, a missing file) that names its file. Other errors are bugs
    and keep their traceback. SIGTERM ends the command as Ctrl-C does (glag.data.atomic.sigterm_as_interrupt:
    no temp file is left), with exit code 143."""
    import errno

    from glag.data.atomic import Terminated, sigterm_as_interrupt
    free, perms = "free space (or raise the file-size limit) and rerun", "check its permissions or use another path"
    disk = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)    # one line even when the error names no file
    advice = {errno.ENOSPC: free, errno.EFBIG: free, errno.EDQUOT: free, errno.EACCES: perms, errno.EPERM: perms,
              errno.EROFS: perms, errno.ENOENT: "check the path"}

    def own_message(text: str) -> str:
        # torch re-raises a worker's error as "Caught GlagError in DataLoader worker process 0.
        # Original Traceback ... GlagError: <message>": keep <message>
        if "Original Traceback" not in text:
            return text
        last = [line for line in text.splitlines() if "GlagError: " in line]
        return last[-1].split("GlagError: ", 1)[1] if last else text.splitlines()[0]

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with sigterm_as_interrupt():
                return fn(*args, **kwargs)
        except GlagError as e:
            raise click.ClickException(own_message(str(e))) from None
        except OSError as e:
            if not (e.errno in disk or (e.errno in advice and e.filename)):
                raise
            where = f"{e.filename}: " if e.filename else ""
            raise click.ClickException(f"{where}{e.strerror or e}; {advice[e.errno]}") from None
        except KeyboardInterrupt as e:
            killed = isinstance(e, Terminated)
            click.echo(f"{'terminated (SIGTERM)' if killed else 'interrupted'}; outputs were not written (rerun to "
                       "resume)", err=True)
            sys.exit(143 if killed else 130)
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


def version_option(fn):
    """--version on a command: GLAG's version and the commit it was built from (glag.data.provenance)."""
    from glag.data.provenance import code_version
    return click.version_option(code_version(), "--version", message="%(prog)s: %(version)s")(fn)


def read_saved_config(path) -> dict:
    """The options an output was made with: a run's config.json (its "cfg"), any JSON object, or the
    `config` attr of a bank or store (.h5); glag.cli.config_file."""
    from glag.cli.config_file import saved_config
    return saved_config(path)[1]


def config_option(fn):
    """--config FILE: take this command's own options from a saved config as its defaults and say which
    (glag.cli.config_file.take_saved: another tool's config and unknown keys are refused); options given
    on the command line still win."""
    def load(ctx, param, value):
        if value:
            from glag.cli.config_file import take_saved
            try:
                saved, line = take_saved(value, ctx.command)
            except GlagError as e:
                raise click.ClickException(str(e)) from None
            click.echo(line, err=True)
            ctx.default_map = dict(ctx.default_map or {}, **saved)
        return value
    return click.option("--config", type=click.Path(exists=True, dir_okay=False), is_eager=True, expose_value=False,
                        callback=load, help="Reuse the options of a saved config of this tool: a run's config.json, "
                                            "a bank or a store, or a JSON object of options; options given here "
                                            "win.")(fn)
