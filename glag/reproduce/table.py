"""The results of a reproduction: mean ± std over seeds per (stage-one loss, method), as markdown, CSV and a plot.

Reads result files only: each bank's stage-one metrics and each run folder's
metrics.json. Std is the sample standard deviation over seeds (ddof 1; blank
with one seed). Every file is written atomically; config.json records the
reproduction's config, the code version and the configs of the banks it read.
"""
import csv
import io
import json
from pathlib import Path

import click
import numpy as np

from glag.data.atomic import atomic_file
from glag.data.bank import Bank
from glag.data.provenance import code_version, now
from glag.extras import install_hint

from .plan import to_argv
from glag.classify.table import COLUMNS, load_metrics

STAGE_ONE = "stage one"
SPLITS = ("val", "test")


def collect(steps: list) -> tuple:
    """The per-seed accuracies of every row, and the configs of the banks read.

    A tuned method's row holds, per bank, the run of its grid with the best val accuracy.
    Returns:
        (rows, banks, chosen): rows {(loss, method): {split: [accuracy dict per seed]}} in plan order, stage
        one first for every loss; banks {"<loss>/seed<s>": {path, fingerprint, config}}; chosen
        {(loss, method): [the run picked on val, per seed]} for tuned methods.
    """
    rows, banks, chosen, families = {}, {}, {}, {}
    for step in steps:
        if step.tool == "extract":
            with Bank(step.out) as bank:
                metrics = bank.metrics
                banks[f"{step.loss}/seed{step.seed}"] = {"path": str(bank.path), "fingerprint": bank.fingerprint,
                                                         "config": bank.config}
            key = (step.loss, STAGE_ONE)
        elif step.tool == "classify" and step.family:
            families.setdefault((step.loss, step.family), {}).setdefault(step.seed, []).append(step)
            rows.setdefault((step.loss, step.family), {s: [] for s in SPLITS})   # keeps the plan's order
            continue
        elif step.tool == "classify":
            metrics, key = load_metrics(step.out), (step.loss, step.name)
        else:
            continue
        _add(rows.setdefault(key, {s: [] for s in SPLITS}), metrics)
    for key, by_seed in families.items():
        for seed, members in by_seed.items():
            best = pick_on_val(members)
            _add(rows[key], load_metrics(best.out))
            chosen.setdefault(key, []).append(best.name.split("~", 1)[-1])
    return rows, banks, chosen


def _add(per_split: dict, metrics: dict) -> None:
    for split in SPLITS:
        if metrics.get(split):
            per_split[split].append(metrics[split])


def pick_on_val(members: list):
    """The step whose run has the best val overall accuracy (the first on ties); test decides nothing."""
    scores = [((load_metrics(m.out).get("val") or {}).get("overall") or 0.0) for m in members]
    return members[int(np.argmax(scores))]


def summarise(per_seed: list) -> dict:
    """{column: (mean, std, n)} over the seeds' accuracy dicts; None values (an empty group) are left out."""
    out = {}
    for col in COLUMNS:
        vals = np.asarray([a[col] for a in per_seed if a.get(col) is not None], dtype=np.float64)
        std = float(vals.std(ddof=1)) if len(vals) > 1 else None
        out[col] = (float(vals.mean()) if len(vals) else None, std, len(vals))
    return out


def _cell(mean, std, _n) -> str:
    if mean is None:
        return "-"
    return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if std is not None else "")


