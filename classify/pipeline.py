"""One stage-two fit from a resolved config: rows, head, objective, beta; train, calibrate, evaluate.

Reads the bank and the store, writes nothing (run.py writes the run folder). Each bank split
is read once, in its stored type, and only where the method needs it: a post-hoc head reads
val (and test, a chunk at a time), never the train split; a trained head reads the train
features and labels, never the N x C train logits (the KD teacher is W f + b per batch).
"""
from dataclasses import dataclass, field

import numpy as np
import torch

from glag.data.errors import GlagError
from glag.data.splits import group_accuracy, shot_groups
from glag.extract.losses import build_loss

from .beta import AdaptiveBeta
from .distill import DistillObjective
from .evaluate import predict, split_metrics
from .heads import HeadContext, build_head
from .memory import check_memory
from .rows import load_split, load_train, split_chunks, to_space
from .synthetic import SyntheticRows
from .trainer import autocast, train_head


@dataclass
class Fit:
    """What a stage-two fit produced; run.py turns it into files."""
    head: torch.nn.Module
    metrics: dict
    history: list = field(default_factory=list)
    beta: AdaptiveBeta | None = None
    embed: dict = field(default_factory=dict)


def tail_classes(bank, store, groups) -> np.ndarray:
    """The store's tail classes; without a store, every class outside the 'many' group."""
    if store is not None:
        return np.asarray(store.tail_classes, dtype=np.int64)
    return np.flatnonzero(groups != 0)


def _stage1(bank, device):
    W, b = bank.head
    return torch.from_numpy(W).to(device), torch.from_numpy(b).to(device)


def _objective(bank, cfg, head_mask, device):
    loss_cfg = {k: v for k, v in cfg.items() if k.startswith(cfg["loss"] + "_")}
    loss_cfg["epochs"] = max(cfg["epochs"], 1)
    try:
        base = build_loss(cfg["loss"], bank.train_counts, loss_cfg)
    except ValueError as e:
        raise GlagError(f"--loss {cfg['loss']}: {e}") from None
    return DistillObjective(base, head_mask, cfg["epochs"], kd=cfg["kd"], temperature=cfg["kd_temperature"],
                            form=cfg["kd_form"], c=cfg["kd_c"], s=cfg["kd_s"]).to(device)


def fit(cfg: dict, bank, store, progress: bool = True) -> Fit:
    """Train (or calibrate) the head of `cfg` on `bank` (+ `store`) and evaluate it on val and test."""
    threads = torch.get_num_threads()
    small = bank.feature_dim * bank.num_classes < 2 ** 20
    torch.set_num_threads(cfg["threads"] or (1 if small else threads))
    try:
        return _fit(cfg, bank, store, progress)
    finally:
        torch.set_num_threads(threads)  # a library call leaves the caller's setting as it was


