"""Many stage-one runs at once (glag.extract.group*, glag-extract-group): the grouped network computes the N
separate ones, a group trains each run exactly as it trains alone, resumes after a kill, refuses what
cannot share a step, and its checkpoints and banks are those of glag-extract.

Why some comparisons run in float64: a grouped convolution is another kernel than N plain ones, so
fp32 results differ in the last bits, and training a small net amplifies that. Measured on this
model (resnet_small, digits): the plain fp32 step itself differs from fp64 by 0.6 % in the stem's
weight gradient after ONE step (a ReLU flips on a value ~1e-6), and two fp32 paths drift apart to
~1e-3 within 12 steps. So "the same weights as alone" is checked in float64 (both paths, same code
otherwise), where the two agree to ~2e-15; in fp32 the forward is compared, and a group's resume,
which repeats the very same kernels, is compared tightly.
"""
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from glag.data.bank import Bank
from glag.data.errors import GlagError
from glag.extract import augment, group_run, pipeline
from glag.extract.backbones import Classifier, build_backbone
from glag.extract.backbones.resnet_cifar import BasicBlock
from glag.extract.checkpoint import checkpoint_path, load_checkpoint
from glag.extract.cli import main as extract_main
from glag.extract.group import GroupedClassifier, group_backbone, merge_optimizer_states, split, split_optimizer_state
from glag.extract.group_cli import main as group_main
from glag.extract.group_trainer import GroupOutOfMemory, GroupTrainer, check_groupable

FAST = ["--dataset", "digits", "--threads", "1", "--epochs", "2"]


@pytest.fixture(autouse=True)
def one_thread():
    """Two threads on a busy 2-core machine run several times slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def models(name, cin, size, n=3, classes=5):
    out = []
    for seed in range(n):
        torch.manual_seed(seed)
        out.append(Classifier(build_backbone(name, cin, size), classes).to(memory_format=torch.channels_last))
    return out


def close(a, b, rtol=1e-5):
    """Equal up to rtol of the larger magnitude (absolute floor for values near 0)."""
    a, b = a.detach(), b.detach()
    torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * float(b.abs().max()) + 1e-12)


# ---------------------------------------------------------------- the grouped network
@pytest.mark.parametrize("name,cin,size", [("resnet_small", 1, 8), ("resnet32", 3, 16), ("resnet10", 3, 16)])
def test_grouped_forward_equals_the_separate_forwards(name, cin, size):
    nets = models(name, cin, size)
    grouped = GroupedClassifier(nets).to(memory_format=torch.channels_last)
    xs = [torch.randn(4, cin, size, size).contiguous(memory_format=torch.channels_last) for _ in nets]
    x = torch.cat(xs, 1)                                                   # (B, N Cin, H, W)
    for train in (True, False):                                            # batch statistics, then running ones
        for m in [*nets, grouped]:
            m.train(train)
        close(grouped(x), torch.stack([m(xi) for m, xi in zip(nets, xs)]))                # (N, B, C)
        close(grouped.features(x), torch.stack([m.features(xi) for m, xi in zip(nets, xs)]))  # (N, B, D)
    for net, state in zip(nets, split(grouped)):                           # running stats moved per run too
        for key, value in net.state_dict().items():
            close(state[key].to(value.dtype), value)


def test_option_a_shortcut_pads_each_runs_channels():
    """16 -> 32 channels, stride 2: each run's identity sits centred in its own 32 channels."""
    torch.manual_seed(0)
    blocks = [BasicBlock(16, 32, 2) for _ in range(3)]
    grouped = group_backbone(blocks)
    xs = [torch.randn(2, 16, 8, 8) for _ in blocks]
    close(grouped(torch.cat(xs, 1)), torch.cat([b(x) for b, x in zip(blocks, xs)], 1))


def test_split_state_dicts_load_into_classifiers_and_optimizer_states_round_trip():
    nets = models("resnet_small", 1, 8, n=2)
    grouped = GroupedClassifier(nets)
    assert list(grouped.state_dict()) == list(nets[0].state_dict())      # same names, same order
    for state in split(grouped):
        Classifier(build_backbone("resnet_small", 1, 8), 5).load_state_dict(state)   # strict
    opt = torch.optim.SGD(grouped.parameters(), lr=0.1, momentum=0.9)
    grouped(torch.randn(4, 2, 8, 8)).sum().backward()
    opt.step()
    state = opt.state_dict()
    merged = merge_optimizer_states(split_optimizer_state(state, 2))
    for index, entry in state["state"].items():
        assert torch.equal(entry["momentum_buffer"], merged["state"][index]["momentum_buffer"])


