"""Augmented views of the train split in the bank: the upgrade path, determinism, storage, size checks."""
import json
import shutil

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from glag.data.bank import Bank
from glag.data.errors import GlagError
from glag.data.longtail import make_long_tail
from glag.extract.checkpoint import checkpoint_path, load_checkpoint, restore
from glag.extract.cli import main
from glag.extract.distributed import Context
from glag.extract.dump import bank_bytes, view_rows
from glag.extract.loaders import Images
from glag.extract.pipeline import build_model, read_dataset

FAST = ["--dataset", "digits", "--epochs", "2", "--threads", "1"]
NEW_KEYS = ("views", "views_dtype", "views_logits", "mixup")


def _one_error_line(result):
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert result.exit_code != 0 and len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """A finished digits run without views whose checkpoint looks like one from before views and mixup."""
    out = tmp_path_factory.mktemp("plain") / "bank.h5"
    result = CliRunner().invoke(main, [*FAST, "--out", str(out)])
    assert result.exit_code == 0, result.output
    ckpt = checkpoint_path(out)
    state = torch.load(ckpt, weights_only=True)
    config = json.loads(state["config"])
    assert all(k in config for k in NEW_KEYS) and config["views"] == 0 and config["mixup"] == 0.0
    state["config"] = json.dumps({k: v for k, v in config.items() if k not in NEW_KEYS}, sort_keys=True)
    torch.save(state, ckpt)
    return out


