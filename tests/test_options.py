"""One definition per shared option (glag.cli.options): the same range and message in every tool and grid."""
import json

import pytest
from click.testing import CliRunner

from glag.classify.cli import main as classify
from glag.extract.cli import main as extract
from glag.generate.cli import main as generate
from tests.test_classify_cli import make_bank_and_store


def refused(main, args, needle):
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code in (1, 2), res.output
    assert res.output.count("Error:") == 1 and needle in res.output and "Traceback" not in res.output, res.output
    return res.output


@pytest.mark.parametrize("value", ["1.5", "-0.1", "nan", "x"])
def test_beta_is_refused_alike_by_generate_and_classify(tmp_path, value):
    bank, _ = make_bank_and_store(tmp_path)
    a = refused(generate, ["--bank", bank, "--beta-init", value, "--dry-run"], "--beta-init")
    b = refused(classify, ["run", "--bank", bank, "--beta-init", value], "--beta-init")
    tail = lambda out: out.splitlines()[-1].split("--beta-init", 1)[1].replace(" or 'auto'", "")
    assert tail(a) == tail(b)                                   # classify alone also takes 'auto'
    assert not (tmp_path / "stage2").exists()


@pytest.mark.parametrize("args, needle", [
    (["--gamma", "-1"], "must be >= 0"),
    (["--tau-norm-taus", "abc", "--method", "tau_norm"], "START:STOP:STEP"),
    (["--posthoc-la-taus", "2:0:0.1", "--method", "posthoc_la"], "STOP >= START"),
    (["--device", "tpu"], "choose auto, cpu, cuda"),
    (["--batch-size", "0"], "must be >= 1"),
])
def test_classify_options_are_checked_before_anything_runs(tmp_path, args, needle):
    bank, _ = make_bank_and_store(tmp_path)
    refused(classify, ["run", "--bank", bank, *args], needle)
    assert not (tmp_path / "stage2").exists()


def test_cuda_asked_for_where_there_is_none_is_one_line(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    bank, _ = make_bank_and_store(tmp_path)
    for main, args in ((classify, ["run", "--bank", bank]), (generate, ["--bank", bank, "--dry-run"])):
        refused(main, [*args, "--device", "cuda"], "CUDA is not available")


@pytest.mark.parametrize("value", ["nan", "inf", "0.5", "abc"])
def test_imbalance_ratio(value):
    refused(extract, ["--dataset", "digits", "--im", value], "--im")


def test_a_grid_is_refused_as_a_whole_before_its_first_run(tmp_path):
    bank, _ = make_bank_and_store(tmp_path)
    grid = tmp_path / "g.json"
    grid.write_text(json.dumps({"base": {"method": "crt", "epochs": 1}, "runs": [{"seed": 0}, {"gamma": -1}]}))
    out = refused(classify, ["sweep", "--grid", grid, "--bank", bank], "run 2: gamma = -1")
    assert "must be >= 0" in out and not (tmp_path / "stage2").exists()      # not even run 1 started
