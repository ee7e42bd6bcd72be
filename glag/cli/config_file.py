"""`--config FILE` (and the API's `config=`): which saved options a tool takes, and which it refuses.

A saved config is a bank (its `config` attr: glag-extract's options), a store (glag-generate's), a
stage-two run's config.json (glag-classify run's, under "cfg"), or a JSON object written by hand.
A tool takes only its own options from it and says which on stderr:

  - another tool's config is refused: a bank's lr, batch size, sampler, epochs and loss are stage
    one's, and would silently become stage two's under the same names;
  - a hand-written object must hold only the tool's options: an unknown key ("epocs") is refused,
    naming the close matches, instead of leaving its option at the default;
  - a config the tool wrote itself also records resolved values that are not options (a run's
    bank_fingerprint, a bank's dataset_meta): left out, unless one is a near miss of an option the
    file lacks (an edited key);
  - options that name where an output went (NOT_REUSED) are never taken.
"""
import difflib
import json
from pathlib import Path

from glag.data.errors import GlagError

# Keys of a saved config that name where its output went, not how it was made: never reused.
NOT_REUSED = ("out", "run", "overwrite", "dump_only", "resume", "current", "tensorboard")
# The tool that reads --config, by the module of its command.
TOOLS = {"glag.extract.cli": "glag-extract", "glag.extract.group_cli": "glag-extract-group",
         "glag.generate.cli": "glag-generate", "glag.classify.cli": "glag-classify run"}
# What a saved file is, the tools whose options it holds, and how to name it.
KINDS = {"bank": (("glag-extract", "glag-extract-group"), "a feature bank (stage one's options)"),
         "store": (("glag-generate",), "a synthetic store (glag-generate's options)"),
         "run": (("glag-classify run",), "a stage-two run's config.json (glag-classify run's options)")}
OWN = {"glag-extract": "a bank.h5", "glag-extract-group": "a bank.h5", "glag-generate": "a store",
       "glag-classify run": "a run's config.json"}


def saved_config(path) -> tuple:
    """(kind, options): kind "bank", "store" or "run" for a file a tool wrote, None for a JSON object."""
    path = Path(path)
    try:
        if path.suffix == ".h5":
            import h5py
            with h5py.File(path, "r", locking=False) as h5:
                schema = str(h5.attrs.get("schema", ""))
                saved = json.loads(h5.attrs["config"])
            kind = "bank" if schema.startswith("glag-bank/") else "store" if schema.startswith("glag-store/") else None
        else:
            saved = json.loads(path.read_text())
            kind = "run" if isinstance(saved, dict) and isinstance(saved.get("cfg"), dict) else None
            saved = saved["cfg"] if kind else saved
    except (OSError, KeyError, ValueError) as e:
        raise GlagError(f"--config {path}: no readable saved config ({e.__class__.__name__}); give a run's "
                        "config.json, a bank, a store or a JSON object of options") from None
    if not isinstance(saved, dict):
        raise GlagError(f"--config {path}: not a JSON object of options")
    return kind, saved


def tool_of(command) -> str:
    """The name a user knows the command by (glag-classify run, ...)."""
    module = getattr(command.callback, "__module__", "")
    return TOOLS.get(module, command.name)


def take_saved(path, command) -> tuple:
    """(options of `command` to take from the saved config at `path`, the line that says which).

    Raises:
        GlagError: a missing or unreadable file, another tool's config, or keys that are no option of
            this tool (named with their close matches).
    """
    tool, names = tool_of(command), {p.name for p in command.params} - {"config"}
    kind, saved = saved_config(path)
    readers, what = KINDS.get(kind, ((), ""))
    if kind and tool not in readers:
        raise GlagError(f"--config {path}: {what} cannot configure {tool}, whose options of the same names mean "
                        f"other things; give {OWN.get(tool, 'a config of its own')} or a JSON object of its options")
    unknown = sorted(k for k in saved if k not in names)
    if kind:     # a file the tool wrote: the rest are resolved values, unless one is an edited option name
        missing = sorted(names - set(saved))
        unknown = [k for k in unknown if difflib.get_close_matches(k, missing, n=1, cutoff=0.8)]
    if unknown:
        guesses = [f"{k!r}" + (f" (did you mean {', '.join(map(repr, m))}?)" if m else "")
                   for k in unknown for m in [difflib.get_close_matches(k, sorted(names), n=2, cutoff=0.7)]]
        raise GlagError(f"--config {path}: unknown key(s) {', '.join(guesses)}; {tool} takes only its own options "
                        f"(see {tool} --help)")
    taken = {k: v for k, v in saved.items() if k in names and k not in NOT_REUSED}
    where = sorted(k for k in saved if k in NOT_REUSED)
    recorded = len([k for k in saved if k not in names])
    line = f"--config {path}: took {len(taken)} option(s) of {tool}: {', '.join(sorted(taken)) or 'none'}" + \
        (f"; not {', '.join(where)} (where outputs go: give them here)" if where else "") + \
        (f"; left out {recorded} recorded value(s) that are not options" if recorded else "")
    return taken, line
