"""The flow as users type it: `make features DATASET=X`, `glag-generate --beta-init 0.6`, `make classify`."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from glag.classify.cli import main as classify
from glag.extract.cli import main as extract
from glag.generate.cli import main as generate
from tests.conftest import write_tiny_bank

ROOT = Path(__file__).resolve().parents[1]


def call(main, *args):
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res


@pytest.mark.slow
def test_features_generate_classify_use_the_bank_just_made(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATASET", raising=False)
    # another dataset's bank is there already: without the current-bank pointer, the tools could not choose
    write_tiny_bank(tmp_path / "runs" / "fashion-mnist-im100" / "graloss" / "seed0" / "bank.h5", dataset="fashion-mnist")
    call(extract, "--dataset", "digits", "--epochs", 1, "--threads", 1)         # make features DATASET=digits
    bank = tmp_path / "runs" / "digits-im10" / "graloss" / "seed0" / "bank.h5"
    assert bank.is_file()
    assert json.loads((tmp_path / "runs" / "current.json").read_text())["bank"] == str(bank.resolve())
    res = call(generate, "--beta-init", "0.6")                                  # glag-generate --beta-init 0.6
    assert f"bank: {bank.resolve()} (the current bank" in res.output
    assert (bank.parent / "synthetic" / "latest.json").is_file()
    res = call(classify, "run", "--epochs", 2, "--no-plots", "--run", "g")       # make classify
    assert f"bank: {bank.resolve()} (the current bank" in res.output
    config = json.loads((bank.parent / "stage2" / "g" / "config.json").read_text())
    assert config["cfg"]["beta_init"] == 0.6 and config["cfg"]["store"].startswith(str(bank.parent.resolve()))
    # DATASET names the other dataset's bank; the current pointer does not override that
    res = call(classify, "run", "--dataset", "fashion-mnist", "--method", "crt", "--epochs", 1, "--no-plots",
               "--run", "c")
    assert (tmp_path / "runs" / "fashion-mnist-im100" / "graloss" / "seed0" / "stage2" / "c").is_dir()


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_passes_no_dataset_unless_given():
    env = {k: v for k, v in os.environ.items() if k != "DATASET"}
    lines = lambda target, *extra: [line for line in subprocess.run(
        ["make", "-n", "-s", target, *extra], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines() if "glag-" in line]
    assert lines("classify") and "--dataset" not in lines("classify")[-1]
    assert "--dataset" not in lines("generate")[-1]
    assert "--dataset cifar10-jpeg" in lines("classify", "DATASET=cifar10-jpeg")[-1]
    assert "--dataset digits" in lines("features")[-1]                          # stage one's embedded default
