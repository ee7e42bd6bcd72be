"""model.pt: stage one's backbone + the stage-two head, rebuilt by glag.extract.backbones.load_deployed.

End to end on digits: glag-extract (2 epochs) -> glag-classify run -> load_deployed -> the deployed
network's predictions on the test images are the run's test predictions.
"""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import glag.classify.deploy as deploy
from glag.classify.cli import main as classify_main
from glag.data.bank import Bank
from glag.data.datasets import load_dataset
from glag.data.errors import GlagError
from glag.data.splits import group_accuracy
from glag.data.tukey import tukey_transform
from glag.extract.backbones import load_deployed
from glag.extract.backbones import deployed as extract_deployed
from glag.extract.cli import main as extract_main
from glag.generate.cli import main as generate_main
from tests.conftest import write_tiny_bank

ARCH = {"backbone": "resnet_small", "channels": 1, "image_size": 8, "mean": [0.5], "std": [0.35]}


def ok(main, *args):
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A 2-epoch digits bank with its checkpoint and a synthetic store, and the test images in bank order."""
    folder = tmp_path_factory.mktemp("deploy")
    bank = folder / "bank.h5"
    ok(extract_main, "--dataset", "digits", "--epochs", 2, "--threads", 1, "--out", bank)
    ok(generate_main, "--bank", bank)
    with Bank(bank) as b:
        test = b.load("test", ("features", "labels", "index"))
    raw = load_dataset("digits")
    assert np.array_equal(raw.test.index, test["index"])  # the dump keeps the split's order
    images = torch.from_numpy(raw.test.images).permute(0, 3, 1, 2).float() / 255  # (N, 1, 8, 8) in [0, 1]
    return bank, test, images


def run(bank, name, *args):
    ok(classify_main, "run", "--bank", bank, "--run", name, "--epochs", 3, "--no-plots", "--overwrite", *args)
    return bank.parent / "stage2" / name


def test_deployed_crt_model_reproduces_the_runs_test_predictions(digits):
    bank, test, images = digits
    folder = run(bank, "crt", "--method", "crt")
    model = load_deployed(folder / "model.pt")
    with torch.no_grad():
        feats, logits = model.features(images), model(images)
    assert torch.allclose(feats, torch.from_numpy(test["features"]), atol=1e-4)  # the bank's backbone
    linear = torch.load(folder / "linear.pt", weights_only=True)
    expected = torch.from_numpy(test["features"]) @ linear["weight"].T + linear["bias"]
    assert torch.allclose(logits, expected, atol=1e-4)
    assert torch.equal(logits.argmax(1), expected.argmax(1))
    metrics = json.loads((folder / "metrics.json").read_text())
    groups = np.asarray(metrics["groups"]["of_class"])
    acc = group_accuracy(logits.argmax(1).numpy(), test["labels"], groups)
    assert acc["overall"] == pytest.approx(metrics["test"]["overall"], abs=1e-9)
    assert acc["per_class"] == pytest.approx(metrics["test"]["per_class"], abs=1e-9)
    assert metrics["deploy"] == {"file": "model.pt", "checkpoint": str(bank.with_name("bank.ckpt.pt")),
                                 "reason": None}
    assert model.class_names == [str(k) for k in range(10)] and model.image_size == 8
    assert "load_deployed" in (folder / "report.md").read_text()


def test_deployed_model_in_tukey_space_transforms_features_before_the_head(digits):
    bank, test, images = digits
    folder = run(bank, "glag-tukey", "--space", "tukey")
    saved = torch.load(folder / "model.pt", weights_only=True)
    assert saved["head"]["space"] == "tukey" and saved["head"]["tukey_lambda"] == 0.5
    head = torch.load(folder / "head.pt", weights_only=True)
    x = tukey_transform(torch.from_numpy(test["features"]), 0.5)
    expected = (x @ head["fc.weight"].T + head["fc.bias"]).argmax(1)
    with torch.no_grad():
        pred = load_deployed(folder / "model.pt")(images).argmax(1)
    assert torch.equal(pred, expected)
    metrics = json.loads((folder / "metrics.json").read_text())
    acc = group_accuracy(pred.numpy(), test["labels"], np.asarray(metrics["groups"]["of_class"]))
    assert acc["overall"] == pytest.approx(metrics["test"]["overall"], abs=1e-9)


def test_checkpoint_of_another_training_is_not_deployed(digits, tmp_path):
    bank, _, _ = digits
    copy = tmp_path / "bank.h5"
    copy.write_bytes(bank.read_bytes())
    state = torch.load(bank.with_name("bank.ckpt.pt"), weights_only=True)
    state["model"]["head.weight"] = state["model"]["head.weight"] + 0.1  # trained again after the dump
    torch.save(state, tmp_path / "bank.ckpt.pt")
    res = ok(classify_main, "run", "--bank", copy, "--method", "crt", "--epochs", 1, "--run", "x", "--no-plots")
    folder = tmp_path / "stage2" / "x"
    assert not (folder / "model.pt").exists() and "no model.pt" in res.output
    reason = json.loads((folder / "metrics.json").read_text())["deploy"]["reason"]
    assert "differs from the bank's" in reason and "no `model.pt`" in (folder / "report.md").read_text()


def _fake_checkpoint(path, bank_path, prefix="", fmt=True, config=ARCH):
    with Bank(bank_path) as bank:
        W, b = (torch.from_numpy(t) for t in bank.head)
    model = {f"{prefix}backbone.w": torch.ones(3), f"{prefix}head.weight": W, f"{prefix}head.bias": b}
    obj = {"format": deploy.STAGE_ONE_FORMAT, "config": json.dumps(config), "model": model} if fmt else model
    torch.save(obj, path)


@pytest.mark.parametrize("prefix", ["", "module.", "_orig_mod.module."])
def test_model_pt_takes_the_head_by_key_and_the_architecture_from_the_checkpoint(tmp_path, prefix):
    bank = write_tiny_bank(tmp_path / "bank.h5")
    _fake_checkpoint(tmp_path / "bank.ckpt.pt", bank, prefix)
    res = CliRunner().invoke(classify_main, ["run", "--bank", str(bank), "--method", "crt", "--epochs", "2",
                                             "--run", "d", "--no-plots"])
    assert res.exit_code == 0, res.output
    folder = tmp_path / "stage2" / "d"
    model, linear = (torch.load(folder / f, weights_only=True) for f in ("model.pt", "linear.pt"))
    assert set(model) == set(deploy.FIELDS) and model["format"] == extract_deployed.FORMAT == deploy.FORMAT
    assert sorted(model["state_dict"]) == ["backbone.w", "head.bias", "head.weight"]
    assert torch.equal(model["state_dict"]["head.weight"], linear["weight"])
    assert torch.equal(model["state_dict"]["head.bias"], linear["bias"])
    assert (model["backbone"], model["in_channels"], model["image_size"]) == ("resnet_small", 1, 8)
    assert model["preprocess"]["mean"] == [0.5] and model["head"]["space"] == "raw"
    assert json.loads(model["config"])["cfg"]["method"] == "crt"


def test_architecture_falls_back_to_the_bank_config_and_a_moved_bank_finds_its_checkpoint(tmp_path):
    first = tmp_path / "first"
    first.mkdir()
    bank = write_tiny_bank(tmp_path / "moved" / "bank.h5", config=dict(ARCH, out=str(first / "bank.h5")))
    _fake_checkpoint(first / "bank.ckpt.pt", bank, fmt=False)  # a plain state dict: no config of its own
    with Bank(bank) as b:
        model, status = deploy.build_deployed(b, *(torch.from_numpy(t) for t in b.head),
                                              {"space": "raw", "tukey_lambda": 0.5, "method": "crt",
                                               "head": "linear"}, {})
    assert status == {"checkpoint": str(first / "bank.ckpt.pt"), "reason": None}
    assert model["backbone"] == "resnet_small" and model["preprocess"]["std"] == [0.35]


def test_no_architecture_or_no_checkpoint_is_explained(tmp_path):
    bank = write_tiny_bank(tmp_path / "bank.h5")  # backbone "none", no channels in its config
    cfg = {"space": "raw", "tukey_lambda": 0.5, "method": "crt", "head": "linear"}
    with Bank(bank) as b:
        W, bias = (torch.from_numpy(t) for t in b.head)
        assert deploy.build_deployed(b, W, bias, cfg, {})[1]["reason"].startswith("no stage-one checkpoint")
        _fake_checkpoint(tmp_path / "bank.ckpt.pt", bank, config={})
        model, status = deploy.build_deployed(b, W, bias, cfg, {})
    assert model is None and "names the backbone" in status["reason"]


@pytest.mark.parametrize("content", [b"junk", None])
def test_load_deployed_refuses_what_is_not_a_model_pt(tmp_path, content):
    path = tmp_path / "model.pt"
    if content is None:  # a stage-one checkpoint is a readable torch file of another format
        torch.save({"format": deploy.STAGE_ONE_FORMAT, "model": {}}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(GlagError, match=str(path)):
        load_deployed(path)
    with pytest.raises(GlagError, match="no such file"):
        load_deployed(tmp_path / "missing.pt")