def _fit(cfg, bank, store, progress):
    """fit() on the threads it chose: build rows, head and objective; train; calibrate; evaluate."""
    device, C = torch.device(cfg["device"]), bank.num_classes
    space, lam = cfg["space"], cfg["tukey_lambda"]
    groups = shot_groups(bank.train_counts, cfg["groups"])
    tail = tail_classes(bank, store, groups)
    gen = torch.Generator().manual_seed(cfg["seed"])
    stage1 = _stage1(bank, device)
    ctx = HeadContext(*(t.cpu().numpy() for t in stage1), bank.train_counts, cfg["seed"])
    head = build_head(cfg["head"], ctx, cfg).to(device)
    check_memory(cfg, bank, store, head, progress)
    real = load_train(bank, cfg, device, cfg["views"]) if head.trainable or head.needs_train_rows else None
    val = load_split(bank, "val", space, lam, device) if "val" in bank.splits else None
    beta = synth = None
    history = []
    if head.trainable:
        if cfg["epochs"] < 1:
            raise GlagError(f"--epochs {cfg['epochs']}: head {cfg['head']!r} is trained, give at least 1 epoch")
        if store is not None:
            beta = AdaptiveBeta(C, tail, cfg["beta_init"], cfg["beta_step"], cfg["beta_min"], cfg["beta_max"],
                                adaptive=cfg["ad"], rule=cfg["ad_rule"], delta=cfg["ad_delta"],
                                momentum=cfg["ad_momentum"], warmup=cfg["ad_warmup"], pool=cfg["ad_pool"],
                                criterion=cfg["ad_criterion"])
            synth = SyntheticRows(store, space, cfg["gamma"], cfg["gamma_mode"], cfg["seed"], device)
        head_mask = np.ones(C, dtype=bool)
        head_mask[tail] = False
        history = train_head(head, _objective(bank, cfg, head_mask, device), real, synth, beta, val, cfg, gen,
                             stage1, progress=progress)
    train = (to_space(real.features, space, lam), real.labels) if head.needs_train_rows else None
    calib = head.calibrate(train, (val.features, val.labels) if val is not None else None)
    with autocast(cfg, device):
        metrics = {"val": split_metrics(head, val, groups) if val is not None else None,
                   "test": _chunked_metrics(head, bank, cfg, groups)}
    metrics.update(calibration=calib, groups={"rule": cfg["groups"], "of_class": groups.tolist()},
                   tail_classes=tail.tolist(), train_counts=bank.train_counts.tolist(), class_names=bank.class_names,
                   stage1=bank.metrics, notes=run_notes(cfg, bank))
    embed = embed_sample(real, synth, beta, groups, cfg) if cfg["plots"] and real is not None else {}
    return Fit(head, metrics, history, beta, embed)


def _chunked_metrics(head, bank, cfg, groups) -> dict:
    """Accuracy on the test split, scored a chunk at a time from disk."""
    preds, labels = [], []
    for rows in split_chunks(bank, "test", cfg["space"], cfg["tukey_lambda"], cfg["device"]):
        preds.append(predict(head, rows.features).cpu().numpy())
        labels.append(rows.labels.cpu().numpy())
    return group_accuracy(np.concatenate(preds), np.concatenate(labels), groups)


def run_notes(cfg: dict, bank) -> list:
    """What a reader of the results should know about this run's inputs (also printed by run.py)."""
    notes = []
    if cfg["loss"] == "las" and not float(bank.config.get("mixup") or 0):
        notes.append("stage one had no mixup (glag-extract --mixup 0): this is label-aware smoothing on a plain "
                     "bank, not MiSLAS's whole recipe (its stage one trains with mixup)")
    return notes


def embed_sample(real, synth, beta, groups, cfg, per_class: int = 60) -> dict:
    """A few classes' rows for the t-SNE plot: half most, half least frequent; synthetic rows of the last epoch.

    Returns: {"features": (n, D), "labels": (n,), "synthetic": (n,) bool} as numpy.
    """
    y = real.labels.cpu().numpy()
    counts = np.bincount(y, minlength=len(groups))
    order = np.argsort(-counts, kind="stable")
    k = max(1, cfg["tsne_classes"] // 2)
    classes = np.unique(np.concatenate([order[:k], order[::-1][:k]]))
    feats, labels, flags = [], [], []
    for c in classes:
        idx = np.flatnonzero(y == c)[:per_class]
        raw = real.features[torch.as_tensor(idx, device=real.features.device)]
        feats.append(to_space(raw, real.space, real.lam).cpu().numpy())
        labels.append(y[idx])
        flags.append(np.zeros(len(idx), bool))
    if synth is not None:
        x, lab = synth.sample(classes, per_class, beta.values, cfg["epochs"] - 1)
        feats.append(x.cpu().numpy())
        labels.append(lab.cpu().numpy())
        flags.append(np.ones(len(lab), bool))
    return {"features": np.concatenate(feats).astype(np.float32), "labels": np.concatenate(labels),
            "synthetic": np.concatenate(flags)}
