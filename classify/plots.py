"""PNG plots of a run folder from its result files only; matplotlib and sklearn are imported lazily.

Legends sit outside the axes (they never hide points), counts on log axes are printed as plain
numbers, and every plot stays readable from 10 classes (digits) to 1000 (ImageNet-LT): per-class
names are written only for a few classes, and many classes get binned means instead of lines.
"""
import json
from pathlib import Path

import numpy as np

from glag.data.splits import GROUPS

GROUP_COLOURS = ("C0", "C1", "C3")     # many, medium, few
NAMED_CLASSES = 20                     # up to this many classes, points and rows carry class names


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def _plain_log_axis(axis) -> None:
    """Log-scale tick labels as plain numbers (10, 20, 50, 100), not 2x10^1."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _accuracy(values) -> np.ndarray:
    return 100 * np.asarray([np.nan if a is None else a for a in values], dtype=float)


def _binned(counts, acc, bins: int = 12):
    """Mean accuracy over log-spaced count bins (for many classes): (bin centres, means)."""
    edges = np.geomspace(counts.min(), counts.max() * 1.0001, bins + 1)
    which = np.digitize(counts, edges) - 1
    keep = [b for b in range(bins) if np.isfinite(acc[which == b]).any()]
    return (np.sqrt(edges[keep] * edges[np.array(keep) + 1]),
            np.array([np.nanmean(acc[which == b]) for b in keep]))


def per_class_plot(folder: Path, plt) -> str | None:
    """Test accuracy of every class against its training count (log x), by many/medium/few group,
    with stage one's accuracy of the same class (hollow) to show what stage two changed."""
    m = json.loads((folder / "metrics.json").read_text())
    counts, acc = np.asarray(m["train_counts"], dtype=float), _accuracy(m["test"]["per_class"])
    groups = np.asarray(m.get("groups", {}).get("of_class", [0] * len(counts)))
    before = (m.get("stage1") or {}).get("test", {}).get("per_class")
    before = _accuracy(before) if before is not None and len(before) == len(counts) else None
    synthetic = m["summary"].get("synthetic") and m.get("tail_classes")
    C, few_classes = len(counts), len(counts) <= 100
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    if before is not None and few_classes:
        ax.vlines(counts, before, acc, colors="0.75", lw=0.8, zorder=1)
        ax.scatter(counts, before, s=18, facecolors="none", edgecolors="0.45", label="stage one", zorder=2)
    for gid, name in enumerate(GROUPS):
        sel = groups == gid
        if sel.any():
            ax.scatter(counts[sel], acc[sel], s=18 if few_classes else 6, color=GROUP_COLOURS[gid], zorder=3,
                       alpha=1.0 if few_classes else 0.5, label=f"{name} ({sel.sum()} classes)")
    if not few_classes:  # a thousand points hide the trend: add binned means
        ax.plot(*_binned(counts, acc), color="k", lw=1.5, label="stage two, binned mean")
        if before is not None:
            ax.plot(*_binned(counts, before), color="0.5", lw=1.5, ls="--", label="stage one, binned mean")
    if synthetic and few_classes:
        ax.scatter(counts[m["tail_classes"]], acc[m["tail_classes"]], s=60, marker="s", facecolors="none",
                   edgecolors="k", lw=0.6, zorder=4, label="got synthetic rows")
    if C <= NAMED_CLASSES:
        for k, name in enumerate(m.get("class_names") or range(C)):
            ax.annotate(str(name), (counts[k], acc[k]), xytext=(4, 3), textcoords="offset points", fontsize=7)
    ax.axhline(100 * m["test"]["overall"], color="k", ls=":", lw=1,
               label=f"stage two overall {100 * m['test']['overall']:.1f}%")
    note = f", {len(m['tail_classes'])} with synthetic rows" if synthetic and not few_classes else ""
    ax.set(xscale="log", xlabel="training images of the class (log scale)", ylabel="test accuracy (%)",
           title=f"{m['summary']['run']}: per-class test accuracy ({C} classes{note})")
    _plain_log_axis(ax.xaxis)
    ax.set_ylim(top=min(102, ax.get_ylim()[1]))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(folder / "per_class_accuracy.png", dpi=110)
    plt.close(fig)
    return "per_class_accuracy.png"


