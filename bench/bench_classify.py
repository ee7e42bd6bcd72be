"""Stage-two speed on a CIFAR-100-LT-sized bank: one 40-epoch GLAG run and a 24-configuration sweep.

The bank is synthetic (100 classes, 64-d post-ReLU features, 10,847 long-tailed
train rows at IM 100, balanced val/test) with a stage-one head fitted on the
long-tailed rows, so it is biased towards head classes as a real one is; the
store is built the AFG way (Tukey space, class moments, 2 nearest supports).
Targets: the run <= 10 s wall including process start and loading; the sweep
<= 3 min on 2 cores. Writes bench/results/classify.json and classify.md.

    python bench/bench_classify.py [--work DIR] [--jobs 2]
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch

from glag.data.bank import Bank, BankWriter
from glag.data.splits import group_accuracy, shot_groups
from click.testing import CliRunner

HERE = Path(__file__).resolve().parent


def lt_counts(C=100, n_max=500, im=100):
    """CIFAR-100-LT's exponential profile: n_k = int(n_max * im^(-k / (C - 1))); 10,847 rows at IM 100."""
    return np.array([int(n_max * im ** (-k / (C - 1))) for k in range(C)])


def fit_stage_one(x, y, C, steps=300, seed=0):
    """Multinomial logistic regression on the long-tailed rows: a head biased towards frequent classes."""
    torch.manual_seed(seed)
    fc = torch.nn.Linear(x.shape[1], C)
    opt = torch.optim.Adam(fc.parameters(), lr=0.05)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(fc(xt), yt).backward()
        opt.step()
    return fc.weight.detach().numpy(), fc.bias.detach().numpy()


def write_bank(path, C=100, D=64, seed=0):
    rng = np.random.default_rng(seed)
    counts = lt_counts(C)
    means = np.abs(rng.standard_normal((C, D))) * 0.6
    scale = rng.uniform(1.0, 1.6, size=(C, 1))

    def rows(per_class):
        y = np.repeat(np.arange(C), per_class)
        return np.maximum(means[y] + scale[y] * rng.standard_normal((len(y), D)), 0).astype(np.float32), y

    splits = {"train": rows(counts), "val": rows([20] * C), "test": rows([100] * C)}
    W, b = fit_stage_one(*splits["train"], C)
    with BankWriter(path, dataset="synthetic-cifar100-lt", backbone="none", loss="graloss",
                    class_names=[f"c{k}" for k in range(C)], train_counts=counts, feature_dim=D,
                    config={"graloss_form": "convex", "graloss_c": 2.0, "graloss_s": 1.0, "seed": seed}) as w:
        groups = shot_groups(counts)
        for split, (x, y) in splits.items():
            w.add_rows(split, x, y, x @ W.T + b, np.arange(len(y)))
        w.set_head(W, b)
        w.set_metrics({s: {k: v for k, v in group_accuracy((x @ W.T + b).argmax(1), y, groups).items()
                           if k != "per_class"} for s, (x, y) in splits.items() if s != "train"})
    return Path(path)


def write_store(bank_path, seed=0):
    """The bank's generator, fitted by glag-generate (K = 2, as the paper's CIFAR setting leaves it)."""
    from glag.generate.cli import main as generate
    res = CliRunner().invoke(generate, ["--bank", str(bank_path), "--k", "2", "--seed", str(seed)])
    if res.exit_code:
        raise SystemExit(res.output)
    return Path(res.stdout.strip().splitlines()[-1])


def timed(cmd):
    start = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{out.stderr[-3000:]}")
    return time.time() - start, out.stdout


def sweep_grid(path):
    grid = {"base": {"epochs": 40},
            "runs": [{"method": "glag", "beta_init": b, "ad": ad, "kd": kd}
                     for b in (0.2, 0.4, 0.6, 0.8) for ad in (True, False) for kd in (True, False)]
            + [{"method": m, "seed": s} for m in ("crt", "lws") for s in range(3)]
            + [{"method": m} for m in ("tau_norm", "ncm")]}
    path.write_text(json.dumps(grid))
    return path


@click.command()
@click.option("--work", default="", show_default=True, help="Scratch folder; empty: a new temp folder.")
@click.option("--jobs", default=2, show_default=True, help="Parallel runs in the sweep.")
@click.option("--out", default=str(HERE / "results"), show_default=True, help="Folder for classify.json/.md.")
def main(work, jobs, out):
    work = Path(work or tempfile.mkdtemp(prefix="glag-bench-classify-"))
    t0 = time.time()
    bank = write_bank(work / "bank.h5")
    store = write_store(bank)
    setup = time.time() - t0
    cli = [sys.executable, "-m", "glag.classify.cli"]
    run_s, run_out = timed(cli + ["run", "--bank", str(bank), "--run", "glag40", "--overwrite", "--no-plots"])
    crt_s, crt_out = timed(cli + ["run", "--bank", str(bank), "--method", "crt", "--run", "crt40", "--overwrite",
                                  "--no-plots"])
    grid = sweep_grid(work / "grid24.json")
    sweep_s, sweep_out = timed(cli + ["sweep", "--grid", str(grid), "--bank", str(bank), "--jobs", str(jobs)])
    rows = {"machine": f"{os.cpu_count()} cores, {sys.platform}, load average {os.getloadavg()[0]:.1f} at the end",
            "setup_s": round(setup, 1),
            "glag_run_40_epochs_s": round(run_s, 2), "crt_run_40_epochs_s": round(crt_s, 2),
            "sweep_24_configs_s": round(sweep_s, 1), "jobs": jobs, "targets": {"glag_run_s": 10, "sweep_s": 180},
            "store_mib": round(store.stat().st_size / 2 ** 20, 1)}
    res = Path(out)
    res.mkdir(parents=True, exist_ok=True)
    (res / "classify.json").write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
    (res / "classify.md").write_text(
        "# Stage-two benchmark (bench/bench_classify.py)\n\nSynthetic CIFAR-100-LT-sized bank: the accuracies test the "
        "plumbing, not the method (compare methods on a real bank). Wall times include process start.\n\n"
        + "\n".join(f"- {k}: {v}" for k, v in rows.items())
        + "\n\n## GLAG, 40 epochs\n\n" + run_out + "\n## cRT, 40 epochs\n\n" + crt_out
        + "\n## 24-configuration sweep\n\n" + sweep_out)
    click.echo(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
