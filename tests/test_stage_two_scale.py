"""Stage two at scale (issue 19), what tests can check on small banks: each split read once and only where
needed, the memory said and checked before loading, precision and chunk choices, progress with an honest ETA,
and AD's probes on part of the steps."""
import numpy as np
import pytest
import torch

from glag.classify import memory
from glag.classify import run as run_module
from glag.classify.config import defaults, resolve_amp
from glag.classify.options import loss_option_specs
from glag.classify.progress import Progress
from glag.data.bank import Bank
from glag.data.errors import GlagError
from tests.test_classify_cli import invoke, make_bank_and_store


def options(bank, **kw):
    o = defaults({k: v for k, (v, _) in loss_option_specs().items()})
    o.update(bank=str(bank), plots=False, deploy=False, **kw)
    return o


def reads(monkeypatch) -> list:
    """Every (dataset, selection) a Bank reads, in order."""
    seen, real_read = [], Bank.read

    def spy(self, name, selection=()):
        seen.append(name)
        return real_read(self, name, selection)
    monkeypatch.setattr(Bank, "read", spy)
    return seen


def test_post_hoc_heads_never_read_the_train_split(tmp_path, monkeypatch):
    bank, _ = make_bank_and_store(tmp_path)
    seen = reads(monkeypatch)
    run_module.run_stage2(options(bank, method="posthoc_la", run="p"), {"method"}, progress=False)
    assert "train/features" not in seen                                  # not even to validate it
    seen.clear()
    run_module.run_stage2(options(bank, method="tau_norm", run="t", overwrite=True), {"method"}, progress=False)
    assert "train/features" not in seen and not any(n.endswith("logits") for n in seen)
    assert seen.count("val/features") == 1 and seen.count("test/features") >= 1


def test_a_trained_head_reads_each_split_once_and_no_logits(tmp_path, monkeypatch):
    bank, _ = make_bank_and_store(tmp_path)
    run_module.run_stage2(options(bank, epochs=1, run="first"), set(), progress=False)    # validated: cached
    seen = reads(monkeypatch)
    run_module.run_stage2(options(bank, epochs=2, run="g"), set(), progress=False)
    for name in ("train/features", "val/features"):
        assert seen.count(name) == 1, seen
    assert not any(n.endswith("/logits") for n in seen)      # the teacher is W f + b of the stored head


def test_the_memory_estimate_names_what_a_run_holds(tmp_path):
    from glag.classify.config import apply_preset, resolve_auto
    from glag.classify.heads import HeadContext, build_head
    from glag.classify.run import open_store
    bank_path, _ = make_bank_and_store(tmp_path)
    with Bank(bank_path) as bank:
        parts = {}
        for method in ("glag", "crt", "posthoc_la"):
            cfg = apply_preset(options(bank_path, method=method), {"method"})
            store = open_store(cfg, bank)
            cfg = resolve_auto(cfg, bank, store)
            ctx = HeadContext(*bank.head, bank.train_counts)
            parts[method] = memory.estimate(cfg, bank, store, build_head(cfg["head"], ctx, cfg))
            if store is not None:
                store.close()
    assert {"train rows", "generator", "synthetic chunk", "heads"} <= set(parts["glag"])
    assert "generator" not in parts["crt"] and "train rows" in parts["crt"]
    assert "train rows" not in parts["posthoc_la"] and "heads" not in parts["posthoc_la"]
    assert parts["glag"]["heads"] > parts["crt"]["heads"]                   # AD's probes: three heads, not one


def test_a_run_that_will_not_fit_is_refused_in_one_line_before_loading(tmp_path, monkeypatch):
    bank, _ = make_bank_and_store(tmp_path)
    monkeypatch.setattr(memory, "available", lambda device: 10 * 2 ** 20)
    res = invoke("run", "--bank", bank, "--epochs", 1, "--run", "big")
    assert res.exit_code == 1 and res.output.count("Error:") == 1
    assert "GiB of memory" in res.output and "--no-ad" in res.output and "10 MiB" not in res.output
    assert not (tmp_path / "stage2" / "big").exists()
    ok = invoke("run", "--bank", bank, "--method", "crt", "--epochs", 1, "--run", "small")
    assert ok.exit_code == 1                                              # 10 MiB fits nothing: still one line
    monkeypatch.undo()
    ok = invoke("run", "--bank", bank, "--method", "crt", "--epochs", 1, "--run", "small", "--no-plots")
    assert ok.exit_code == 0 and "memory: about" in ok.output


