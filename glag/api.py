"""GLAG from Python: the three stages with the same options, defaults and checks as the console scripts.

    import glag.api as glag
    bank = glag.extract(dataset="digits", loss="graloss", epochs=30)       # -> Path of bank.h5
    store = glag.generate(bank=bank, beta_init=0.6)                          # -> Path of the store
    run = glag.classify(bank=bank, method="glag")                            # -> Path of the run folder
    glag.load_run(run)["metrics"]["test"]["overall"]
    again = glag.classify(config=run / "config.json", beta_init=0.3)        # a saved config, one change

Keyword arguments are the command-line options with underscores (`beta_init` for
`--beta-init`); every option left out takes the tool's default, as on the command
line, and `config=` reads a saved config first. Bad input raises GlagError with
the tool's one-line message.
"""
import json
from pathlib import Path

import click

from glag.data.errors import GlagError


def _options(command: click.Command, prog: str, given: dict) -> tuple:
    """(every option of `command` as the CLI would resolve it, the names the caller set).

    Values pass through click's own types and callbacks, so they are checked as on the command line.
    """
    given = dict(given)
    saved = given.pop("config", None)
    defaults = {}
    if saved is not None:
        from glag.cli.util import _NOT_REUSED, read_saved_config
        names = {p.name for p in command.params}
        defaults = {k: v for k, v in read_saved_config(saved).items() if k in names and k not in _NOT_REUSED}
    unknown = sorted(set(given) - {p.name for p in command.params})
    if unknown:
        raise GlagError(f"{prog}: unknown option(s) {unknown}; see `{prog} --help`")
    try:
        ctx = command.make_context(prog, [], default_map=dict(defaults, **given))
    except click.ClickException as e:
        raise GlagError(f"{prog}: {e.format_message()}") from None
    return ctx.params, set(given) | set(defaults)


def extract(**options) -> Path:
    """Stage one (glag-extract): train, dump the bank; returns its path (None when stopped early)."""
    from glag.extract.cli import main
    from glag.extract.pipeline import run_extract
    params, _ = _options(main, "glag-extract", options)
    return run_extract(params)


def generate(**options) -> Path:
    """The AFG (glag-generate): write the synthetic store of a bank; returns its path."""
    from glag.data.bank import Bank
    from glag.cli.util import resolve_bank
    from glag.generate.cli import main, run
    params, _ = _options(main, "glag-generate", options)
    dry_run, force = params.pop("dry_run"), params.pop("force")
    params["bank"] = str(resolve_bank(params["bank"], params["dataset"]))
    with Bank(params["bank"]) as bank:
        return Path(run(bank, params, dry_run=dry_run, force=force))


def classify(**options) -> Path:
    """Stage two (glag-classify run): one head on a bank; returns the run folder."""
    from glag.classify.cli import run as run_command
    from glag.classify.run import run_stage2
    params, explicit = _options(run_command, "glag-classify run", options)
    return run_stage2(params, explicit)


def load_run(folder) -> dict:
    """A finished stage-two run: {"config", "metrics", "history", "beta" (or None)} from its JSON files."""
    folder = Path(folder)
    read = lambda name: json.loads((folder / name).read_text()) if (folder / name).is_file() else None
    if read("metrics.json") is None:
        raise GlagError(f"{folder}: not a finished stage-two run (no metrics.json)")
    return {k: read(f"{k}.json") for k in ("config", "metrics", "history", "beta")}