def test_layers_not_known_to_be_per_channel_and_other_shapes_are_refused():
    trunk = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(36, 4))
    trunk.feature_dim = 4
    odd = Classifier(trunk, 3)
    with pytest.raises(GlagError, match="Flatten.*glag-extract"):
        GroupedClassifier([odd, odd])
    with pytest.raises(GlagError, match="separate groups"):
        GroupedClassifier([models("resnet_small", 1, 8, n=1)[0], models("resnet32", 1, 8, n=1)[0]])


# ---------------------------------------------------------------- training: group == alone
class CastingLinear(nn.Linear):
    """The head in float64 reading the dump's float32 features."""

    def forward(self, f):
        return super().forward(f.to(self.weight.dtype))


@pytest.fixture
def float64(monkeypatch):
    """Models and batches in float64 on both paths (glag-extract and glag-extract-group)."""
    build, normalise = pipeline.build_model, augment.normalise

    def build64(*args, **kwargs):
        model = build(*args, **kwargs).double()
        model.head.__class__ = CastingLinear
        return model
    monkeypatch.setattr(pipeline, "build_model", build64)
    monkeypatch.setattr(group_run, "build_model", build64)
    monkeypatch.setattr(augment, "normalise", lambda *a: normalise(*a).double())


def alone(out, loss, seed, *extra):
    result = CliRunner().invoke(extract_main, [*FAST, "--loss", loss, "--seed", str(seed), "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    return load_checkpoint(checkpoint_path(out))


def group(root, losses, seeds, *extra):
    result = CliRunner().invoke(group_main, [*FAST, "--losses", losses, "--seeds", seeds, "--runs-root", str(root),
                                             *extra])
    assert result.exit_code == 0, result.output
    return result.output


def ckpt(root, loss, seed):
    return load_checkpoint(checkpoint_path(root / "digits-im10" / loss / f"seed{seed}" / "bank.h5"))


def same_state(a, b, rtol):
    assert a["epoch"] == b["epoch"] and a["scheduler"] == b["scheduler"]
    for key, value in a["model"].items():
        close(b["model"][key].to(value.dtype), value, rtol)
    for index, entry in a["optimizer"]["state"].items():
        close(b["optimizer"]["state"][index]["momentum_buffer"], entry["momentum_buffer"], rtol)
    keep = lambda h: [(r["epoch"], round(r["loss"], 4), r["lr"], r["alpha"]) for r in h]
    assert keep(a["history"]) == keep(b["history"])


@pytest.mark.parametrize("losses,seeds,extra", [("ce,ldam", "0,1", ["--ldam-drw-epoch", "1"]),
                                                ("graloss", "2,3", ["--mixup", "0.4"])])
def test_a_group_trains_each_run_as_it_trains_alone(losses, seeds, extra, float64, tmp_path):
    group(tmp_path / "group", losses, seeds, *extra)
    for loss in losses.split(","):
        for seed in map(int, seeds.split(",")):
            solo = tmp_path / "alone" / f"{loss}{seed}" / "bank.h5"
            same_state(alone(solo, loss, seed, *extra), ckpt(tmp_path / "group", loss, seed), rtol=1e-9)
            with Bank(solo) as a, Bank(tmp_path / "group" / "digits-im10" / loss / f"seed{seed}" / "bank.h5") as b:
                where = ("out", "current")                               # the bank is glag-extract's
                assert {k: v for k, v in a.config.items() if k not in where} == {
                    k: v for k, v in b.config.items() if k not in where}
                np.testing.assert_allclose(b.load("test")["features"], a.load("test")["features"], rtol=1e-5,
                                           atol=1e-6)


def test_a_killed_group_resumes_and_runs_behind_catch_up(float64, tmp_path):
    """Stopped after epoch 1 and again after 2, with one run's checkpoint left at epoch 1 (a kill between
    two checkpoint writes): the rerun trains that run alone to epoch 2, then all together."""
    three = ["--epochs", "3"]
    group(tmp_path / "straight", "ce,graloss", "0", *three)
    root = tmp_path / "resumed"
    group(root, "ce,graloss", "0", *three, "--stop-after-epochs", "1")
    behind = checkpoint_path(root / "digits-im10" / "graloss" / "seed0" / "bank.h5")
    shutil.copy(behind, tmp_path / "epoch1.pt")
    log = group(root, "ce,graloss", "0", *three, "--stop-after-epochs", "2")
    assert "stopped after epoch 1" in log and not list(root.rglob("bank.h5"))
    shutil.copy(tmp_path / "epoch1.pt", behind)
    log = group(root, "ce,graloss", "0", *three)
    assert "graloss seed0: epochs 1..1 to catch up" in log
    for loss in ("ce", "graloss"):
        same_state(ckpt(tmp_path / "straight", loss, 0), ckpt(root, loss, 0), rtol=1e-9)


def test_a_resumed_group_matches_the_uninterrupted_one_in_fp32(tmp_path):
    group(tmp_path / "straight", "ce,graloss", "0")
    group(tmp_path / "resumed", "ce,graloss", "0", "--stop-after-epochs", "1")
    log = group(tmp_path / "resumed", "ce,graloss", "0")
    assert "epochs 1..1" in log
    for loss in ("ce", "graloss"):
        same_state(ckpt(tmp_path / "straight", loss, 0), ckpt(tmp_path / "resumed", loss, 0), rtol=1e-5)


# ---------------------------------------------------------------- checkpoints and banks are glag-extract's
def test_glag_extract_dumps_a_group_checkpoint(tmp_path):
    group(tmp_path, "ce", "0,1")
    bank = tmp_path / "digits-im10" / "ce" / "seed1" / "bank.h5"
    copy = tmp_path / "copy" / "bank.h5"
    copy.parent.mkdir()
    shutil.copy(checkpoint_path(bank), checkpoint_path(copy))
    result = CliRunner().invoke(extract_main, ["--dump-only", "--seed", "1", "--threads", "1", "--out", str(copy)])
    assert result.exit_code == 0, result.output
    with Bank(bank) as a, Bank(copy) as b:
        for split_name in a.splits:
            np.testing.assert_array_equal(a.load(split_name)["features"], b.load(split_name)["features"])
    again = CliRunner().invoke(group_main, [*FAST, "--losses", "ce", "--seeds", "1", "--runs-root", str(tmp_path),
                                            "--dump-only"])
    assert again.exit_code == 0 and "1 banks written" in again.output


# ---------------------------------------------------------------- bad input
def one_error(args, needle, root):
    result = CliRunner().invoke(group_main, [*FAST, "--runs-root", str(root), *args])
    assert result.exit_code == 1 and needle in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    assert not list(root.rglob("bank.h5"))


@pytest.mark.parametrize("args,needle", [
    (["--losses", "ce,nope"], "unknown loss(es) ['nope']"),
    (["--seeds", "0,x"], "--seeds '0,x'"),
    (["--losses", "ce", "--seeds", "1,1"], "ce seed1 is in the group twice"),
    (["--losses", "ce,graloss", "--lr", "1e12", "--epochs", "1"], "the loss of ce seed0 diverged in epoch 0"),
])
def test_bad_group_options_are_one_line_errors(args, needle, tmp_path):
    one_error(args, needle, tmp_path)
    single = CliRunner().invoke(group_main, ["--loss", "ce"])         # one run's options are not the group's
    assert single.exit_code == 2 and "No such option '--loss'" in single.output


def test_runs_that_cannot_share_a_step_are_refused():
    cfgs = [dict(loss="ce", seed=0, batch_size=64, lr=0.1, ce_x=1), dict(loss="ldam", seed=0, batch_size=32, lr=0.1)]
    with pytest.raises(GlagError, match=r"--batch-size: runs in one group must share it .*separate groups"):
        check_groupable(cfgs)
    check_groupable([dict(cfgs[0], mixup=0.2, sampler="class"), dict(cfgs[1], batch_size=64)])  # per-run settings


def test_a_checkpoint_of_other_settings_is_refused(tmp_path):
    group(tmp_path, "ce", "0", "--stop-after-epochs", "1")
    one_error(["--losses", "ce", "--seeds", "0", "--batch-size", "32"], "pass --no-resume", tmp_path)


def test_out_of_memory_names_the_group_size_that_fits(tmp_path, monkeypatch):
    step = GroupTrainer._step

    def small_device(self, *args):         # a device where 2 runs fit and 3 do not
        if len(self.runs) > 2:
            raise GroupOutOfMemory(len(self.runs))
        return step(self, *args)
    monkeypatch.setattr(GroupTrainer, "_step", small_device)
    one_error(["--losses", "ce,graloss", "--seeds", "0,1"], "4 runs do not fit in GPU memory on the first step, "
              "2 do (measured); pass --max-group 2", tmp_path)
    log = group(tmp_path, "ce,graloss", "0,1", "--max-group", "2", "--epochs", "1")
    assert "4 banks written" in log and len(list(tmp_path.rglob("bank.h5"))) == 4
