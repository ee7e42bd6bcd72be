"""The README's claims table, every cell computed from the study files (nothing typed by hand).

    .venv/bin/python bench/claims.py runs/fashion-mnist-im100 runs/cifar10-jpeg-im100 \
        runs/c10-200ep/graloss/seed0/study runs/tiny-imagenet-im100 [--losses ce,graloss,logit_adjust]

Each SOURCE is one row: a reproduction's experiment folder (glag-reproduce: <loss>/seed<s>/bank.h5 and
<loss>/seed<s>/stage2/<method>/metrics.json), or the study folder bench/stage_two_study.py wrote beside
one bank (<bank folder>/study/table.csv). Cells, test top-1 %:
  (1) GraLoss bank vs CE bank, means: cRT / LWS / tau-norm / MiSLAS / GLAG (defaults);
  (2) Table 7 on the GraLoss bank: stage one -> GLAG fixed beta (no AD, no KD) -> + AD -> + AD + KD,
      then each step as a paired difference (mean ± sample std over the seeds both runs have);
  (3) GLAG (defaults, GraLoss bank) vs the strongest baseline (best test mean over every bank and
      val-tuned baseline: the hardest comparison for GLAG), then the paired difference.
A cell from one seed ends in "(1 seed)": it has no spread. A run that does not exist is "n/a".
Below the table: AD vs the fixed beta val picks (glag+KD-tuned, gamma 0), per bank. Reads result files only.
"""
import csv
import json
import sys
from pathlib import Path

import click
import numpy as np

BASELINES = ("crt", "lws", "tau_norm", "posthoc_la", "mislas")
NAMES = {"crt": "cRT", "lws": "LWS", "tau_norm": "tau-norm", "posthoc_la": "post-hoc LA", "mislas": "MiSLAS"}
STEPS = ("stage one", "glag", "glag+AD", "glag+AD+KD")        # Table 7: fixed beta -> + AD -> + AD + KD
GLAG = "glag+AD+KD"
LOSS_NAMES = {"graloss": "GraLoss", "ce": "CE", "logit_adjust": "logit-adjust", "balanced_softmax": "balanced-softmax",
              "ldam": "LDAM"}
DATASETS = {"fashion-mnist": "Fashion-MNIST-LT", "cifar10-jpeg": "CIFAR-10-LT", "cifar10": "CIFAR-10-LT",
            "cifar100": "CIFAR-100-LT", "tiny-imagenet": "Tiny-ImageNet-LT", "digits": "digits-LT"}
MINUS = "\u2212"


# ---------------------------------------------------------------- reading the study files
def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def bank_info(path: Path) -> tuple:
    """(stage-one test / val accuracy, config) of a bank."""
    from glag.data.bank import Bank
    with Bank(path) as bank:
        m = bank.metrics
        return m["test"]["overall"], (m.get("val") or {}).get("overall"), bank.config


def load_reproduce(exp: Path, losses) -> tuple:
    """{(loss, method): {seed: (test, val)}} of a glag-reproduce experiment folder, and its bank config."""
    rows, config = {}, {}
    for loss in losses:
        for seed_dir in sorted((exp / loss).glob("seed*")):
            seed = int(seed_dir.name[4:])
            if (seed_dir / "bank.h5").is_file():          # a bank still training has none yet
                test, val, config = bank_info(seed_dir / "bank.h5")
                rows.setdefault((loss, "stage one"), {})[seed] = (test, val)
            for run in (seed_dir / "stage2").glob("*/metrics.json"):
                m = metrics(run.parent)
                method = run.parent.name.split("~", 1)[0]
                point = (m["test"]["overall"], (m.get("val") or {}).get("overall"))
                if "~" not in run.parent.name:
                    rows.setdefault((loss, method), {})[seed] = point
                    continue
                keep_best(rows, (loss, method), seed, point)      # a tuned family: the member val picks
                if run.parent.name.endswith("_gamma0"):
                    keep_best(rows, (loss, "fixed-pick"), seed, point)
    return rows, config