def redump(plain, out, *args):
    """--dump-only from a copy of the plain run's checkpoint, options other than --out left to it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(checkpoint_path(plain), checkpoint_path(out))
    return CliRunner().invoke(main, ["--dump-only", "--threads", "1", "--out", str(out), *map(str, args)])


@pytest.fixture(scope="module")
def viewed(plain, tmp_path_factory):
    out = tmp_path_factory.mktemp("viewed") / "bank.h5"
    result = redump(plain, out, "--views", 3)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_dump_only_adds_views_without_training(plain, viewed):
    out, output = viewed
    assert "epoch 1/" not in output and "dump view 3/3" in output
    with Bank(plain) as old, Bank(out) as new:
        assert new.h5.attrs["schema"] == "glag-bank/2" and new.views == 3 and new.views_dtype == "float16"
        assert new.has_view_logits and old.views == 0 and old.views_dtype is None
        assert {k: new.config[k] for k in NEW_KEYS} == dict(views=3, views_dtype="float16", views_logits=True,
                                                               mixup=0.0)
        for split in old.splits:                        # the un-augmented rows are exactly the old bank's
            a, b = old.load(split, ("features", "labels", "logits", "index")), new.load(split, ("features", "labels",
                                                                                            "logits", "index"))
            for field in a:
                np.testing.assert_array_equal(a[field], b[field], err_msg=f"{split}/{field}")
        assert new.fingerprint != old.fingerprint       # the views are part of the content
        g = new.h5["train_views"]
        N, D, C = new.rows("train"), new.feature_dim, new.num_classes
        assert g["features"].shape == (3, N, D) and g["logits"].shape == (3, N, C)
        assert g["features"].dtype == np.float16 and g["logits"].dtype == np.float16
        assert g["features"].chunks[0] == 1 and g.attrs["views"] == 3 and g.attrs["dtype"] == "float16"


def test_view_logits_are_the_head_of_the_view_features(viewed):
    with Bank(viewed[0]) as bank:
        views = bank.load_views()
        assert views["features"].dtype == np.float32 and views["logits"].dtype == np.float32
        W, b = bank.head
        np.testing.assert_allclose(views["features"] @ W.T + b, views["logits"], rtol=1e-2, atol=1e-2)  # fp16
        assert bank.view_bytes() == 3 * bank.rows("train") * (bank.feature_dim + bank.num_classes) * 4
        assert bank.view_bytes(1, ("features",)) == bank.rows("train") * bank.feature_dim * 4
        assert bank.load_views(("features",), count=2)["features"].shape == (2, bank.rows("train"), bank.feature_dim)


def test_views_are_augmented_copies_of_the_train_rows_in_order(viewed):
    with Bank(viewed[0]) as bank:
        base = bank.load("train")["features"]                                         # (N, D)
        views = bank.load_views(("features",))["features"]                           # (V, N, D)
    match = lambda a, b: np.isclose(a, b, rtol=2e-3, atol=2e-3).all(axis=1).mean()   # rows equal up to fp16
    for view in views:
        # digits crops 8 px out of a 1-px padded 8 px image: 1 crop in 9 is the image itself, and
        # that row then equals train row i at position i (the order is the train split's), never a neighbour
        assert 0.05 < match(view, base) < 0.25 and match(view, np.roll(base, 1, axis=0)) == 0
    assert not np.array_equal(views[0], views[1])               # each view draws its own augmentation


def _model_and_train_images(ckpt):
    state = load_checkpoint(ckpt)
    cfg = dict(state["config"], views=1, views_dtype="float16", views_logits=True)
    ctx = Context(torch.device("cpu"))
    model = build_model(cfg, ctx, fresh=False, log=print)
    restore(state, model=model)
    raw = read_dataset({"dataset": cfg["dataset"], "data_root": None})
    data = make_long_tail(raw, cfg["profile"], cfg["im"], cfg["val_per_class"], seed=cfg["data_seed"])
    return model.eval(), Images(data.train, data.channels, cfg["decode_size"]), cfg, ctx


def test_views_are_fixed_by_the_seed(plain, viewed, tmp_path):
    again = tmp_path / "again" / "bank.h5"
    assert redump(plain, again, "--views", 2).exit_code == 0
    with Bank(viewed[0]) as a, Bank(again) as b:
        stored = a.h5["train_views/features"][:]
        np.testing.assert_array_equal(stored[:2], b.h5["train_views/features"][:])   # view v does not depend on V
        np.testing.assert_array_equal(a.h5["train_views/logits"][:2], b.h5["train_views/logits"][:])
    model, images, cfg, ctx = _model_and_train_images(checkpoint_path(plain))
    rows = lambda c, v: torch.cat([f for f, _ in view_rows(model, images, c, ctx, v)]).numpy()
    np.testing.assert_array_equal(rows(cfg, 1).astype(np.float16), stored[1])        # what the bank holds
    other = rows(dict(cfg, seed=cfg["seed"] + 1), 1)
    assert not np.allclose(other, stored[1], atol=1e-2)                              # another seed, other views


def test_no_views_logits_stores_features_only(plain, tmp_path):
    out = tmp_path / "bank.h5"
    result = redump(plain, out, "--views", 1, "--no-views-logits", "--views-dtype", "float32")
    assert result.exit_code == 0, result.output
    with Bank(out) as bank:
        assert bank.views == 1 and not bank.has_view_logits and bank.views_dtype == "float32"
        assert "logits" not in bank.h5["train_views"] and bank.h5["train_views/features"].dtype == np.float32
        assert bank.config["views_logits"] is False
        assert set(bank.load_views(("features",))) == {"features"}
        with pytest.raises(GlagError, match="no logits"):
            bank.load_views()
        with pytest.raises(GlagError, match="--dump-only --views 2"):
            bank.load_views(("features",), count=2)


def test_a_disk_too_small_is_refused_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr("glag.extract.dump.free_bytes", lambda folder: 2 ** 16)
    out = tmp_path / "run" / "bank.h5"
    line = _one_error_line(CliRunner().invoke(main, [*FAST, "--views", "8", "--out", str(out)]))
    assert "--views 8" in line and "GiB" in line and "free" in line
    assert not out.exists() and not checkpoint_path(out).exists() and not list(tmp_path.rglob("*.tmp"))


def test_a_disk_too_small_for_the_views_keeps_the_checkpoint(plain, tmp_path, monkeypatch):
    base_bytes = bank_bytes({"views": 0}, 64, 10, {"train": 359, "val": 100, "test": 1000})[0]
    monkeypatch.setattr("glag.extract.dump.free_bytes", lambda folder: base_bytes * 2)      # room for the bank only
    out = tmp_path / "bank.h5"
    line = _one_error_line(redump(plain, out, "--views", 64, "--views-dtype", "float32"))
    assert "--views 64" in line and "GiB" in line
    assert not out.exists() and checkpoint_path(out).exists() and not list(tmp_path.glob(".*.tmp"))


def test_bank_bytes_per_view():
    """One view is N_train x (D + C) values of the views dtype (docs/stage-one.md's table)."""
    cfg = {"views": 1, "views_dtype": "float16", "views_logits": True}
    assert bank_bytes(cfg, 64, 10, {"train": 12406})[1] == 12406 * 74 * 2
    assert bank_bytes(dict(cfg, views_logits=False), 2048, 1000, {"train": 115846})[1] == 115846 * 2048 * 2
    assert bank_bytes(dict(cfg, views=2, views_dtype="float32"), 8, 3, {"train": 5})[1] == 2 * 5 * 11 * 4


def test_views_survive_the_damage_check(viewed, tmp_path):
    copy = tmp_path / "bank.h5"
    shutil.copy(viewed[0], copy)
    with h5py.File(copy, "r+") as f:
        del f["train_views/logits"]
        f["train_views/logits"] = np.zeros((3, 5, 10), np.float16)
    with pytest.raises(GlagError, match="train_views"):
        Bank(copy)