def markdown(rows: dict, cfg: dict, split: str = "test", chosen: dict | None = None) -> str:
    """The results table of one split, with a header saying what was run (and what val chose)."""
    im = "listed long tail" if cfg["im"] is None else f"IM {cfg['im']:g}"
    seeds = ", ".join(map(str, cfg["seeds"]))
    tools = "; ".join(f"glag-{t}{' run' if t == 'classify' else ''} `{' '.join(to_argv(cfg[t]))}`"
                      for t in ("extract", "generate", "classify") if cfg.get(t))
    lines = [f"# {cfg['dataset']} ({im}): recipe `{cfg['recipe']}`\n",
             f"{cfg['note']}\n" if cfg.get("note") else "",
             f"Options beyond each tool's defaults (and the dataset's stage-one recipe): {tools}.\n" if tools else "",
             f"Top-1 accuracy (%) on {split}, mean ± std over seeds {seeds} (sample std). Rows: "
             "`<stage-one loss> bank / <method>`; `stage one` is the bank's own head.\n",
             "| bank / method | overall | many | medium | few | seeds |", "|---|---|---|---|---|---|"]
    for (loss, method), per_split in rows.items():
        stats = summarise(per_split[split])
        n = max(s[2] for s in stats.values())
        lines.append(f"| {loss} bank / {method} | " + " | ".join(_cell(*stats[c]) for c in COLUMNS) + f" | {n} |")
    for (loss, method), picks in (chosen or {}).items():
        lines.append(f"\n{loss} bank / {method}: chosen on val per seed: {', '.join(picks)}")
    return "\n".join(line for line in lines if line) + "\n"


def csv_text(rows: dict) -> str:
    """One line per (loss, method): seeds, then mean and std (fractions) of every column on val and test."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["loss", "method", "seeds"] + [f"{s}_{c}_{k}" for s in SPLITS for c in COLUMNS for k in ("mean", "std")])
    fmt = lambda v: "" if v is None else f"{v:.4f}"
    for (loss, method), per_split in rows.items():
        cells, n = [], 0
        for split in SPLITS:
            stats = summarise(per_split[split])
            n = max([n] + [s[2] for s in stats.values()])
            cells += [fmt(v) for c in COLUMNS for v in stats[c][:2]]
        w.writerow([loss, method, n] + cells)
    return buf.getvalue()


def plot(rows: dict, path: Path, title: str, split: str = "test") -> bool:
    """Grouped bars: one panel per column (overall / many / medium / few), methods on x, one bar per loss.

    Returns False (and says so) when matplotlib is missing.
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        click.echo(f"plot skipped: matplotlib is not installed ({install_hint('plots')})", err=True)
        return False
    losses = list(dict.fromkeys(loss for loss, _ in rows))
    methods = list(dict.fromkeys(method for _, method in rows))
    width = 0.8 / max(len(losses), 1)
    fig, axes = plt.subplots(len(COLUMNS), 1, figsize=(max(6.0, 1.2 * len(methods) + 2), 2.6 * len(COLUMNS)),
                             sharex=True)
    for ax, col in zip(axes, COLUMNS):
        for i, loss in enumerate(losses):
            stats = [summarise(rows[(loss, m)][split])[col] if (loss, m) in rows else (None, None, 0) for m in methods]
            mean = [100 * s[0] if s[0] is not None else np.nan for s in stats]
            err = [100 * s[1] if s[1] is not None else 0.0 for s in stats]
            ax.bar(np.arange(len(methods)) + (i - (len(losses) - 1) / 2) * width, mean, width, yerr=err,
                   capsize=2, label=f"{loss} bank", color=f"C{i % 10}")
        ax.set_ylabel(f"{col} (%)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_title(title)
    axes[0].legend(fontsize=7, ncol=min(len(losses), 5))
    axes[-1].set_xticks(np.arange(len(methods)), methods, rotation=20)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return True


def write_results(folder: Path, steps: list, cfg: dict) -> Path:
    """table.md, table.csv, accuracy.png and config.json into `folder`; returns the folder."""
    rows, banks, chosen = collect(steps)
    runs = [str(s.out) for s in steps if s.tool == "classify"]
    record = {"cfg": cfg, "code_version": code_version(), "created": now(), "upstream": {"banks": banks, "runs": runs}}
    record["chosen_on_val"] = {f"{loss}/{method}": picks for (loss, method), picks in chosen.items()}
    texts = {"table.md": markdown(rows, cfg, chosen=chosen), "table.csv": csv_text(rows),
             "config.json": json.dumps(record, sort_keys=True, indent=1, default=str) + "\n"}
    for name, text in texts.items():
        with atomic_file(Path(folder) / name) as tmp:
            tmp.write_text(text)
    im = "listed" if cfg["im"] is None else f"IM {cfg['im']:g}"
    plot(rows, Path(folder) / "accuracy.png", f"{cfg['dataset']} ({im}), test accuracy, mean ± std over seeds")
    return Path(folder)