def test_amp_auto_is_bf16_only_for_large_heads_on_native_hardware(monkeypatch):
    import glag.classify.config as config
    assert resolve_amp("auto", "cpu", 64 * 10) == "none"                        # CIFAR-sized: float32 everywhere
    monkeypatch.setattr(config, "native_bf16", lambda device: "bf16")
    assert resolve_amp("auto", "cpu", 2048 * 1000) == "bf16" and resolve_amp("none", "cpu", 2048 * 1000) == "none"
    monkeypatch.setattr(config, "native_bf16", lambda device: "none")
    assert resolve_amp("auto", "cpu", 2048 * 1000) == "none" and resolve_amp("bf16", "cpu", 10) == "bf16"


def test_bf16_heads_train_and_the_run_records_it(tmp_path):
    bank, _ = make_bank_and_store(tmp_path)
    path = run_module.run_stage2(options(bank, epochs=2, amp="bf16", run="b"), {"amp"}, progress=False)
    import json
    cfg = json.loads((path / "config.json").read_text())["cfg"]
    metrics = json.loads((path / "metrics.json").read_text())
    assert cfg["amp"] == "bf16" and cfg["draw_chunk"] == 32 and 0 <= metrics["test"]["overall"] <= 1


@pytest.mark.parametrize("args, msg", [(["--draw-chunk", "0"], "--draw-chunk 0"), (["--epoch-size", "x"], "--epoch-size"),
                                       (["--ad-probe-every", "0"], "--ad-probe-every 0")])
def test_bad_scale_options_are_one_line(tmp_path, args, msg):
    bank, _ = make_bank_and_store(tmp_path)
    res = invoke("run", "--bank", bank, "--epochs", 1, *args)
    assert res.exit_code != 0 and msg in res.output and res.output.count("Error:") == 1


def test_the_eta_counts_the_refit_still_to_come(monkeypatch, capsys):
    import glag.classify.progress as progress
    clock = [1000.0]
    monkeypatch.setattr(progress.time, "time", lambda: clock[0])
    meter = Progress(True, epochs=10, lanes=[3, 1], every=0)
    meter.pass_started(0)
    for epoch in range(10):                                     # search epochs of 30 s: 6 s of draws, 8 s per head
        meter.epoch_started()
        clock[0] += 30
        meter.epoch_done(epoch, "search", "", seconds=30.0, shared=6.0)
    assert "ETA 140s" in capsys.readouterr().err                # the refit to come: 10 epochs of 6 + 8 s
    meter.pass_started(1)
    meter.epoch_started()
    clock[0] += 7
    meter.rows(4, 50, 100, "refit")                             # half of refit epoch 5
    assert "ETA 77s" in capsys.readouterr().err                 # 5.5 epochs of 14 s


def test_the_first_epoch_estimates_from_its_own_pace(monkeypatch, capsys):
    import glag.classify.progress as progress
    clock = [0.0]
    monkeypatch.setattr(progress.time, "time", lambda: clock[0])
    meter = Progress(True, epochs=4, lanes=[3, 1], every=0)
    meter.pass_started(0)
    meter.epoch_started()
    clock[0] += 15
    meter.rows(0, 1, 2, "search")                               # half an epoch of 3 heads in 15 s
    assert "ETA 145s" in capsys.readouterr().err                # 3.5 x 30 s, then 4 refit epochs of 10 s


def test_probes_step_on_every_nth_batch_only(tmp_path, monkeypatch):
    from glag.classify import optim
    steps = {}
    real_step = optim.SGD.step

    def count(self):
        steps[id(self)] = steps.get(id(self), 0) + 1
        return real_step(self)
    monkeypatch.setattr(optim.SGD, "step", count)
    bank, _ = make_bank_and_store(tmp_path)
    run_module.run_stage2(options(bank, epochs=2, ad_refit=False, ad_probe_every=2, batch_size=32, run="p"),
                          {"ad_refit", "ad_probe_every", "batch_size"}, progress=False)
    main, *probes = sorted(steps.values(), reverse=True)
    assert len(probes) == 2 and all(p == (main + 1) // 2 for p in probes)    # 360 rows / 32 = 12 steps an epoch
