"""Stage one: glag-extract end to end on digits, its bad-input errors, and its building blocks."""
import math
import platform
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from glag.data.bank import Bank
from glag.data.errors import GlagError
from glag.extract.augment import BatchTransform, auto_augment, cutout, random_crop_flip
from glag.extract.backbones import Classifier
from glag.extract.checkpoint import check_compatible, checkpoint_path
from glag.extract.cli import main
from glag.extract.loaders import epoch_order, seeded, shard, split_batches
from glag.extract.recipes import RECIPES, register_recipe, resolve
from glag.extract.trainer import cosine_with_warmup

FAST = ["--dataset", "digits", "--epochs", "2", "--threads", "1"]


def extract(*args):
    result = CliRunner().invoke(main, [*FAST, *map(str, args)])
    return result


@pytest.fixture(scope="module")
def graloss_bank(tmp_path_factory):
    out = tmp_path_factory.mktemp("graloss") / "bank.h5"
    result = extract("--loss", "graloss", "--graloss-c", "3", "--out", out)
    assert result.exit_code == 0, result.output
    return out, result.output


@pytest.mark.parametrize("loss", ["ce", "graloss"])
def test_extract_writes_a_valid_bank(loss, tmp_path, graloss_bank):
    out, output = graloss_bank if loss == "graloss" else (tmp_path / "bank.h5", None)
    if output is None:
        result = extract("--loss", loss, "--out", out)
        assert result.exit_code == 0, result.output
        output = result.output
    with Bank(out) as bank:
        assert bank.loss == loss and bank.backbone == "resnet_small" and bank.dataset == "digits"
        C, D = bank.num_classes, bank.feature_dim
        assert C == 10 and bank.splits == ("train", "val", "test")
        train = bank.load("train", ("features", "labels", "logits", "index"))
        assert train["features"].shape == (bank.rows("train"), D) and train["logits"].shape[1] == C
        assert (train["features"] >= 0).all()                              # post-ReLU features
        np.testing.assert_array_equal(np.bincount(train["labels"], minlength=C), bank.train_counts)
        W, b = bank.head                                                    # logits are W f + b
        np.testing.assert_allclose(train["features"] @ W.T + b, train["logits"], rtol=1e-4, atol=1e-4)
        assert bank.rows("val") == 10 * 10 and bank.rows("test") > 800
        m = bank.metrics
        assert set(m) >= {"val", "test", "groups"} and 0 <= m["test"]["overall"] <= 1
        assert m["test"]["many"] is not None and m["test"]["few"] is not None  # relative groups on digits
        cfg = bank.config
        assert cfg["epochs"] == 2 and cfg["loss"] == loss and cfg["backbone"] == "resnet_small"
        assert cfg["dataset_meta"]["im"] == 10.0 and cfg["groups"] == "relative"
        assert ("graloss_c" in cfg) == (loss == "graloss") and not any(k.startswith("ldam_") for k in cfg)
        if loss == "graloss":
            assert cfg["graloss_c"] == 3.0 and cfg["graloss_s"] == 1.0
    assert "| method | overall | many | medium | few |" in output
    assert checkpoint_path(out).is_file()


def test_dump_only_rewrites_the_same_bank(graloss_bank, tmp_path):
    out, _ = graloss_bank
    copy = tmp_path / "bank.h5"
    checkpoint_path(copy).write_bytes(checkpoint_path(out).read_bytes())
    result = CliRunner().invoke(main, ["--dump-only", "--threads", "1", "--out", str(copy)])  # rest from ckpt
    assert result.exit_code == 0, result.output
    with Bank(out) as a, Bank(copy) as b:
        assert b.config["graloss_c"] == 3.0 and b.config["epochs"] == 2
        for split in a.splits:
            np.testing.assert_allclose(a.load(split)["features"], b.load(split)["features"], rtol=1e-5, atol=1e-6)


def test_dump_only_without_checkpoint_fails(tmp_path):
    result = extract("--dump-only", "--out", tmp_path / "bank.h5")
    assert result.exit_code == 1 and "no checkpoint" in result.output
    assert not (tmp_path / "bank.h5").exists()


def _one_error_line(result):
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert result.exit_code != 0 and len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize("args, needle", [
    (["--dataset", "mnist-nope"], "--dataset"),
    (["--im", "0.5"], "--im"),
    (["--graloss-c", "0.5"], "c > 1"),
    (["--epochs", "0"], "--epochs"),
    (["--views", "-1"], "--views"),
    (["--mixup", "-0.5"], "--mixup"),
])
def test_bad_options_fail_with_one_line_and_write_nothing(args, needle, tmp_path):
    out = tmp_path / "bank.h5"
    line = _one_error_line(extract(*args, "--out", out))
    assert needle in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", [b"junk\n", b"not a checkpoint at all", b""])
