"""The numbers behind the README's claims table, from one reproduction's run folders (glag-reproduce).

    .venv/bin/python bench/claims.py runs/fashion-mnist-im100 [--losses ce,graloss,logit_adjust]

Prints, test top-1 % (mean ± sample std over seeds, and per-seed paired differences where two rows
are compared on the same banks):
  (1) GraLoss bank vs CE bank for cRT, LWS, tau-norm, MiSLAS and GLAG (defaults);
  (2) Table 7 on the GraLoss bank: stage one -> glag (fixed beta, no KD) -> +AD -> +AD+KD, each step
      as a paired difference with its spread over seeds;
  (3) GLAG with its defaults (GraLoss bank) vs the strongest val-tuned baseline (the best by test mean,
      over every bank and baseline: the hardest comparison for GLAG);
  (4) AD vs the fixed beta val picks (gamma 0, the same gamma as AD), per seed.
Reads result files only.
"""
import json
import sys
from pathlib import Path

import click
import numpy as np

BASELINES = ("crt", "lws", "tau_norm", "posthoc_la", "mislas")
GLAG = "glag+AD+KD"


def test_acc(run: Path):
    m = json.loads((run / "metrics.json").read_text())
    return m["test"]["overall"], (m.get("val") or {}).get("overall")


def per_seed(exp: Path, loss: str, method: str) -> dict:
    """{seed: test accuracy} of a method's run folder on every seed's bank (stage one from the bank)."""
    out = {}
    for seed_dir in sorted((exp / loss).glob("seed*")):
        seed = int(seed_dir.name[4:])
        if method == "stage one":
            if not (seed_dir / "bank.h5").is_file():     # a bank still training
                continue
            from glag.data.bank import Bank
            with Bank(seed_dir / "bank.h5") as b:
                out[seed] = b.metrics["test"]["overall"]
        elif method == "glag+KD-tuned":
            runs = [r for r in (seed_dir / "stage2").glob("glag+KD-tuned~*") if (r / "metrics.json").is_file()]
            if runs:
                out[seed] = test_acc(max(runs, key=lambda r: test_acc(r)[1] or 0))[0]
        elif (seed_dir / "stage2" / method / "metrics.json").is_file():
            out[seed] = test_acc(seed_dir / "stage2" / method)[0]
    return out


def fixed_beta_pick(exp: Path, loss: str) -> dict:
    """{seed: test of the gamma-0 fixed-beta run val picks}."""
    out = {}
    for seed_dir in sorted((exp / loss).glob("seed*")):
        runs = [r for r in (seed_dir / "stage2").glob("glag+KD-tuned~*_gamma0") if (r / "metrics.json").is_file()]
        if runs:
            out[int(seed_dir.name[4:])] = test_acc(max(runs, key=lambda r: test_acc(r)[1] or 0))[0]
    return out


def ms(values) -> str:
    v = 100 * np.asarray(list(values), dtype=float)
    if not len(v):
        return "-"
    return f"{v.mean():.1f}" + (f" ± {v.std(ddof=1):.1f}" if len(v) > 1 else "")


def diff(a: dict, b: dict) -> str:
    """Paired a - b over the seeds both have: mean ± sample std, in points."""
    seeds = sorted(set(a) & set(b))
    d = 100 * np.asarray([a[s] - b[s] for s in seeds])
    if not len(d):
        return "-"
    return f"{d.mean():+.1f}" + (f" ± {d.std(ddof=1):.1f}" if len(d) > 1 else "") + f" (n={len(d)})"


@click.command()
@click.argument("exp", type=click.Path(exists=True, file_okay=False))
@click.option("--losses", default="ce,graloss,logit_adjust", show_default=True)
def main(exp, losses):
    exp = Path(exp)
    losses = [l for l in losses.split(",") if (exp / l).is_dir()]
    rows = {(l, m): per_seed(exp, l, m) for l in losses
            for m in ("stage one", *BASELINES, "glag", "glag+AD", GLAG, "glag+KD-tuned")}
    print(f"# {exp.name}\n\n(1) GraLoss bank vs CE bank:")
    for m in ("crt", "lws", "tau_norm", "mislas", GLAG):
        print(f"  {m}: {ms(rows[('graloss', m)].values())} vs {ms(rows[('ce', m)].values())}")
    g = "graloss"
    steps = [("stage one", "glag"), ("glag", "glag+AD"), ("glag+AD", GLAG)]
    print(f"\n(2) Table 7 on the GraLoss bank: " + " -> ".join(ms(rows[(g, m)].values())
                                                          for m in ("stage one", "glag", "glag+AD", GLAG)))
    for a, b in steps:
        print(f"  {a} -> {b}: {diff(rows[(g, b)], rows[(g, a)])}")
    best = max(((l, m) for l in losses for m in BASELINES if rows[(l, m)]),
               key=lambda k: np.mean(list(rows[k].values())))
    print(f"\n(3) GLAG (defaults, GraLoss bank) {ms(rows[(g, GLAG)].values())} vs the best baseline "
          f"{best[1]} on the {best[0]} bank {ms(rows[best].values())}: {diff(rows[(g, GLAG)], rows[best])}")
    tuned = rows[(g, "glag+KD-tuned")]
    print(f"    GLAG with beta and gamma chosen on val (glag+KD-tuned): {ms(tuned.values())}")
    print("\n(4) AD vs the fixed beta val picks (gamma 0), per bank:")
    for l in losses:
        print(f"  {l}: AD {ms(rows[(l, GLAG)].values())} vs {ms(fixed_beta_pick(exp, l).values())}: "
              f"{diff(rows[(l, GLAG)], fixed_beta_pick(exp, l))}")


if __name__ == "__main__":
    sys.exit(main())
