"""The steps of one reproduction and where their outputs go.

Layout, under --runs-root:

    <dataset>-im<IM>/                 (<dataset>-listed for ImageNet-LT / iNaturalist)
        <loss>/seed<s>/bank.h5        stage one (glag-extract), its checkpoint bank.ckpt.pt beside
        <loss>/seed<s>/synthetic/reproduce.h5    the AFG store (glag-generate), when a method needs one
        <loss>/seed<s>/stage2/<method>/          one stage-two run folder per method (glag-classify run)
        <loss>/seed<s>/logs/<step>.log           each tool's output
        results/                      table.md, table.csv, accuracy.png, config.json

Every step is a tool call with options as a dict (underscored keys); `to_argv`
turns it into command-line arguments. A bank's steps come in order: stage one,
then the store, then the stage-two runs, which all read that one bank.
"""
import shlex
from dataclasses import dataclass
from pathlib import Path

from glag.data.errors import GlagError
from glag.data.layout import bank_path, experiment_name

from .recipes import METHODS, needs_store, tune_points

STORE_NAME = "reproduce.h5"
# Options reproduce sets itself: a user's --<tool>-args may not move them.
RESERVED = {"extract": ("dataset", "loss", "seed", "out", "im", "current"), "generate": ("bank", "out", "seed"),
            "classify": ("bank", "run", "seed", "store", "method", "out")}


@dataclass(frozen=True)
class Step:
    """One tool call of the reproduction.

    Attributes:
        tool: "extract", "generate" or "classify".
        loss, seed: the bank it belongs to.
        name: "stage one", "generate" or the stage-two method.
        options: the tool's options, underscored keys (e.g. {"epochs": 8}).
        out: what it writes (bank file, store file or run folder).
        bank: the bank it reads or writes.
        family: for one point of a tuned method's grid, the method (its row in the table).
    """
    tool: str
    loss: str
    seed: int
    name: str
    options: dict
    out: Path
    bank: Path
    family: str = ""

    @property
    def label(self) -> str:
        return f"{self.loss} seed{self.seed} {self.name}"

    @property
    def log(self) -> Path:
        return self.bank.parent / "logs" / (self.name.replace(" ", "-") + ".log")


def experiment_dir(runs_root, dataset: str, im) -> Path:
    """runs/<dataset>-im<IM> (IM printed without a trailing .0), or runs/<dataset>-listed (glag.data.layout)."""
    return Path(runs_root) / experiment_name(dataset, im)


def parse_tool_args(text: str, tool: str) -> dict:
    """`--<tool>-args` text -> {underscored option: value}; flags become True / False (--no-x).

    Values stay strings: the tool parses them. Raises GlagError on stray words and reserved options.
    """
    flag, out, tokens = f"--{tool}-args", {}, shlex.split(text or "")
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or token == "--":
            raise GlagError(f"{flag} {text!r}: expected --option [value], got {token!r}")
        key, eq, value = token[2:].partition("=")
        if not eq and (i + 1 == len(tokens) or tokens[i + 1].startswith("--")):
            value = not key.startswith("no-")           # a flag: --kd / --no-kd
            key = key[3:] if key.startswith("no-") else key
        elif not eq:
            value, i = tokens[i + 1], i + 1
        out[key.replace("-", "_")] = value
        i += 1
    taken = sorted(set(out) & set(RESERVED[tool]))
    if taken:
        raise GlagError(f"{flag}: {['--' + k.replace('_', '-') for k in taken]} are set by reproduce itself "
                        "(use --losses, --seeds, --im, --methods, --runs-root)")
    return out


def to_argv(options: dict) -> list:
    """{"epochs": 8, "flip": False} -> ["--epochs", "8", "--no-flip"]; None values are left out."""
    argv = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + key.replace("_", "-"))
        elif value is not None:
            argv += [flag, str(value)]
    return argv


def plan(cfg: dict) -> list:
    """Every step of the reproduction `cfg` (see reproduce.resolve), banks in (loss, seed) order."""
    steps = []
    for loss in cfg["losses"]:
        for seed in cfg["seeds"]:
            bank = bank_path(cfg["runs_root"], cfg["dataset"], cfg["im"], loss, seed)
            steps.append(_extract_step(cfg, loss, seed, bank))
            store = bank.parent / "synthetic" / STORE_NAME
            if any(needs_store(m) for m in cfg["methods"]):
                gen = dict(bank=str(bank), out=str(store), seed=seed, **cfg["generate"])
                steps.append(Step("generate", loss, seed, "generate", gen, store, bank))
            for method in cfg["methods"]:
                for name, point in tune_points(method):
                    opts = dict(bank=str(bank), run=name, seed=seed, **cfg["classify"])
                    opts.update(METHODS[method], **point, **({"store": str(store)} if needs_store(method) else {}))
                    steps.append(Step("classify", loss, seed, name, opts, bank.parent / "stage2" / name, bank,
                                      family=method if point else ""))
    return steps


def _extract_step(cfg: dict, loss: str, seed: int, bank: Path) -> Step:
    # a reproduction writes many banks: none of them replaces the user's current one
    opts = dict(dataset=cfg["dataset"], loss=loss, seed=seed, out=str(bank), current=False)
    if cfg["im"] is not None:
        opts["im"] = cfg["im"]
    if cfg["data_root"]:
        opts["data_root"] = cfg["data_root"]
    opts.update(cfg["extract"])
    return Step("extract", loss, seed, "stage one", opts, bank, bank)