def test_pretrained_junk_file_is_refused(content, tmp_path):
    junk = tmp_path / "weights.pt"
    junk.write_bytes(content)
    out = tmp_path / "run" / "bank.h5"
    assert str(junk) in _one_error_line(extract("--pretrained", junk, "--out", out))
    assert not out.exists() and not checkpoint_path(out).exists()


def test_pretrained_that_is_not_a_state_dict_is_refused(tmp_path):
    weights = tmp_path / "list.pt"
    torch.save([1, 2, 3], weights)
    assert "not a state dict" in _one_error_line(extract("--pretrained", weights, "--out", tmp_path / "b.h5"))


def test_pretrained_state_dict_is_loaded(tmp_path):
    from glag.extract.backbones import build_backbone
    weights = tmp_path / "w.pt"
    torch.save(build_backbone("resnet_small", 1, 8).state_dict(), weights)
    result = extract("--pretrained", weights, "--epochs", "1", "--out", tmp_path / "bank.h5")
    assert result.exit_code == 0, result.output
    assert "0 missing keys" in result.output


def test_checkpoint_of_another_backbone_is_refused(tmp_path):
    out = tmp_path / "bank.h5"
    assert extract("--stop-after-epochs", "1", "--out", out).exit_code == 0
    assert checkpoint_path(out).is_file() and not out.exists()
    line = _one_error_line(extract("--backbone", "resnet32", "--out", out))
    assert "backbone='resnet_small'" in line and "--no-resume" in line
    assert not out.exists()


def test_bf16_autocast_on_cpu_is_recorded(tmp_path):
    out = tmp_path / "bank.h5"
    result = extract("--amp", "bf16", "--epochs", "1", "--out", out)
    assert result.exit_code == 0, result.output
    with Bank(out) as bank:
        assert bank.config["amp"] == "bf16" and bank.load("train")["features"].dtype == np.float32
        W, b = bank.head                                     # logits stay W f + b of the stored rows
        rows = bank.load("test", ("features", "logits"))
        np.testing.assert_allclose(rows["features"] @ W.T + b, rows["logits"], rtol=1e-4, atol=1e-4)


def _epoch_loss(output):
    return float(re.search(r"epoch 1/1 loss ([0-9.]+)", output).group(1))


def test_compiled_training_matches_eager(tmp_path):
    """--compile (torch.compile, static shapes: the smaller last batch gets its own graph) trains
    like eager mode: the same epoch loss up to the fused kernels' rounding."""
    eager, compiled = tmp_path / "eager.h5", tmp_path / "compiled.h5"
    runs = [extract("--epochs", "1", "--out", out, *flag) for out, flag in ((eager, ()), (compiled, ("--compile",)))]
    for result in runs:
        assert result.exit_code == 0, result.output
    assert _epoch_loss(runs[1].output) == pytest.approx(_epoch_loss(runs[0].output), rel=0.02)
    with Bank(compiled) as bank:
        assert bank.config["compile"] is True and np.isfinite(bank.load("test")["features"]).all()


def test_compile_mode_reaches_torch_compile_and_reduce_overhead_falls_back_off_cuda(monkeypatch):
    """--compile-mode reduce-overhead (CUDA graphs) is passed to torch.compile on a GPU only; the CPU has no
    graphs to capture and gets the default mode. An unknown mode is one line."""
    from types import SimpleNamespace

    from glag.data.errors import GlagError
    from glag.extract.trainer import compile_model
    seen = []
    monkeypatch.setattr("torch.compile", lambda net, **kw: seen.append(kw) or net)
    monkeypatch.setattr("glag.extract.trainer.check_compiler", lambda ctx: None)
    for cuda, mode in ((True, "reduce-overhead"), (False, "reduce-overhead"), (False, "max-autotune"), (False, None)):
        compile_model(object(), {"compile_mode": mode}, SimpleNamespace(cuda=cuda))
    assert [kw["mode"] for kw in seen] == ["reduce-overhead", "default", "max-autotune", "default"]
    assert all(kw["dynamic"] is False for kw in seen)
    with pytest.raises(GlagError, match="--compile-mode"):
        compile_model(object(), {"compile_mode": "fast"}, SimpleNamespace(cuda=False))


def test_compile_without_a_cpp_compiler_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))                # no g++, c++ or clang++ here
    monkeypatch.delenv("CXX", raising=False)
    out = tmp_path / "bank.h5"
    line = _one_error_line(extract("--epochs", "1", "--compile", "--out", out))
    assert "--compile" in line and "C++ compiler" in line
    assert not out.exists()


