"""Plots of a run folder: written from the result files, for few and for many classes, readable axes."""
import json

import numpy as np
import pytest

from tests.test_classify_cli import invoke, make_bank_and_store

pytest.importorskip("matplotlib")
from glag.classify.plots import _plain_log_axis, _pyplot, beta_plot, per_class_plot  # noqa: E402


def test_glag_run_writes_its_three_plots_and_links_them(tmp_path):
    bank, _ = make_bank_and_store(tmp_path)
    res = invoke("run", "--bank", bank, "--epochs", 3, "--run", "g", "--tsne-classes", 4)
    assert res.exit_code == 0, res.output
    run = tmp_path / "stage2" / "g"
    report = (run / "report.md").read_text()
    for name in ("per_class_accuracy.png", "beta_trajectories.png", "tsne.png"):
        assert (run / name).stat().st_size > 10_000 and f"]({name})" in report


def test_log_count_axis_reads_as_plain_numbers():
    plt = _pyplot()
    fig, ax = plt.subplots()
    ax.set(xscale="log", xlim=(5, 500))
    _plain_log_axis(ax.xaxis)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    plt.close(fig)
    assert {"10", "20", "50", "100", "200"} <= set(labels) and not any("^" in t or "times" in t for t in labels)


def _fake_run(folder, C, seed=0, tail=True):
    rng = np.random.default_rng(seed)
    counts = np.maximum(1, (500 * 0.01 ** (np.arange(C) / (C - 1)))).astype(int)
    acc = rng.uniform(0, 1, C)
    tail_classes = np.flatnonzero(counts <= 100).tolist()
    m = {"train_counts": counts.tolist(), "test": {"per_class": acc.tolist(), "overall": float(acc.mean())},
         "stage1": {"test": {"per_class": rng.uniform(0, 1, C).tolist()}},
         "groups": {"of_class": np.where(counts > 100, 0, np.where(counts >= 20, 1, 2)).tolist()},
         "summary": {"run": "fake", "synthetic": tail}, "tail_classes": tail_classes,
         "class_names": [f"n{k}" for k in range(C)]}
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps(m))
    traj = np.clip(0.6 + 0.05 * np.cumsum(rng.integers(-1, 2, (11, len(tail_classes))), 0), 0, 1)
    (folder / "beta.json").write_text(json.dumps({"tail_classes": tail_classes, "adaptive": True,
                                                  "class_names": [f"n{k}" for k in tail_classes],
                                                  "trajectory": traj.tolist()}))
    return folder


@pytest.mark.parametrize("C", [10, 1000])
def test_plots_of_few_and_many_classes_are_written(tmp_path, C):
    folder = _fake_run(tmp_path / "run", C)
    plt = _pyplot()
    assert per_class_plot(folder, plt) == "per_class_accuracy.png"
    assert beta_plot(folder, plt) == "beta_trajectories.png"
    assert (folder / "per_class_accuracy.png").is_file() and (folder / "beta_trajectories.png").is_file()
    assert not plt.get_fignums()  # every figure closed: sweeps draw hundreds
