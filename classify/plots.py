"""PNG plots of a run folder from its result files only; matplotlib and sklearn are imported lazily."""
import json
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def per_class_plot(folder: Path, plt) -> str | None:
    """Test accuracy of every class against its training count (log x)."""
    m = json.loads((folder / "metrics.json").read_text())
    counts, acc = np.asarray(m["train_counts"]), m["test"]["per_class"]
    acc = np.asarray([np.nan if a is None else a for a in acc])
    tail = np.zeros(len(counts), bool)
    tail[m.get("tail_classes", [])] = True
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(counts[~tail], 100 * acc[~tail], s=12, label="head classes (KD)")
    ax.scatter(counts[tail], 100 * acc[tail], s=12, label="tail classes (synthetic rows)")
    ax.set(xscale="log", xlabel="training images of the class", ylabel="test accuracy (%)",
           title=f"{m['summary']['run']}: per-class accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "per_class_accuracy.png", dpi=110)
    plt.close(fig)
    return "per_class_accuracy.png"


def beta_plot(folder: Path, plt, max_lines: int = 20) -> str | None:
    """beta of each tail class over the epochs (the rarest `max_lines` classes)."""
    path = folder / "beta.json"
    if not path.is_file():
        return None
    beta, m = json.loads(path.read_text()), json.loads((folder / "metrics.json").read_text())
    traj = np.asarray(beta["trajectory"])                                           # (E + 1, T)
    counts = np.asarray(m["train_counts"])[beta["tail_classes"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    for j in np.argsort(counts, kind="stable")[:max_lines]:
        ax.plot(traj[:, j], lw=1, label=f"{beta['class_names'][j]} (N={counts[j]})")
    ax.set(xlabel="epoch (0 = start)", ylabel="beta", title="confidence beta of tail classes", ylim=(-0.02, 1.02))
    if traj.shape[1] <= 10:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "beta_trajectories.png", dpi=110)
    plt.close(fig)
    return "beta_trajectories.png"


def tsne_plot(folder: Path, plt, seed: int = 0) -> str | None:
    """t-SNE of the saved sample: real rows as dots, synthetic rows as crosses, one colour per class."""
    path = folder / "embed.npz"
    if not path.is_file():
        return None
    from sklearn.manifold import TSNE
    with np.load(path, allow_pickle=False) as z:
        x, y, syn = z["features"], z["labels"], z["synthetic"]
    if len(x) < 5:
        return None
    import inspect
    iters = {"max_iter" if "max_iter" in inspect.signature(TSNE).parameters else "n_iter": 500}  # sklearn < 1.5
    method = "exact" if len(x) <= 1000 else "barnes_hut"  # exact is the faster one at a few hundred rows
    xy = TSNE(n_components=2, perplexity=min(30.0, (len(x) - 1) / 3), init="pca", random_state=seed,
              method=method, **iters).fit_transform(x)
    fig, ax = plt.subplots(figsize=(6, 5))
    for i, c in enumerate(np.unique(y)):
        for flag, marker in ((False, "o"), (True, "x")):
            sel = (y == c) & (syn == flag)
            if sel.any():
                ax.scatter(xy[sel, 0], xy[sel, 1], s=10, marker=marker, color=f"C{i % 10}",
                           label=f"class {c}{' synthetic' if flag else ''}")
    ax.set(title="t-SNE of train features (x = synthetic)", xticks=[], yticks=[])
    ax.legend(fontsize=6, markerscale=1.5)
    fig.tight_layout()
    fig.savefig(folder / "tsne.png", dpi=110)
    plt.close(fig)
    return "tsne.png"


def make_plots(folder) -> list:
    """Every plot the folder's files allow; returns the PNG names written."""
    folder, plt = Path(folder), _pyplot()
    return [name for name in (per_class_plot(folder, plt), beta_plot(folder, plt), tsne_plot(folder, plt)) if name]