def _out_of_memory(*args, **kwargs):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_on_the_first_batch_names_a_batch_size(tmp_path, monkeypatch):
    monkeypatch.setattr(Classifier, "forward", _out_of_memory)
    out = tmp_path / "bank.h5"
    line = _one_error_line(extract("--batch-size", "64", "--out", out))
    assert "--batch-size 64" in line and "try --batch-size 32" in line
    assert not out.exists()


def test_out_of_memory_in_the_dump_names_a_dump_batch_size(tmp_path, monkeypatch):
    out = tmp_path / "bank.h5"
    assert extract("--epochs", "1", "--out", out).exit_code == 0
    out.unlink()
    monkeypatch.setattr(Classifier, "features", _out_of_memory)
    line = _one_error_line(extract("--epochs", "1", "--dump-only", "--dump-batch-size", "100", "--out", out))
    assert "--dump-batch-size 100" in line and "--dump-batch-size 50" in line
    assert not out.exists() and not list(tmp_path.glob("*.tmp*"))


def test_freed_memory_is_kept_in_a_fresh_process():
    """keep_freed_memory() is process-wide, so it is tried in a child: glibc takes all three settings."""
    code = "from glag.extract.hostmem import keep_freed_memory; print(keep_freed_memory())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ("True" if platform.libc_ver()[0] == "glibc" else "False")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (bf16 autocast, GPU-resident batches)")
def test_extract_on_cuda(tmp_path):
    out = tmp_path / "bank.h5"
    result = extract("--device", "cuda", "--out", out)
    assert result.exit_code == 0, result.output
    with Bank(out) as bank:
        assert np.isfinite(bank.load("test")["features"]).all() and bank.metrics["test"]["overall"] > 0.1


# ---- building blocks -------------------------------------------------------------------------

def test_crop_flip_returns_windows_of_the_padded_image():
    images = torch.randint(0, 256, (64, 6, 6, 3), dtype=torch.uint8)
    out = random_crop_flip(images, 6, pad=2, flip=True, generator=torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(images, (0, 0, 2, 2, 2, 2))
    mirrored = 0
    for i in range(64):
        windows = [padded[i, y:y + 6, x:x + 6] for y in range(5) for x in range(5)]
        plain = any(torch.equal(out[i], w) for w in windows)
        flipped = any(torch.equal(out[i], w.flip(1)) for w in windows)
        assert plain or flipped
        mirrored += flipped and not plain
    assert 15 < mirrored < 49                                       # about half, binomial(64, 1/2)


def test_no_flip_and_no_pad_is_identity():
    images = torch.randint(0, 256, (8, 5, 5, 1), dtype=torch.uint8)
    out = random_crop_flip(images, 5, pad=0, flip=False, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, images)


def test_transform_normalises_into_channels_last():
    cfg = dict(crop="pad", crop_pad=4, flip=True, cutout=0, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
    images = torch.full((4, 32, 32, 3), 255, dtype=torch.uint8)
    x = BatchTransform(cfg, 32, train=False)(images)
    assert x.shape == (4, 3, 32, 32) and x.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(x, torch.ones_like(x))


def test_autoaugment_draws_a_sub_policy_per_image_from_the_run_generator():
    image = torch.randint(0, 256, (1, 32, 32, 3), dtype=torch.uint8).expand(64, -1, -1, -1)
    global_state = torch.get_rng_state()
    a = auto_augment(image, "cifar10", torch.Generator().manual_seed(5))
    b = auto_augment(image, "cifar10", torch.Generator().manual_seed(5))
    c = auto_augment(image, "cifar10", torch.Generator().manual_seed(6))
    assert a.shape == image.shape and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c)           # fixed by the run's generator alone
    assert torch.equal(torch.get_rng_state(), global_state)      # torch's global stream is untouched
    distinct = {bytes(x.numpy().tobytes()) for x in a}
    assert len(distinct) > 8                                      # 64 copies, many different sub-policies


def test_autoaugment_option_trains_and_is_recorded(tmp_path):
    out = tmp_path / "bank.h5"
    result = extract("--epochs", "1", "--autoaugment", "svhn", "--out", out)
    assert result.exit_code == 0, result.output
    with Bank(out) as bank:
        assert bank.config["autoaugment"] == "svhn"


def test_checkpoints_from_before_autoaugment_still_resume():
    saved = {"epochs": 2, "crop_pad": 4}                          # written before the option existed
    check_compatible("ckpt", saved, dict(saved, autoaugment="none"))
    with pytest.raises(GlagError, match="autoaugment"):
        check_compatible("ckpt", saved, dict(saved, autoaugment="cifar10"))


def test_checkpoints_from_before_views_and_mixup_still_resume():
    saved = {"epochs": 2, "autoaugment": "none"}                  # written before the options existed
    now = dict(saved, mixup=0.0, views=4, views_dtype="float32", views_logits=False)
    check_compatible("ckpt", saved, now)                         # views are dumped, never trained
    check_compatible("ckpt", dict(now, views=0), now)
    with pytest.raises(GlagError, match="mixup"):
        check_compatible("ckpt", saved, dict(now, mixup=0.2))


def test_cutout_zeroes_one_square_per_image():
    x = cutout(torch.ones(16, 3, 32, 32), 8, torch.Generator().manual_seed(0))
    holes = (x[:, 0] == 0).sum(dim=(1, 2))
    assert (holes > 0).all() and (holes <= 81).all() and (x[:, 0] == 0).eq(x[:, 2] == 0).all()


def test_class_sampler_is_balanced_statistically():
    labels = torch.as_tensor(np.repeat(np.arange(4), [400, 40, 10, 2]))
    order = epoch_order(labels, "class", seeded(0, 0, 0))
    counts = torch.bincount(labels[order], minlength=4).numpy()
    n = len(labels)
    assert len(order) == n and abs(counts - n / 4).max() < 5 * math.sqrt(n * 0.25 * 0.75)  # 5 sigma
    tail = order[labels[order] == 3]
    assert set(tail.tolist()) == {450, 451}                         # both images of the rarest class drawn


def test_instance_order_is_a_permutation_fixed_by_seed_and_epoch():
    labels = torch.zeros(50, dtype=torch.long)
    a, b = epoch_order(labels, "instance", seeded(3, 1, 0)), epoch_order(labels, "instance", seeded(3, 1, 0))
    assert torch.equal(a, b) and sorted(a.tolist()) == list(range(50))
    assert not torch.equal(a, epoch_order(labels, "instance", seeded(3, 2, 0)))


def test_shards_cover_every_row_equally():
    order = torch.arange(11)
    parts = [shard(order, r, 3) for r in range(3)]
    assert {len(p) for p in parts} == {4} and set(torch.cat(parts).tolist()) == set(range(11))


def test_a_last_batch_of_one_is_dropped_in_training():
    assert [len(b) for b in split_batches(torch.arange(9), 4, drop_last=True)] == [4, 4]
    assert [len(b) for b in split_batches(torch.arange(9), 4, drop_last=False)] == [4, 4, 1]


def test_schedule_warms_up_linearly_then_decays_to_zero():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = cosine_with_warmup(opt, steps_per_epoch=10, cfg={"warmup_epochs": 1, "epochs": 5})
    lrs = []
    for _ in range(50):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.01) and lrs[9] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] < 0.001


