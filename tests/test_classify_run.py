"""Run-level behaviour: optimiser, concurrent writers, the trainer's use of beta (model.pt: test_classify_deploy)."""
import json

import numpy as np
import pytest
import torch

import glag.classify.run as run_module
from glag.classify.config import defaults
from glag.classify.optim import SGD, cosine_lr
from glag.classify.options import loss_option_specs
from glag.data.errors import GlagError
from tests.conftest import write_tiny_bank
from tests.test_classify_cli import invoke, make_bank_and_store


def options(bank, **kw):
    opts = defaults({k: v for k, (v, _) in loss_option_specs().items()})
    opts.update(dict(bank=str(bank), plots=False, epochs=2), **kw)
    return opts


def test_sgd_matches_torch_sgd():
    g = torch.Generator().manual_seed(0)
    w0, grads = torch.randn(4, 3, generator=g), [torch.randn(4, 3, generator=g) for _ in range(5)]
    ours, ref = w0.clone().requires_grad_(), w0.clone().requires_grad_()
    opt_ours, opt_ref = SGD([ours], 0.1, 0.9, 5e-4), torch.optim.SGD([ref], 0.1, momentum=0.9, weight_decay=5e-4)
    for grad in grads:
        ours.grad, ref.grad = grad.clone(), grad.clone()
        opt_ours.step()
        opt_ref.step()
    assert torch.allclose(ours, ref, atol=1e-6)


def test_cosine_lr_starts_at_base_and_decays():
    lrs = [cosine_lr(0.2, e, 10) for e in range(10)]
    assert lrs[0] == 0.2 and all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[-1] > 0


def test_resume_keeps_a_finished_run_and_refuses_a_clash(tmp_path, monkeypatch):
    bank = write_tiny_bank(tmp_path / "bank.h5")
    first = run_module.run_stage2(options(bank, method="crt"), {"method"})
    stamp = (first / "metrics.json").stat().st_mtime_ns
    assert run_module.run_stage2(options(bank, method="crt"), {"method"}, resume=True) == first
    assert (first / "metrics.json").stat().st_mtime_ns == stamp

    real_fit = run_module.fit

    def racing_fit(cfg, *args, **kw):  # another process finishes the same folder while we train
        out = real_fit(cfg, *args, **kw)
        (tmp_path / "stage2" / "race").mkdir()
        (tmp_path / "stage2" / "race" / "theirs").write_text("x")
        return out
    monkeypatch.setattr(run_module, "fit", racing_fit)
    with pytest.raises(GlagError, match="another process"):
        run_module.run_stage2(options(bank, method="crt", run="race"), {"method"})
    assert sorted(p.name for p in (tmp_path / "stage2" / "race").iterdir()) == ["theirs"]
    assert sorted(p.name for p in (tmp_path / "stage2").iterdir()) == [first.name, "race"]  # no temp folders


def test_failed_run_leaves_no_folder(tmp_path, monkeypatch):
    bank = write_tiny_bank(tmp_path / "bank.h5")

    def broken(folder, *a, **k):
        (folder / "config.json").write_text("{}")
        raise RuntimeError("disk full")
    monkeypatch.setattr(run_module, "write_run", broken)
    with pytest.raises(RuntimeError):
        run_module.run_stage2(options(bank, method="crt", run="x"), {"method"})
    assert not (tmp_path / "stage2").exists() or not any((tmp_path / "stage2").iterdir())


def spy_on_mixing(monkeypatch) -> list:
    """Every beta vector the synthetic rows are mixed with, in order (the tiny bank's epoch is one batch)."""
    import glag.classify.synthetic as synthetic
    seen, real_mix = [], synthetic.SyntheticRows.mix_taken

    def spy(self, drawn, beta):
        seen.append(beta.cpu().numpy().copy())
        return real_mix(self, drawn, beta)
    monkeypatch.setattr(synthetic.SyntheticRows, "mix_taken", spy)
    return seen


def test_trainer_mixes_with_the_beta_of_each_epoch(tmp_path, monkeypatch):
    bank, _ = make_bank_and_store(tmp_path)
    seen = spy_on_mixing(monkeypatch)
    path = run_module.run_stage2(options(bank, epochs=5, beta_step=0.25, kd=False, ad_refit=False), set())
    traj = json.loads((path / "beta.json").read_text())["trajectory"]
    main, hi, lo = seen[0::3], seen[1::3], seen[2::3]                  # the main head, then the two probes
    assert np.allclose([s[[3, 4, 5]] for s in main[:5]], traj[:5])     # epoch e mixes with the betas after e - 1
    for m, h, l in zip(main, hi, lo):
        assert np.allclose(h[[3, 4, 5]], np.clip(m[[3, 4, 5]] + 0.1, 0, 1))
        assert np.allclose(l[[3, 4, 5]], np.clip(m[[3, 4, 5]] - 0.1, 0, 1))
    assert len({tuple(t) for t in traj}) > 1  # beta did move, so the check above means something


def test_refit_trains_again_with_the_averaged_betas_fixed(tmp_path, monkeypatch):
    bank, _ = make_bank_and_store(tmp_path)
    seen = spy_on_mixing(monkeypatch)
    path = run_module.run_stage2(options(bank, epochs=4, beta_step=0.25, kd=False), set())
    history = json.loads((path / "history.json").read_text())
    assert [h["pass"] for h in history] == ["search"] * 4 + ["refit"] * 4
    beta = json.loads((path / "beta.json").read_text())
    traj, final = beta["trajectory"], beta["final"]
    assert len(traj) == 5 and beta["refit"] and np.allclose(final, np.mean(traj[3:5], axis=0))  # last half's mean
    refit = seen[12:]                                                 # 4 epochs x 3 lanes, then one lane
    assert len(refit) == 4 and all(np.allclose(b[[3, 4, 5]], final) for b in refit)
