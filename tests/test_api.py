"""The Python API (glag.api) and `--config`: the stages from Python and from saved configs."""
import json

import pytest
from click.testing import CliRunner

import glag.api as api
from glag.classify.cli import main as classify
from glag.classify.config import run_hash
from glag.data.errors import GlagError


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Stage one on digits (1 epoch), a store, and a GLAG run, all through glag.api."""
    root = tmp_path_factory.mktemp("api")
    bank = api.extract(dataset="digits", epochs=1, threads=1, out=str(root / "bank.h5"), current=False)
    store = api.generate(bank=bank, epochs=2, beta_init=0.6)
    run = api.classify(bank=str(bank), epochs=2, plots=False, deploy=False, run="g")
    return bank, store, run


def test_the_three_stages_run_from_python(made):
    bank, store, run = made
    assert bank.is_file() and store.is_file() and store.parent == bank.parent / "synthetic"
    loaded = api.load_run(run)
    assert 0 <= loaded["metrics"]["test"]["overall"] <= 1 and loaded["beta"]["refit"] is True
    assert loaded["config"]["cfg"]["store"] == str(store)                         # latest.json's store


def test_a_saved_config_reruns_with_one_change(made):
    bank, store, run = made
    again = api.classify(config=run / "config.json", beta_init=0.3, run="g03")
    cfg, before = api.load_run(again)["config"]["cfg"], api.load_run(run)["config"]["cfg"]
    assert cfg["beta_init"] == 0.3 and cfg["bank"] == before["bank"] and cfg["store"] == before["store"]
    assert {k for k in cfg if cfg[k] != before[k]} == {"beta_init", "run"}


def test_cli_config_reproduces_the_run_hash(made, tmp_path):
    _, _, run = made
    res = CliRunner().invoke(classify, ["run", "--config", str(run / "config.json"), "--run", "same",
                                        "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    saved = lambda folder: json.loads((folder / "config.json").read_text())["cfg"]
    assert run_hash(saved(tmp_path / "same")) == run_hash(saved(run))
    bad = CliRunner().invoke(classify, ["run", "--config", str(run / "head.pt")])
    assert bad.exit_code == 2 and "no readable saved config" in bad.output and "--config" in bad.output


def test_bad_options_raise_glag_errors(made):
    bank, _, _ = made
    with pytest.raises(GlagError, match="unknown option"):
        api.classify(bank=str(bank), beta=0.3)
    with pytest.raises(GlagError, match="glag-classify run"):
        api.classify(bank=str(bank), method="nope")
    with pytest.raises(GlagError, match="not a finished stage-two run"):
        api.load_run(bank.parent)