def test_recipes_register_once_and_fill_unset_options():
    with pytest.raises(KeyError):
        register_recipe("digits")
    cfg = resolve({"epochs": None, "lr": 0.3, "graloss_s": None}, RECIPES["inat2018"])
    assert cfg == {"epochs": 90, "lr": 0.3, "graloss_s": 0.5}
    assert resolve({"epochs": None}, RECIPES["digits"], base={"epochs": 7}) == {"epochs": 7}


def _image_folder(root, counts, test_per_class=4, side=12):
    """<root>/{train,test}/<class>/*.png with a class-dependent brightness, so a net can learn it."""
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, per_class in (("train", counts), ("test", [test_per_class] * len(counts))):
        for k, n in enumerate(per_class):
            folder = root / split / f"class{k}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(60 * k + rng.normal(40, 10, (side, side, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.mark.parametrize("preload_mb", [64, 0])
def test_file_dataset_is_decoded_preloaded_or_per_batch(preload_mb, tmp_path):
    root = _image_folder(tmp_path / "imgs", [30, 16, 10])
    out = tmp_path / "bank.h5"
    result = CliRunner().invoke(main, [
        "--dataset", "folder", "--data-root", str(root), "--image-size", "8", "--backbone", "resnet_small",
        "--epochs", "1", "--batch-size", "8", "--im", "3", "--val-per-class", "2", "--workers", "0",
        "--threads", "1", "--preload-mb", str(preload_mb), "--out", str(out)])
    assert result.exit_code == 0, result.output
    with Bank(out) as bank:
        assert bank.config["image_size"] == 8 and bank.feature_dim == 64
        assert bank.rows("test") == 12 and bank.rows("val") == 6
        np.testing.assert_array_equal(bank.train_counts, [28, 14, 8])  # int(30 * 3 ** -k/2), 2 held out


def test_reader_options_are_refused_where_not_taken(tmp_path):
    line = _one_error_line(extract("--image-size", "16", "--out", tmp_path / "b.h5"))
    assert "--image-size" in line and "digits" in line