def keep_best(rows: dict, key, seed: int, point: tuple) -> None:
    """rows[key][seed] = point when its val accuracy is the best so far (the first on ties)."""
    best = rows.setdefault(key, {}).get(seed)
    if best is None or (point[1] or 0) > (best[1] or 0):
        rows[key][seed] = point


def study_names(views: int) -> dict:
    """bench/stage_two_study.py's variant names -> claims' method names (GLAG's defaults: every view)."""
    return {"stage1-tau": "tau_norm", "posthoc_la": "posthoc_la", f"crt views{views}": "crt",
            f"lws views{views}": "lws", f"mislas views{views}": "mislas", "glag fixed 0.6 no-kd": "glag",
            "glag no-kd": "glag+AD", f"glag views{views}": GLAG}


def load_study(folder: Path) -> tuple:
    """The rows of a stage_two_study.py folder (<bank folder>/study): the bank's own loss only."""
    test, val, config = bank_info(folder.parent / "bank.h5")
    loss = config.get("loss", "graloss")
    with open(folder / "table.csv", newline="") as f:
        table = list(csv.DictReader(f))
    views = max((int(r["name"].rsplit("views", 1)[1]) for r in table if r["name"].startswith("glag views")),
                default=0)
    names = study_names(views)
    rows = {(loss, "stage one"): {int(r["seed"]): (test, val) for r in table}}
    for r in table:
        if r["name"] in names:
            rows.setdefault((loss, names[r["name"]]), {})[int(r["seed"])] = (float(r["test"]), float(r["val"]))
    for r in table:                                       # the fixed beta val picks (KD on, gamma 0)
        if r["name"].startswith("glag fixed ") and "no-kd" not in r["name"]:
            keep_best(rows, (loss, "fixed-pick"), int(r["seed"]), (float(r["test"]), float(r["val"])))
    return rows, dict(config, study=True)


# ---------------------------------------------------------------- cells
def tests(rows: dict, key) -> dict:
    return {s: v[0] for s, v in rows.get(key, {}).items()}


def mean(values: dict) -> str:
    if not values:
        return "n/a"
    return f"{100 * np.mean(list(values.values())):.1f}"


def signed(x: float) -> str:
    text = f"{x:+.1f}"
    return text.replace("-", MINUS) if text not in ("-0.0", "+0.0") else "+0.0"


