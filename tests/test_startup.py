"""Startup: `--help`, `--version` and option errors answer without importing torch (seconds on a busy machine).

Each case runs in a fresh interpreter and reads `sys.modules` after the command exits. A tool made
light is one more entry in LIGHT (its module and the words before its options, e.g. a subcommand).
"""
import json
import subprocess
import sys

import pytest

# (module of the console script, argv before the options)
LIGHT = [("glag.extract.cli", []), ("glag.extract.group_cli", []), ("glag.verify", []), ("glag.reproduce.cli", []),
         ("glag.generate.cli", []), ("glag.classify.cli", ["run"]), ("glag.classify.cli", ["table"]),
         ("glag.classify.cli", ["sweep"])]
HEAVY = ("torch", "torchvision")

PROBE = """
import json, sys, importlib
main = importlib.import_module({module!r}).main
try:
    main({argv!r}, prog_name="tool")
except SystemExit as e:
    code = e.code
print(json.dumps({{"code": code, "heavy": [m for m in {heavy!r} if m in sys.modules]}}))
"""


def probe(module: str, argv: list) -> dict:
    """Run `main(argv)` of `module` in a fresh interpreter: its exit code and the heavy modules it imported."""
    code = PROBE.format(module=module, argv=list(argv), heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module, prefix", LIGHT, ids=[" ".join([m, *p]) for m, p in LIGHT])
@pytest.mark.parametrize("args, code", [(["--help"], 0), (["--version"], 0), (["--no-such-option"], 2)],
                         ids=["help", "version", "bad-option"])
def test_help_version_and_option_errors_import_no_torch(module, prefix, args, code):
    if args == ["--version"] and prefix:            # --version belongs to the group, before the subcommand
        prefix = []
    result = probe(module, [*prefix, *args])
    assert result == {"code": code, "heavy": []}


@pytest.mark.parametrize("module, args, code", [
    ("glag.extract.cli", ["--loss", "nope"], 2), ("glag.extract.cli", ["--backbone", "nope"], 2),
    ("glag.extract.cli", ["--epochs", "many"], 2), ("glag.extract.cli", ["--decode", "nope"], 2),
    ("glag.extract.cli", ["--im", "0.5"], 2), ("glag.extract.group_cli", ["--losses", "ce,nope"], 1),
    ("glag.extract.group_cli", ["--seeds", "x"], 1), ("glag.reproduce.cli", ["--recipe", "nope"], 2),
    ("glag.generate.cli", ["--k", "0"], 2), ("glag.generate.cli", ["--gamma-mode", "nope"], 2),
    ("glag.classify.cli", ["run", "--head", "nope"], 2), ("glag.classify.cli", ["run", "--loss", "nope"], 2),
    ("glag.classify.cli", ["run", "--amp", "fp8"], 2)])
def test_bad_values_are_refused_before_torch(module, args, code):
    assert probe(module, args) == {"code": code, "heavy": []}


def test_stage_two_names_match_the_registries():
    """The light lists of stage two (choices of --help) match what the torch modules register."""
    from glag.classify.config import HEAD_NAMES
    from glag.classify.heads import HEADS
    assert set(HEAD_NAMES) == set(HEADS)


def test_light_names_match_the_registries():
    """extract/names.py lists what the torch modules register: a loss or backbone added there must be added here."""
    from glag.extract import names
    from glag.extract.backbones import BACKBONES
    from glag.extract.losses import LOSSES, loss_help, loss_options
    from glag.extract.losses.schedule import ALPHA_FORMS
    assert set(names.LOSS_NAMES) == set(LOSSES) and set(names.BACKBONES) == set(BACKBONES)
    for loss in LOSSES:
        assert {k: d for k, (d, _) in names.LOSS_OPTIONS[loss].items()} == loss_options(loss), loss
        assert loss_help(loss) == names.option_help(loss)
    assert names.ALPHA_FORMS == ALPHA_FORMS
