"""The stage-two epoch loop (paper §4.2, Eq. 11): SGD with momentum, cosine schedule, synthetic
rows rebuilt every epoch with the current beta, beta adapted after every epoch."""
import time

import numpy as np
import torch

from data.cliutil import echo_progress

from .batches import SAMPLERS, concat
from .evaluate import per_class_accuracy
from .optim import SGD, cosine_lr


def train_head(head, objective, real, synth, beta, val, cfg: dict, generator, progress: bool = True) -> list:
    """Train `head` for cfg["epochs"] epochs; returns the per-epoch history.

    Args:
        head: a trainable HeadBase on cfg["device"].
        objective: DistillObjective (CE + alpha(T) KD on head classes).
        real: Rows of the real train split, with teacher logits.
        synth: SyntheticRows or None (no synthetic rows).
        beta: AdaptiveBeta or None; updated from `val` after each epoch.
        val: Rows of the val split or None.
        generator: torch.Generator for the sampler.
        progress: print a progress line on stderr about every tenth epoch.
    Returns:
        list of dicts, one per epoch: epoch, lr, alpha, loss, ce, kd, rows, val_overall, seconds.
    """
    E, B, C = cfg["epochs"], cfg["batch_size"], objective.head_classes.numel()
    params = [p for p in head.parameters() if p.requires_grad]
    opt = SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    history, started, every = [], time.time(), max(1, E // 10)
    for epoch in range(E):
        tick = time.perf_counter()
        objective.update(epoch)                                   # alpha(T) of Eq. 3 for this epoch
        opt.lr = cosine_lr(cfg["lr"], epoch, E)
        pool = concat([real, synth.rows(epoch, beta.values) if synth is not None else None])
        order = SAMPLERS[cfg["sampler"]](pool.labels, C, generator).to(pool.labels.device)
        x, y, t = pool.features[order], pool.labels[order], pool.teacher[order]  # one gather; batches are views
        head.train()
        sums = torch.zeros(3, device=y.device)
        for i in range(0, len(order), B):
            loss, ce, kd = objective(head(x[i:i + B]), y[i:i + B], t[i:i + B])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sums += torch.stack([loss.detach(), ce, kd]) * len(y[i:i + B])
        record = dict(epoch=epoch, lr=opt.lr, alpha=objective.alpha, rows=len(pool),
                      **dict(zip(("loss", "ce", "kd"), (sums / max(len(order), 1)).tolist())))
        acc = per_class_accuracy(head, val, C) if val is not None else None
        if acc is not None:
            record["val_overall"] = float(np.nanmean(acc))
        if beta is not None:
            beta.update(acc)
        record["seconds"] = round(time.perf_counter() - tick, 4)  # wall time of the epoch, evaluation included
        history.append(record)
        if progress and ((epoch + 1) % every == 0 or epoch + 1 == E):
            echo_progress(epoch + 1, E, started, "stage-two epoch",
                          f"loss {record['loss']:.3f} val {record.get('val_overall', float('nan')):.3f}")
    return history
