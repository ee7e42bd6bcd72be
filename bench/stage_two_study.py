"""Stage two on one bank, every variant issue 14 (or 19) asks about, side by side (no stage one: the bank is given).

    .venv/bin/python bench/stage_two_study.py runs/cifar10-jpeg-im100/graloss/seed0/bank.h5 [--seeds 0,1,2]
    .venv/bin/python bench/stage_two_study.py BANK --family epochs --seeds 0,1,2 --folder epoch-study

Writes <bank folder>/study/table.md and table.csv: val and test accuracy of
  - the stage-one head, cRT, LWS, MiSLAS (LAS on the stage-one head), each from the
    un-augmented rows (views 0) and from the bank's augmented views (when it has them);
  - tau-norm and post-hoc LA, tau swept on val;
  - GLAG with its defaults (AD paired + KD, refit), the same on the other two heads,
    with the sign rule of old, without refit, and with the store's moments taken from the views;
  - GLAG with fixed beta (KD on, gamma 0) over a beta grid, and which beta val picks:
    the target for AD is "within 0.3 points of the beta val picks" (test accuracy);
  - GLAG with fixed beta 0.6 and no KD, the first step of Table 7 (bench/claims.py reads it).
Every knob is chosen on val; test decides nothing. Stage-two seeds: --seeds.

`--family epochs` (issue 19) runs GLAG with its defaults under each epoch design and precision
(EPOCH_VARIANTS): the gap-rule pool per epoch, len(train) draws per epoch, bf16 GEMMs, and the
probes stepping on part of the batches, so that the default is what val supports.
"""
import csv
import json
import sys
import time
from pathlib import Path

import click
import numpy as np

from glag.classify.config import defaults
from glag.classify.options import loss_option_specs
from glag.classify.run import run_stage2
from glag.data.bank import Bank

BETAS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def variants(views: int) -> dict:
    """name -> run options beyond the defaults."""
    v = {"stage1-tau": {"method": "tau_norm"}, "posthoc_la": {"method": "posthoc_la"}}
    for n in sorted({0, views}):
        for method in ("crt", "lws", "mislas"):
            v[f"{method} views{n}"] = {"method": method, "views": n}
        v[f"glag views{n}"] = {"views": n}
    v.update({"glag head lws": {"head": "lws"}, "glag head stage1": {"linear_init": "stage1"},
              "glag sign-rule": {"ad_rule": "sign", "ad_refit": False}, "glag no-refit": {"ad_refit": False},
              "glag no-kd": {"kd": False}})
    for b in BETAS:
        v[f"glag fixed {b:g}"] = {"ad": False, "beta_init": b}
    v["glag fixed 0.6 no-kd"] = {"ad": False, "kd": False, "beta_init": 0.6}
    return v


EPOCH_VARIANTS = {
    "glag defaults (epoch auto)": {},
    "glag epoch pool": {"epoch_size": "pool"},
    "glag epoch real": {"epoch_size": "real"},
    "glag epoch auto bf16": {"amp": "bf16"},
    "glag epoch real bf16": {"epoch_size": "real", "amp": "bf16"},
    "glag probes every 2": {"ad_probe_every": 2},
    "glag probes every 4": {"ad_probe_every": 4},
}


def generate(bank: Path, moments_from: str, folder: str) -> Path:
    from click.testing import CliRunner
    from glag.generate.cli import main
    out = bank.parent / folder / f"store-{moments_from}.h5"
    res = CliRunner().invoke(main, ["--bank", str(bank), "--out", str(out), "--dtype", "float16",
                                    "--moments-from", moments_from], catch_exceptions=False)
    if res.exit_code:
        raise click.ClickException(res.output)
    return out


def one(bank, store, out, name, opts, seed):
    cfg = defaults({k: v for k, (v, _) in loss_option_specs().items()})
    cfg.update(bank=str(bank), store=str(store), out=str(out), run=f"{name.replace(' ', '_')}.s{seed}", seed=seed,
               plots=False, deploy=False, overwrite=True, **opts)
    started = time.time()
    path = run_stage2(cfg, set(opts) | {"store", "seed"}, resume=True, progress=False)
    m = json.loads((path / "metrics.json").read_text())
    beta = path / "beta.json"
    final = json.loads(beta.read_text()).get("final") if beta.is_file() else None
    return {"name": name, "seed": seed, "val": m["val"]["overall"], "test": m["test"]["overall"],
            "many": m["test"]["many"], "medium": m["test"]["medium"], "few": m["test"]["few"],
            "beta": None if not final else float(np.mean(final)), "seconds": time.time() - started,
            "rows": sum(h.get("rows", 0) for h in json.loads((path / "history.json").read_text()))}


