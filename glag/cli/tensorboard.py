"""`--tensorboard DIR` on every tool: TensorBoard event files, one sub-folder per run (an optional extra).

The JSON records the tools write anyway (bank.history.json, a run's history.json and metrics.json) stay
the reference; the events carry the same numbers for TensorBoard's live curves:

    board = open_board(options.get("tensorboard"), "graloss-seed0")   # NoBoard() when the option is absent
    board.scalars(epoch, {"loss": 0.41, "alpha": None}, prefix="train/")   # None / NaN values are skipped
    board.close()

The SummaryWriter (torch.utils.tensorboard, which needs the `tensorboard` package) is made on the first
write, so a run that writes nothing leaves no folder; without the package, or with a folder that cannot
be made or written (under a regular file, in a read-only folder), `--tensorboard` is refused when the
options are parsed, before any work (and again by stage two's config check, for sweeps and the API).
"""
import math
import os
import re
from pathlib import Path

import click

from glag.data.errors import GlagError
from glag.extras import install_hint

INSTALL = install_hint("tensorboard")
HELP = ("Also write TensorBoard events under this folder, one sub-folder per run "
        f"(needs the tensorboard extra: {INSTALL}).")


def missing() -> str | None:
    """The one-line complaint when TensorBoard events cannot be written here, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401  (raises ImportError without tensorboard)
    except ImportError:
        return f"--tensorboard: the tensorboard package is not installed; {INSTALL}"
    return None


def unwritable(folder) -> str | None:
    """The one-line complaint when events cannot go under `folder` (made if need be), else None."""
    folder = Path(folder)
    there = folder
    while not there.exists() and there != there.parent:     # the nearest part of the path that exists
        there = there.parent
    if not there.is_dir():
        return f"--tensorboard {folder}: {there} is a file, not a folder; give a folder (it is made if need be)"
    if not os.access(there, os.W_OK | os.X_OK):
        return f"--tensorboard {folder}: permission denied writing in {there}; give a folder you can write"
    return None


def complaint(folder) -> str | None:
    """Why --tensorboard `folder` cannot work here (the package missing, the folder unwritable), or None."""
    return (missing() or unwritable(folder)) if folder else None


def check_option(ctx, param, value):
    """click callback: refuse --tensorboard at parse time, so a long training never starts without it."""
    problem = complaint(value)
    if problem:
        raise click.ClickException(problem)
    return value


def option(**kw):
    """The --tensorboard option as every tool declares it (default: off)."""
    kw.setdefault("default", None)
    kw.setdefault("show_default", "off")
    return click.option("--tensorboard", type=click.Path(file_okay=False), callback=check_option, help=HELP, **kw)


class NoBoard:
    """What a tool writes to without --tensorboard: nothing."""

    def scalars(self, step: int, values: dict, prefix: str = "") -> None:
        pass

    def close(self) -> None:
        pass


class Board(NoBoard):
    """Scalars of one run in `folder`; the SummaryWriter is made on the first write."""

    def __init__(self, folder):
        self.folder, self._writer = Path(folder), None

    def scalars(self, step: int, values: dict, prefix: str = "") -> None:
        """add_scalar(prefix + name, value, step) for each number of `values`; flushed, so curves show live."""
        numbers = {k: float(v) for k, v in values.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        if not numbers:
            return
        writer = self._open()
        for name, value in numbers.items():
            writer.add_scalar(prefix + name, value, int(step))
        writer.flush()

    def _open(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter
            self._writer = SummaryWriter(log_dir=str(self.folder))
        return self._writer

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def run_folder_name(name: str) -> str:
    """A run's name as one plain folder name (a stage-two --run or a path-like label stays one level)."""
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", str(name)).strip("._") or "run"


def open_board(root, name: str) -> NoBoard:
    """Board(root / name), or NoBoard() when `root` is empty (the option not given)."""
    if not root:
        return NoBoard()
    problem = complaint(root)      # reached from the Python API too, where no click callback ran
    if problem:
        raise GlagError(problem)
    return Board(Path(root) / run_folder_name(name))
