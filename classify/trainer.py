"""The stage-two epoch loop (paper §4.2, Eq. 11): SGD with momentum, cosine schedule, synthetic
rows rebuilt every epoch with the current beta, beta adapted after every epoch.

Heads train in lanes: the main head, plus the probe heads an AD rule asks for
(classify/beta.py), all on the same rows in the same order with the same noise;
only their betas differ. With `--ad-refit` the main head is then trained again
from its initial weights with the betas AD ended at, held fixed: the betas of the
search come from probes that learned for the whole schedule, while the main head
of the search learned most of what it knows before AD had moved them.
"""
import copy
import time

import numpy as np
import torch

from glag.cli.util import echo_progress

from .batches import SAMPLERS, concat
from .evaluate import per_class_accuracy
from .optim import SGD, cosine_lr


class Lane:
    """One head and its optimizer."""

    def __init__(self, head, cfg: dict):
        self.head = head
        params = [p for p in head.parameters() if p.requires_grad]
        self.opt = SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])


def train_head(head, objective, real, synth, beta, val, cfg: dict, generator, progress: bool = True) -> list:
    """Train `head` for cfg["epochs"] epochs (twice with AD and cfg["ad_refit"]); returns the history.

    Args:
        head: a trainable HeadBase on cfg["device"].
        objective: DistillObjective (CE + alpha(T) KD on head classes).
        real: TrainRows of the real train split.
        synth: SyntheticRows or None (no synthetic rows).
        beta: AdaptiveBeta or None; updated from `val` after each epoch.
        val: Rows of the val split or None.
        generator: torch.Generator for the sampler, view choice and gamma noise.
        progress: print a progress line on stderr about every tenth epoch.
    Returns:
        list of dicts, one per epoch: pass, epoch, lr, alpha, loss, ce, kd, rows, val_overall, seconds.
    """
    refit = bool(cfg.get("ad_refit")) and beta is not None and beta.probes > 0
    start = copy.deepcopy(head.state_dict()) if refit else None
    history = _passes(head, objective, real, synth, beta, val, cfg, generator, progress, "search" if refit else "fit")
    if refit:
        head.load_state_dict(start)
        beta.freeze(average_last=cfg.get("ad_average", 0.0))
        history += _passes(head, objective, real, synth, beta, val, cfg, generator, progress, "refit")
    return history


def _passes(head, objective, real, synth, beta, val, cfg, generator, progress, name) -> list:
    """One pass of the schedule over all lanes; the first lane is `head`."""
    E, C = cfg["epochs"], objective.head_classes.numel()
    lanes = [Lane(head, cfg)] + [Lane(copy.deepcopy(head), cfg) for _ in range(beta.probes if beta else 0)]
    history, started, every = [], time.time(), max(1, E // 10)
    for epoch in range(E):
        tick = time.perf_counter()
        objective.update(epoch)                                   # alpha(T) of Eq. 3 for this epoch
        for lane in lanes:
            lane.opt.lr = cosine_lr(cfg["lr"], epoch, E)
        betas = beta.lane_values() if beta is not None else [None]
        sums, rows = _epoch(lanes, objective, real, synth, betas, epoch, cfg, C, generator)
        record = dict(epoch=epoch, lr=lanes[0].opt.lr, alpha=objective.alpha, rows=rows,
                      **dict(zip(("loss", "ce", "kd"), sums)))
        if name != "fit":
            record["pass"] = name
        acc = per_class_accuracy(head, val, C) if val is not None else None
        if acc is not None:
            record["val_overall"] = float(np.nanmean(acc))
        if beta is not None:
            beta.update([lane.head for lane in lanes], val, betas)
        record["seconds"] = round(time.perf_counter() - tick, 4)  # wall time of the epoch, evaluation included
        history.append(record)
        if progress and ((epoch + 1) % every == 0 or epoch + 1 == E):
            echo_progress(epoch + 1, E, started, f"stage-two epoch{'' if name == 'fit' else ' (' + name + ')'}",
                          f"loss {record['loss']:.3f} val-acc {100 * record.get('val_overall', float('nan')):.1f}%")
    return history


def _epoch(lanes, objective, real, synth, betas, epoch, cfg, C, generator):
    """One epoch of every lane on one shared order; returns ([loss, ce, kd] of the first lane, rows)."""
    base = real.epoch(generator)
    block = synth.block(epoch) if synth is not None else None
    pools = [concat([base, synth.mix(block, b) if block is not None else None]) for b in betas]
    order = SAMPLERS[cfg["sampler"]](pools[0].labels, C, generator).to(pools[0].labels.device)
    y = pools[0].labels[order]
    data = [(pool.features[order], pool.teacher[order]) for pool in pools]  # one gather; batches are views
    B, sums = cfg["batch_size"], torch.zeros(3, device=y.device)
    for lane in lanes:
        lane.head.train()
    for i in range(0, len(order), B):
        for k, (lane, (x, t)) in enumerate(zip(lanes, data)):
            loss, ce, kd = objective(lane.head(x[i:i + B]), y[i:i + B], t[i:i + B])
            lane.opt.zero_grad()
            loss.backward()
            lane.opt.step()
            if k == 0:
                sums += torch.stack([loss.detach(), ce, kd]) * len(y[i:i + B])
    return (sums / max(len(order), 1)).tolist(), len(order)