@click.command()
@click.argument("bank", type=click.Path(exists=True, dir_okay=False))
@click.option("--seeds", default="0", show_default=True)
@click.option("--only", default="", help="Comma-separated variant names (default: all).")
@click.option("--family", type=click.Choice(["issue14", "epochs"]), default="issue14", show_default=True)
@click.option("--folder", default="study", show_default=True, help="Folder beside the bank for stores, runs, tables.")
def main(bank, seeds, only, family, folder):
    bank = Path(bank)
    with Bank(bank) as b:
        views, stage1 = b.views, b.metrics
    stores = {"base": generate(bank, "base", folder)}
    if family == "epochs":
        todo = dict(EPOCH_VARIANTS)
    else:
        todo = variants(views)
        if views:
            stores["views"] = generate(bank, "views", folder)
            todo["glag moments-from-views"] = {"store": str(stores["views"])}
    if only:
        todo = {k: v for k, v in todo.items() if k in only.split(",")}
    out = bank.parent / folder / "stage2"
    rows = []
    for seed in [int(s) for s in seeds.split(",")]:
        for name, opts in todo.items():
            opts = dict(opts)
            store = opts.pop("store", stores["base"])
            rows.append(one(bank, store, out, name, opts, seed))
            r = rows[-1]
            click.echo(f"{name} s{seed}: val {100 * r['val']:.2f} test {100 * r['test']:.2f} "
                       f"({r['seconds']:.0f}s)", err=True)
    write(bank.parent / folder, rows, stage1)


def fmt(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-"
    return f"{100 * np.mean(vals):.2f}" + (f" ± {100 * np.std(vals, ddof=1):.2f}" if len(vals) > 1 else "")


def write(folder: Path, rows: list, stage1: dict):
    names = list(dict.fromkeys(r["name"] for r in rows))
    lines = ["| variant | val | test | many | medium | few | mean final beta | seconds | rows drawn |",
             "|---|---|---|---|---|---|---|---|---|"]
    if stage1.get("test"):
        s = stage1
        lines.append(f"| stage one | {fmt([s['val']['overall']])} | {fmt([s['test']['overall']])} | "
                     f"{fmt([s['test']['many']])} | {fmt([s['test']['medium']])} | {fmt([s['test']['few']])} | - | - | - |")
    for n in names:
        rs = [r for r in rows if r["name"] == n]
        beta = [r["beta"] for r in rs if r["beta"] is not None]
        lines.append(f"| {n} | {fmt([r['val'] for r in rs])} | {fmt([r['test'] for r in rs])} | "
                     f"{fmt([r['many'] for r in rs])} | {fmt([r['medium'] for r in rs])} | {fmt([r['few'] for r in rs])}"
                     f" | {f'{np.mean(beta):.2f}' if beta else '-'} | {np.mean([r['seconds'] for r in rs]):.0f} | "
                     f"{int(np.mean([r.get('rows', 0) for r in rs])):,} |")
    fixed = [n for n in names if n.startswith("glag fixed ") and not n.endswith("no-kd")]
    if fixed:
        val = {n: np.mean([r["val"] for r in rows if r["name"] == n]) for n in fixed}
        pick = max(fixed, key=lambda n: val[n])
        test = lambda n: np.mean([r["test"] for r in rows if r["name"] == n])
        lines.append(f"\nFixed beta picked on val: {pick[len('glag fixed '):]} (test {100 * test(pick):.2f}); "
                     + (f"AD (glag views*, default): test {100 * test(_default(names)):.2f}, "
                        f"{100 * (test(_default(names)) - test(pick)):+.2f} points." if _default(names) else ""))
    text = "\n".join(lines) + "\n"
    (folder / "table.md").write_text(text)
    with open(folder / "table.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    click.echo(text)


def _default(names):
    """The GLAG run with every default (views: all the bank has)."""
    glag = sorted(n for n in names if n.startswith("glag views"))
    return glag[-1] if glag else None


if __name__ == "__main__":
    sys.exit(main())
