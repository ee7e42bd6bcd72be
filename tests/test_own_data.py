"""A user's own image folder: every image kept by default, its counts said, and runs that never share a path."""
import os

import numpy as np
import pytest
from click.testing import CliRunner

from glag.data.bank import Bank
from glag.data.datasets import identity, load_dataset
from glag.data.layout import bank_path, dataset_folder
from glag.data.longtail import make_long_tail
from glag.extract.cli import main as extract
from glag.extract.recipes import long_tail_profile

COUNTS = [30, 12, 6, 3, 1]        # a long tail of the user's own, in folder-name order


def image_folder(root, counts=COUNTS, test=2, val=0, seed=0):
    """<root>/{train,test[,val]}/class<k>/<i>.png, 8x8 RGB, class k brighter than k-1."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    for split, per_class in (("train", counts), ("test", [test] * len(counts)), ("val", [val] * len(counts))):
        for k, n in enumerate(per_class):
            if not n:
                continue
            folder = root / split / f"class{k}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = np.clip(40 * k + rng.normal(30, 8, (8, 8, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def run_extract(root, *args):
    return CliRunner().invoke(extract, ["--dataset", "folder", "--data-root", str(root), "--image-size", "8",
                                        "--backbone", "resnet_small", "--epochs", "1", "--batch-size", "8",
                                        "--threads", "1", "--workers", "0", *map(str, args)])


def test_folder_keeps_every_image_with_its_counts_by_default(tmp_path):
    root = image_folder(tmp_path / "photos")
    raw = load_dataset("folder", root)
    data = make_long_tail(raw, long_tail_profile({"dataset": "folder"}), 100.0, 20)
    assert len(data.train) + len(data.val) == sum(COUNTS)                   # nothing thrown away
    held = [min(20, n // 5) for n in COUNTS]                                 # val: at most a fifth of a class
    assert data.train_counts.tolist() == [n - h for n, h in zip(COUNTS, held)] == [24, 10, 5, 3, 1]
    assert np.bincount(data.val.labels, minlength=5).tolist() == held
    assert not set(data.train.index.tolist()) & set(data.val.index.tolist())


def test_folder_with_val_keeps_exactly_its_train_counts_and_im_subsamples(tmp_path):
    root = image_folder(tmp_path / "photos", val=2)
    raw = load_dataset("folder", root)
    listed = make_long_tail(raw, long_tail_profile({"dataset": "folder"}), 100.0, 20)
    assert listed.train_counts.tolist() == COUNTS and listed.meta["val_source"] == "official"
    assert long_tail_profile({"dataset": "folder", "im": 10.0}) == "exp"      # a long tail only when asked
    assert long_tail_profile({"dataset": "cifar10", "im": 10.0}) == "exp"
    assert long_tail_profile({"dataset": "folder", "im": 10.0, "profile": "step"}) == "step"
    assert make_long_tail(raw, "exp", 30.0, 0).train_counts.tolist() == [30, 12, 5, 2, 1]


def test_glag_extract_writes_a_bank_of_all_the_images_and_says_the_counts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = image_folder(tmp_path / "photos")
    res = run_extract(root)
    assert res.exit_code == 0, res.output
    assert "train 43 images (every image, as listed; per class 24/10/5/3/1); val 9" in res.output
    bank = bank_path("runs", "folder", None, "graloss", 0, root)
    assert bank.parent.parent.parent.name == dataset_folder("folder", root) + "-listed" and bank.is_file()
    with Bank(bank) as b:
        assert b.train_counts.tolist() == [24, 10, 5, 3, 1] and b.rows("train") + b.rows("val") == sum(COUNTS)
        assert b.config["data_fingerprint"] == identity.fingerprint(load_dataset("folder", root), root)
        assert b.config["data_source"] == str(root.resolve())
    sub = run_extract(root, "--im", "10", "--val-per-class", "0")
    assert sub.exit_code == 0, sub.output and "exponential long tail, IM 10; per class 30/17/9/3/1" in sub.output
    assert bank_path("runs", "folder", 10.0, "graloss", 0, root).is_file()   # a folder of its own


def test_two_folders_with_the_same_counts_never_share_a_checkpoint_or_bank(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first, second = image_folder(tmp_path / "a" / "photos", seed=0), image_folder(tmp_path / "b" / "photos", seed=1)
    assert run_extract(first).exit_code == 0
    bank_a = bank_path("runs", "folder", None, "graloss", 0, first)
    before = bank_a.read_bytes()
    res = run_extract(second)                                 # same options, same folder name, same counts
    assert res.exit_code == 0, res.output and "is finished" not in res.output
    bank_b = bank_path("runs", "folder", None, "graloss", 0, second)
    assert bank_b != bank_a and bank_b.is_file() and bank_a.read_bytes() == before
    # the same --out for both: the second is refused in one line, the first's bank untouched
    out = tmp_path / "shared" / "bank.h5"
    assert run_extract(first, "--out", out).exit_code == 0
    kept = out.read_bytes()
    res = run_extract(second, "--out", out)
    assert res.exit_code == 1 and res.output.count("\n") == 1, res.output
    assert "checkpoint was trained on other data: data source" in res.output and "--out" in res.output
    assert out.read_bytes() == kept
    for stale in out.parent.glob("bank.ckpt.pt"):            # the bank alone, its checkpoint gone: still kept
        stale.unlink()
    res = run_extract(second, "--out", out)
    assert res.exit_code == 1 and "bank was made from other data: data source" in res.output
    assert out.read_bytes() == kept
    assert run_extract(second, "--out", out, "--no-resume").exit_code == 0       # asked for: trained over


def test_files_changed_under_the_same_root_are_refused(tmp_path):
    root = image_folder(tmp_path / "photos")
    out = tmp_path / "out" / "bank.h5"
    assert run_extract(root, "--out", out).exit_code == 0
    (root / "train" / "class0" / "0.png").unlink()             # the user removed an image
    res = run_extract(root, "--out", out)
    assert res.exit_code == 1 and "data fingerprint" in res.output and "data source" not in res.output


def test_fingerprint_follows_files_not_where_the_root_is(tmp_path):
    a = image_folder(tmp_path / "a")
    os.rename(a, tmp_path / "moved")
    moved = tmp_path / "moved"
    fp = identity.fingerprint(load_dataset("folder", moved), moved)
    assert fp == identity.fingerprint(load_dataset("folder", str(moved) + "/"), str(moved) + "/")
    b = image_folder(tmp_path / "b", counts=[30, 12, 6, 3, 2])
    assert identity.fingerprint(load_dataset("folder", b), b) != fp
    assert identity.source("digits", tmp_path) is None and identity.source("folder", moved) == str(moved.resolve())


@pytest.mark.parametrize("counts, val_per_class, expect", [([10, 4, 1], 20, [8, 4, 1]), ([100, 50], 5, [95, 45]),
                                                           ([10, 4], 0, [10, 4])])
def test_listed_holdout_takes_at_most_a_fifth(tmp_path, counts, val_per_class, expect):
    root = image_folder(tmp_path / "r", counts=counts, test=1)
    data = make_long_tail(load_dataset("folder", root), "listed", 100.0, val_per_class)
    assert data.train_counts.tolist() == expect and len(data.val) == sum(counts) - sum(expect)


def test_workers_default_to_the_cpus_this_process_may_use(monkeypatch, tmp_path):
    """--workers 4 on 2 cores made torch's DataLoader warn twice: the default is what the machine has."""
    from glag.extract import pipeline
    monkeypatch.setattr(pipeline.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert pipeline.default_workers() == 2
    root = image_folder(tmp_path / "photos")
    options = extract.make_context("glag-extract", ["--dataset", "folder", "--data-root", str(root)]).params
    assert options["workers"] is None and pipeline.resolve_config(options, load_dataset("folder", root))["workers"] == 2
    monkeypatch.setattr(pipeline.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert pipeline.default_workers() == 4
