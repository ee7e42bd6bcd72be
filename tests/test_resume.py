"""A stage-one run killed after some epochs and rerun ends with the same weights as one straight run."""
import json
import re

import numpy as np
import torch
from click.testing import CliRunner

from glag.data.bank import Bank
from glag.extract.checkpoint import checkpoint_path, load_checkpoint
from glag.extract.cli import main

ARGS = ["--dataset", "digits", "--epochs", "4", "--threads", "1", "--loss", "graloss"]


def run(out, *extra):
    result = CliRunner().invoke(main, [*ARGS, "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    return result.output


def epoch_lines(output):
    """'epoch e/.. loss .. train-acc .. lr .. alpha ..' without the timing columns."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^(epoch \d+)/\d+ (.*?) [\d,]+ img/s", output, re.M)}


def test_resumed_run_matches_uninterrupted_run(tmp_path):
    straight, resumed = tmp_path / "a" / "bank.h5", tmp_path / "b" / "bank.h5"
    log_straight = run(straight)

    log_first = run(resumed, "--stop-after-epochs", "2")
    assert not resumed.exists() and load_checkpoint(checkpoint_path(resumed))["epoch"] == 2
    log_rest = run(resumed)
    assert "epochs 2..3" in log_rest                                        # continued, not restarted

    # the same losses, lr and alpha per epoch: update(epoch) and the schedule resumed where they were
    assert epoch_lines(log_first + log_rest) == epoch_lines(log_straight)
    a, b = load_checkpoint(checkpoint_path(straight)), load_checkpoint(checkpoint_path(resumed))
    assert a["epoch"] == b["epoch"] == 4
    for key, value in a["model"].items():
        torch.testing.assert_close(value, b["model"][key], rtol=1e-5, atol=1e-6, msg=key)
    with Bank(straight) as x, Bank(resumed) as y:
        for split in x.splits:
            np.testing.assert_allclose(x.load(split)["features"], y.load(split)["features"], rtol=1e-4, atol=1e-5)
        # the training curve is kept: beside the checkpoint, and in the bank; a resume continues it
        keep = lambda h: [(r["epoch"], r["loss"], r["lr"], r["alpha"]) for r in h]
        assert [r["epoch"] for r in x.metrics["history"]] == [0, 1, 2, 3]
        assert keep(x.metrics["history"]) == keep(y.metrics["history"])
    on_disk = json.loads((straight.parent / "bank.history.json").read_text())
    assert keep(on_disk) == keep(a["history"]) and 0 <= on_disk[-1]["train_acc"] <= 1


def test_finished_checkpoint_is_not_trained_again(tmp_path):
    out = tmp_path / "bank.h5"
    run(out, "--epochs", "1")
    first = Bank(out).fingerprint
    out.unlink()
    log = run(out, "--epochs", "1")
    assert "epoch 1/" not in log and Bank(out).fingerprint == first


def test_no_resume_starts_over(tmp_path):
    out = tmp_path / "bank.h5"
    run(out, "--stop-after-epochs", "1")
    log = run(out, "--no-resume", "--epochs", "2")
    assert "epochs 0..1" in log


def test_resumed_mixup_run_matches_uninterrupted_run(tmp_path):
    """Mixup's lambda and partner permutation come from the epoch's augmentation generator, so they resume."""
    straight, resumed = tmp_path / "a" / "bank.h5", tmp_path / "b" / "bank.h5"
    mix = ("--epochs", "3", "--mixup", "0.4")
    log_straight = run(straight, *mix)
    log_first = run(resumed, *mix, "--stop-after-epochs", "1")
    log_rest = run(resumed, *mix)
    assert "epochs 1..2" in log_rest
    assert epoch_lines(log_first + log_rest) == epoch_lines(log_straight)
    a, b = load_checkpoint(checkpoint_path(straight)), load_checkpoint(checkpoint_path(resumed))
    assert a["config"]["mixup"] == b["config"]["mixup"] == 0.4
    for key, value in a["model"].items():
        torch.testing.assert_close(value, b["model"][key], rtol=1e-5, atol=1e-6, msg=key)
