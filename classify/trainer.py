"""The stage-two epoch loop (paper Sec. 4.2, Eq. 11): SGD with momentum, cosine schedule, synthetic
rows drawn every epoch and mixed with the current beta, beta adapted after every epoch.

Heads train in lanes: the main head, plus the probe heads an AD rule asks for
(classify/beta.py), all on the same rows in the same order with the same noise;
only their betas differ. With `--ad-refit` the main head is then trained again
from its initial weights with the betas AD ended at, held fixed: the betas of the
search come from probes that learned for the whole schedule, while the main head
of the search learned most of what it knows before AD had moved them.
"""
import contextlib
import copy
import time

import numpy as np
import torch

from .evaluate import per_class_accuracy
from .optim import SGD, cosine_lr
from .plan import batches, plan_epoch
from .progress import Progress
from .rows import to_space


class Lane:
    """One head and its optimizer."""

    def __init__(self, head, cfg: dict):
        self.head = head
        params = [p for p in head.parameters() if p.requires_grad]
        self.opt = SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])


def autocast(cfg: dict, device):
    """bf16 autocast of the head GEMMs under --amp bf16, nothing otherwise."""
    if cfg.get("amp", "none") != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def train_head(head, objective, real, synth, beta, val, cfg: dict, generator, stage1, progress: bool = True) -> list:
    """Train `head` for cfg["epochs"] epochs (twice with AD and cfg["ad_refit"]); returns the history.

    Args:
        head: a trainable HeadBase on cfg["device"].
        objective: DistillObjective (CE + alpha(T) KD on head classes).
        real: rows.RealRows of the train split.
        synth: synthetic.SyntheticRows or None (no synthetic rows).
        beta: AdaptiveBeta or None; updated from `val` after each epoch.
        val: Rows of the val split or None.
        generator: torch.Generator (CPU) for the sampler and the view choice.
        stage1: (W (C, D), b (C,)) of the stage-one head on the device: the KD teacher, on raw rows.
        progress: print a progress line on stderr about every tenth epoch.
    Returns:
        list of dicts, one per epoch: pass, epoch, lr, alpha, loss, ce, kd, rows, val_overall, seconds.
    """
    refit = bool(cfg.get("ad_refit")) and beta is not None and beta.probes > 0
    start = copy.deepcopy(head.state_dict()) if refit else None
    lanes = 1 + (beta.probes if beta else 0)
    meter = Progress(progress, cfg["epochs"], [lanes, 1] if refit else [lanes])
    run = (objective, real, synth, val, cfg, generator, stage1, meter)
    history = _passes(head, beta, *run, "search" if refit else "fit")
    if refit:
        head.load_state_dict(start)
        beta.freeze(average_last=cfg.get("ad_average", 0.0))
        history += _passes(head, beta, *run, "refit")
    return history


def _passes(head, beta, objective, real, synth, val, cfg, generator, stage1, meter, name) -> list:
    """One pass of the schedule over all lanes; the first lane is `head`."""
    E, C = cfg["epochs"], objective.head_classes.numel()
    lanes = [Lane(head, cfg)] + [Lane(copy.deepcopy(head), cfg) for _ in range(beta.probes if beta else 0)]
    meter.pass_started(1 if name == "refit" else 0)
    history = []
    for epoch in range(E):
        tick, drawn = time.perf_counter(), synth.seconds if synth is not None else 0.0
        meter.epoch_started()
        objective.update(epoch)                                   # alpha(T) of Eq. 3 for this epoch
        for lane in lanes:
            lane.opt.lr = cosine_lr(cfg["lr"], epoch, E)
        betas = beta.lane_values() if beta is not None else [None]
        plan = plan_epoch(real.labels.cpu(), C, real.count, synth, cfg, generator, epoch)
        sums = _epoch(lanes, objective, real, synth, betas, plan, epoch, cfg, stage1,
                      lambda done: meter.rows(epoch, done, len(plan), name))
        record = dict(epoch=epoch, lr=lanes[0].opt.lr, alpha=objective.alpha, rows=len(plan),
                      **dict(zip(("loss", "ce", "kd"), sums)))
        if name != "fit":
            record["pass"] = name
        with autocast(cfg, cfg["device"]):
            acc = per_class_accuracy(head, val, C) if val is not None else None
            if beta is not None:
                beta.update([lane.head for lane in lanes], val, betas)
        if acc is not None:
            record["val_overall"] = float(np.nanmean(acc))
        record["seconds"] = round(time.perf_counter() - tick, 4)  # wall time of the epoch, evaluation included
        history.append(record)
        val_text = f" val-acc {100 * record['val_overall']:.1f}%" if "val_overall" in record else ""
        meter.epoch_done(epoch, name, f"loss {record['loss']:.3f}{val_text} ({record['seconds']:.1f}s/epoch)",
                         record["seconds"], (synth.seconds if synth is not None else 0.0) - drawn)
    return history


def _epoch(lanes, objective, real, synth, betas, plan, epoch, cfg, stage1, tick) -> list:
    """One epoch of every lane on one shared order; returns [loss, ce, kd] of the first lane (row means).
    tick(rows done) after every batch (the progress meter decides whether to print)."""
    device = real.labels.device
    betas = [torch.as_tensor(b, dtype=torch.float32, device=device) if b is not None else None for b in betas]
    sums, done = torch.zeros(3, device=device), 0
    for lane in lanes:
        lane.head.train()
    every = int(cfg.get("ad_probe_every", 1))
    for step, batch in enumerate(batches(plan, synth, cfg["batch_size"], epoch, device, cfg.get("draw_chunk", 32))):
        active = lanes if step % every == 0 else lanes[:1]          # --ad-probe-every: probes on some steps only
        raw = real.raw(batch.real_rows, batch.real_views)                               # (n_real, D)
        xs, raws = _lane_rows(batch, raw, synth, betas[:len(active)], real)
        teacher = _teacher(objective, batch, raws, stage1) if objective.needs_teacher else None
        y = batch.labels
        for k, (lane, x) in enumerate(zip(active, xs)):
            with autocast(cfg, device):
                loss, ce, kd = objective(lane.head(x), y, teacher)
            lane.opt.zero_grad()
            loss.backward()
            lane.opt.step()
            if k == 0:
                sums += torch.stack([loss.detach(), ce, kd]).float() * len(y)
        done += len(y)
        tick(done)
    return (sums / max(len(plan), 1)).tolist()


def _lane_rows(batch, raw, synth, betas, real):
    """Per lane: the batch's rows in the head's space; and the first lane's raw rows (for the teacher)."""
    x_real = to_space(raw, real.space, real.lam)
    if batch.synth_at is None:
        return [x_real] * len(betas), raw
    n, D = len(batch.labels), raw.shape[1]
    xs, raws, taken = [], None, synth.take(batch.drawn, batch.synth_rows)
    for beta in betas:
        x_syn, raw_syn = synth.mix_taken(taken, beta)
        x = torch.empty((n, D), device=raw.device)
        x[batch.real_at], x[batch.synth_at] = x_real, x_syn
        xs.append(x)
        if raws is None:
            raws = torch.empty((n, D), device=raw.device)
            raws[batch.real_at], raws[batch.synth_at] = raw, raw_syn
    return xs, raws


@torch.no_grad()
def _teacher(objective, batch, raws, stage1):
    """Stage-one logits W f + b of the batch's head-class rows only (the rows KD reads). A synthetic row of a
    head class has d = 0, so its raw row is the same in every lane."""
    W, b = stage1
    rows = objective.head_classes[batch.labels]
    return torch.addmm(b, raws[rows], W.T)