def paired(a: dict, b: dict) -> str:
    """a - b over the seeds both have, in points: mean, and ± sample std with two or more seeds."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return "n/a"
    d = 100 * np.asarray([a[s] - b[s] for s in seeds])
    return signed(d.mean()) + (f" ± {d.std(ddof=1):.1f}" if len(d) > 1 else "")


def seeds_of(rows: dict, keys) -> int:
    """The fewest seeds any of `keys` that has runs has (0 when none has)."""
    return min((len(rows[k]) for k in keys if rows.get(k)), default=0)


def mark(text: str, n: int) -> str:
    return f"{text} (1 seed)" if n == 1 else text


def claim1(rows: dict) -> str:
    keys = [(loss, m) for m in ("crt", "lws", "tau_norm", "mislas", GLAG) for loss in ("graloss", "ce")]
    if not any(rows.get(k) for k in keys if k[0] == "ce"):
        return "—"
    text = " / ".join(f"{mean(tests(rows, ('graloss', m)))} vs {mean(tests(rows, ('ce', m)))}"
                      for m in ("crt", "lws", "tau_norm", "mislas", GLAG))
    return mark(text, seeds_of(rows, keys))


def claim2(rows: dict) -> str:
    keys = [("graloss", m) for m in STEPS]
    text = " → ".join(mean(tests(rows, k)) for k in keys)
    n = seeds_of(rows, keys)
    if n > 1:
        text += " (" + ", ".join(paired(tests(rows, b), tests(rows, a)) for a, b in zip(keys, keys[1:])) + ")"
    return mark(text, n)


def strongest(rows: dict) -> list:
    """The baselines (loss, method) with the best test mean, those equal to it at one decimal included, best
    first."""
    found = {k: np.mean(list(tests(rows, k).values())) for k in rows if k[1] in BASELINES and rows[k]}
    if not found:
        return []
    top = f"{100 * max(found.values()):.1f}"
    return sorted((k for k, v in found.items() if f"{100 * v:.1f}" == top), key=lambda k: -found[k])


def claim3(rows: dict) -> str:
    glag, best = tests(rows, ("graloss", GLAG)), strongest(rows)
    if not glag or not best:
        return "n/a"
    g, b = np.mean(list(glag.values())), np.mean(list(tests(rows, best[0]).values()))
    by_loss = {}
    for loss, method in best:
        by_loss.setdefault(loss, []).append(NAMES[method])
    which = "; ".join(f"{' and '.join(ms)}, {LOSS_NAMES.get(loss, loss)} bank" for loss, ms in by_loss.items())
    left, right = (f"**{100 * g:.1f}**", f"{100 * b:.1f}") if g > b else (f"{100 * g:.1f}", f"**{100 * b:.1f}**")
    text = f"{left} vs {right} ({which}): {paired(glag, tests(rows, best[0]))}"
    return mark(text, seeds_of(rows, [("graloss", GLAG), best[0]]))


def label(config: dict, rows: dict, source: Path) -> str:
    """The row's first cell: data, schedule, seeds, from the bank's own config."""
    dataset = config.get("dataset", source.name)
    name = DATASETS.get(dataset, dataset)
    im = "" if config.get("profile") == "listed" else f" IM {float(config.get('im', 0)):g}"
    n = max((len(v) for v in rows.values()), default=0)
    seeds = f"{n} seed{'s' if n != 1 else ''}"
    if config.get("study"):                  # one bank: its seeds are stage two's, not stage one's
        return f"{name}{im}, {config.get('epochs', '?')} epochs, GraLoss bank only, 1 bank, {seeds} of stage two"
    return f"{name}{im}, {config.get('epochs', '?')} epochs, {seeds}"


def row(rows: dict, config: dict, source: Path) -> str:
    return f"| {label(config, rows, source)} | {claim1(rows)} | {claim2(rows)} | {claim3(rows)} |"


def details(rows: dict, losses) -> list:
    """AD vs the fixed beta val picks (gamma 0, KD on) per bank."""
    lines = []
    for loss in losses:
        ad, pick = tests(rows, (loss, GLAG)), tests(rows, (loss, "fixed-pick"))
        if ad and pick:
            lines.append(f"  {loss}: AD {mean(ad)} vs the fixed beta val picks {mean(pick)}: {paired(ad, pick)}")
    return lines


@click.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--losses", default="ce,graloss,logit_adjust", show_default=True,
              help="Stage-one losses of a reproduction folder (those present are read).")
def main(sources, losses):
    """Print the claims table: one row per SOURCE (a reproduction folder or a stage_two_study.py folder)."""
    print("| dataset, schedule | (1) GraLoss bank vs CE bank: cRT / LWS / tau-norm / MiSLAS / GLAG | "
          "(2) Table 7 ablation, GraLoss bank (paired steps) | (3) GLAG vs best val-tuned baseline |")
    print("|---|---|---|---|")
    notes = []
    for source in map(Path, sources):
        if (source / "table.csv").is_file() and (source.parent / "bank.h5").is_file():
            rows, config = load_study(source)
        else:
            rows, config = load_reproduce(source, [x for x in losses.split(",") if (source / x).is_dir()])
        print(row(rows, config, source))
        notes += [f"{source}:"] + details(rows, sorted({k[0] for k in rows}))
    print("\nAD vs the fixed beta val picks (gamma 0, KD on), per bank:\n" + "\n".join(notes))


if __name__ == "__main__":
    sys.exit(main())
