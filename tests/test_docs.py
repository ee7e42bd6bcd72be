"""The docs say what the tools do: examples name paths the tools write, help texts name the real defaults."""
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from glag.data.layout import bank_path, experiment_name
from glag.extract.recipes import RECIPES

ROOT = Path(__file__).resolve().parents[1]


def doc(name: str) -> str:
    return (ROOT / name).read_text()


def test_the_sweep_grid_example_names_banks_where_make_features_writes_them():
    from glag.classify.sweep import expand
    text = doc("docs/stage-two.md")
    grid = json.loads(re.search(r"```json\n(.*?)```", text, re.S).group(1))
    fill = {"runs_root": "runs", "dataset": "cifar100", "experiment": experiment_name("cifar100", 100)}
    runs = expand(grid, "example", {"epochs": 0, "method": "", "bank": "", "seed": 0}, fill)
    assert {r["bank"] for r in runs} == {str(bank_path("runs", "cifar100", 100, loss, 0)) for loss in ("ce", "graloss")}


def test_every_runs_folder_the_docs_name_for_digits_is_the_one_its_recipe_makes():
    digits = experiment_name("digits", RECIPES["digits"]["im"])
    for name in ("README.md", "docs/stage-two.md", "docs/layout.md", "docs/start-here.md"):
        named = set(re.findall(r"runs/(digits-im[0-9.]+)", doc(name)))
        assert named <= {digits}, (name, named)


def test_glag_extract_help_names_the_bank_it_writes():
    from glag.extract.cli import main
    out = re.sub(r"\s+", "", CliRunner().invoke(main, ["--help"]).output)       # click wraps at spaces and -
    assert out.count("runs/<dataset>-im<IM>/<loss>/seed<s>/bank.h5") == 2              # the summary and --out
    assert "runs/<dataset>/bank.h5" not in out


def test_ad_help_names_the_criterion_it_uses():
    from glag.classify.config import OPTIONS
    assert "val loss" not in OPTIONS["ad"][1] and "accuracy" in OPTIONS["ad"][1]
    assert OPTIONS["ad_criterion"][0] == "accuracy"


@pytest.mark.parametrize("argv, has", [(["glag.extract.cli"], True), (["glag.extract.group_cli"], True),
                                       (["glag.generate.cli"], True), (["glag.classify.cli", "run"], True),
                                       (["glag.classify.cli", "sweep"], False), (["glag.classify.cli", "table"], False),
                                       (["glag.reproduce.cli"], False), (["glag.verify"], False)])
def test_config_and_tensorboard_are_where_the_readme_says(argv, has):
    import importlib
    text = " ".join(doc("README.md").split())
    assert ("`glag-extract`, `glag-extract-group`, `glag-generate` and `glag-classify run` also have `--config`"
            in text) and "`glag-verify`, `glag-reproduce` and `glag-classify sweep` / `table` have neither" in text
    command = importlib.import_module(argv[0]).main
    if len(argv) > 1:
        command = command.commands[argv[1]]
    names = {opt for p in command.params for opt in p.opts}
    assert ("--config" in names, "--tensorboard" in names) == (has, has)