def beta_plot(folder: Path, plt) -> str | None:
    """beta of every tail class over the epochs: a heat map (rarest class on top) under the mean and range.

    Steps of 0.05 on many overlapping lines are unreadable; a heat map shows each class on its own row,
    coloured relative to beta_init (red: raised, blue: lowered).
    """
    path = folder / "beta.json"
    if not path.is_file():
        return None
    from matplotlib.colors import TwoSlopeNorm
    beta, m = json.loads(path.read_text()), json.loads((folder / "metrics.json").read_text())
    traj = np.asarray(beta["trajectory"], dtype=float)                              # (E + 1, T)
    counts = np.asarray(m["train_counts"])[beta["tail_classes"]]
    order = np.argsort(counts, kind="stable")                                       # rarest first
    init, T = traj[0].mean(), traj.shape[1]
    spread = max(0.05, np.abs(traj - init).max())
    fig, (top, heat) = plt.subplots(2, 1, figsize=(7.5, 3.2 + min(T, 40) * 0.09), sharex=True,
                                    gridspec_kw={"height_ratios": (1, 2.5)})
    epochs = np.arange(traj.shape[0])
    top.fill_between(epochs, traj.min(1), traj.max(1), color="C0", alpha=0.2, label="min to max")
    top.plot(epochs, traj.mean(1), color="C0", label="mean")
    top.axhline(init, color="0.5", ls=":", lw=1, label=f"beta_init {init:.2f}")
    if beta.get("refit"):
        final = np.asarray(beta["final"], dtype=float)
        top.axhline(final.mean(), color="C3", ls="--", lw=1, label=f"refit with mean {final.mean():.2f}")
    top.set(ylabel="beta", title=f"confidence beta of {T} tail classes "
                                 f"({'adaptive' if beta['adaptive'] else 'fixed'})")
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    image = heat.imshow(traj[:, order].T, aspect="auto", interpolation="nearest", cmap="coolwarm",
                        norm=TwoSlopeNorm(vcenter=init, vmin=init - spread, vmax=init + spread),
                        extent=(-0.5, traj.shape[0] - 0.5, T - 0.5, -0.5))
    every = max(1, -(-T // 30))                                                     # at most 30 row labels
    rows = np.arange(0, T, every)
    heat.set_yticks(rows, [f"{beta['class_names'][order[r]]} (N={counts[order[r]]})" for r in rows], fontsize=7)
    heat.set(xlabel="epoch (0 = start)", ylabel="tail class, rarest on top")
    fig.colorbar(image, ax=heat, label="beta", pad=0.02)
    fig.tight_layout()
    fig.savefig(folder / "beta_trajectories.png", dpi=110)
    plt.close(fig)
    return "beta_trajectories.png"


def tsne_plot(folder: Path, plt, seed: int = 0) -> str | None:
    """t-SNE of the saved sample: real rows as dots, synthetic rows as crosses, one colour per class."""
    path = folder / "embed.npz"
    if not path.is_file():
        return None
    from matplotlib.lines import Line2D
    from sklearn.manifold import TSNE
    with np.load(path, allow_pickle=False) as z:
        x, y, syn = z["features"], z["labels"], z["synthetic"]
    if len(x) < 5:
        return None
    m = json.loads((folder / "metrics.json").read_text())
    names, counts = m.get("class_names"), m.get("train_counts")
    import inspect
    iters = {"max_iter" if "max_iter" in inspect.signature(TSNE).parameters else "n_iter": 500}  # sklearn < 1.5
    method = "exact" if len(x) <= 1000 else "barnes_hut"  # exact is the faster one at a few hundred rows
    xy = TSNE(n_components=2, perplexity=min(30.0, (len(x) - 1) / 3), init="pca", random_state=seed,
              method=method, **iters).fit_transform(x)
    classes = np.unique(y)
    palette = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(7.5, 5))
    handles = []
    for i, c in enumerate(classes):
        colour = palette(i % palette.N)
        for flag, marker in ((True, "x"), (False, "o")):  # real rows on top: a tail class has only a few
            sel = (y == c) & (syn == flag)
            if sel.any():
                ax.scatter(xy[sel, 0], xy[sel, 1], s=10 if flag else 14, marker=marker, color=colour,
                           lw=0.8 if flag else 0.3, edgecolors=None if flag else "k", zorder=2 + (not flag))
        label = f"{names[c] if names else c} (N={counts[c]})" if counts else f"class {c}"
        handles.append(Line2D([], [], marker="o", ls="", color=colour, label=label))
    handles += [Line2D([], [], marker=mk, ls="", color="k", label=lb)
                for mk, lb in (("o", "real row"), ("x", "synthetic row")) if (syn == (mk == "x")).any()]
    ax.set(title="t-SNE of train features: most and least frequent classes", xticks=[], yticks=[])
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(folder / "tsne.png", dpi=110)
    plt.close(fig)
    return "tsne.png"


def make_plots(folder) -> list:
    """Every plot the folder's files allow; returns the PNG names written."""
    folder, plt = Path(folder), _pyplot()
    return [name for name in (per_class_plot(folder, plt), beta_plot(folder, plt), tsne_plot(folder, plt)) if name]
