"""The adaptive confidence score beta_k of GLAG (paper §4.2, "AD"), with its update rules by name.

The paper's intent: raise beta_k when more calibration helps class k on val, lower
it when it hurts. Rules (registry BETA_RULES, `--ad-rule`):

- "paired" (default): two probe heads train beside the main head on the same
  batches, with every tail beta moved by +delta and -delta. After each epoch the
  probes are compared on val. Their difference in balanced val accuracy
  (`--ad-criterion accuracy`; cross-entropy and a calibrated soft error are
  offered, both measured to pull away from accuracy's optimum) says whether
  more calibration helps; splitting it over the classes (a val row whose
  prediction changes is charged to the tail class that took it or lost it) says
  for which. The per-class part is noisy, so each class keeps `pool` of its own
  deviation from the mean slope, and the slope is smoothed over epochs. Both
  probes see the same rows, order and noise, so the difference is beta's effect
  alone, not the head still learning, and it covers every val row a tail class
  takes (head-class rows included), not only its own 10-20 images. The probes keep
  their weights across epochs, so the signal is the effect of the whole training
  so far and does not vanish when the learning rate falls; each beta moves by at
  most `step` per epoch.
- "sign": the first rule of the design note, kept for the Table 7 comparison:
  step by the sign of each tail class's val-accuracy change since the previous
  epoch. Measured not to find the val-optimal beta.

With `--ad-refit` (the trainer), the head is trained once more with the betas
averaged over the last part of the search (Polyak averaging), held fixed.
"""
import numpy as np
import torch
import torch.nn.functional as F

from glag.data.registry import registrar

from .evaluate import per_class_accuracy, predict

BETA_RULES: dict = {}
register_beta_rule = registrar(BETA_RULES, "AD rule")


@register_beta_rule("sign")
class SignRule:
    """beta_k += step * sign(acc_k(e) - acc_k(e - 1)): the old rule (no probes)."""
    probes = 0

    def __init__(self, step: float, **_):
        self.step, self.prev = float(step), None

    def offsets(self, values, tail):
        return []

    def step_for(self, heads, val, values, tail, probe_values) -> np.ndarray:
        acc = per_class_accuracy(heads[0], val, len(values))[tail]
        move = np.zeros(len(tail)) if self.prev is None else np.nan_to_num(np.sign(acc - self.prev))
        self.prev = acc
        return self.step * move


@register_beta_rule("paired")
class PairedRule:
    """Probe heads at beta +/- delta; step each tail beta against its share of the val-loss slope.

    Args:
        step: largest move of a beta per epoch (a step is the smoothed slope over its RMS across
            the tail classes, clipped to [-1, 1], times `step`).
        delta: probe offset.
        momentum: weight of the previous slope in the smoothed one (the slope of one epoch is
            the effect of a few hundred val rows; smoothing keeps a class from flipping on noise).
        pool: share of a class's own deviation from the mean slope that it keeps (0: one beta).
        criterion: one of CRITERIA (val_loss_slope).
    """
    probes = 2

    def __init__(self, step: float, delta: float = 0.1, momentum: float = 0.5, pool: float = 0.5,
                 criterion: str = "accuracy", **_):
        if criterion not in CRITERIA:
            raise ValueError(f"unknown AD criterion {criterion!r}; choose from {list(CRITERIA)}")
        self.step, self.delta, self.momentum, self.pool = float(step), float(delta), float(momentum), float(pool)
        self.criterion = criterion
        self.slope = None

    def offsets(self, values, tail):
        return [self.delta, -self.delta]

    def step_for(self, heads, val, values, tail, probe_values) -> np.ndarray:
        hi, lo = probe_values
        slope = val_loss_slope(heads[1], heads[2], val, tail, hi[tail] - lo[tail], self.criterion)
        slope = slope.mean() + self.pool * (slope - slope.mean())      # partial pooling of the per-class split
        self.slope = slope if self.slope is None else self.momentum * self.slope + (1 - self.momentum) * slope
        scale = np.sqrt(np.mean(self.slope ** 2)) + 1e-12
        return -self.step * np.clip(self.slope / scale, -1.0, 1.0)     # descend the val loss


CRITERIA = ("accuracy", "soft_error", "ce")


@torch.no_grad()
def val_loss_slope(head_hi, head_lo, val, tail, span, criterion: str = "accuracy") -> np.ndarray:
    """d(balanced val loss) / d(beta_k) for each tail class k, from the two probe heads.

    Args:
        head_hi, head_lo: heads trained with beta + delta and beta - delta.
        val: Rows of the val split.
        tail: (T,) tail class ids; span: (T,) beta_hi - beta_lo of each (> 0 unless both clip).
        criterion: "accuracy" (accuracy_slope), "soft_error": 1 - p_y with the probabilities temperature-calibrated on val
            (a smooth stand-in for the error rate: a row far on the wrong side of a boundary
            barely counts, as in accuracy), or "ce", the balanced cross-entropy (which such rows
            dominate, so its optimum can sit well away from accuracy's).
    Returns:
        (T,) slopes. The columns add up to the exact loss difference: the part the tail
        columns do not carry (head-class columns reacting) is shared evenly among the tail classes.
    """
    head_hi.eval(), head_lo.eval()
    C = head_hi(val.features[:1]).shape[1]
    counts = torch.bincount(val.labels, minlength=C).double()
    w = 1.0 / (counts[val.labels] * (counts > 0).sum())                                # balanced rows
    if criterion == "accuracy":                                                        # predictions only, chunked
        return accuracy_slope(predict(head_hi, val.features), predict(head_lo, val.features), val.labels, w, tail,
                              span, C)
    z_hi, z_lo = head_hi(val.features).double(), head_lo(val.features).double()        # (N, C)
    rows = torch.arange(len(val.labels))
    mid = (z_hi + z_lo) / 2
    T = calibrated_temperature(mid, val.labels, w) if criterion == "soft_error" else 1.0
    p_mid = torch.softmax(mid / T, dim=1)
    grad = p_mid.clone()
    grad[rows, val.labels] -= 1                                                        # dCE/dz (times T)
    if criterion == "soft_error":
        grad *= p_mid[rows, val.labels][:, None]                                       # d(1 - p_y)/dz (times T)
        loss = lambda z: 1 - torch.softmax(z / T, dim=1)[rows, val.labels]
    else:
        loss = lambda z: F.cross_entropy(z, val.labels, reduction="none")
    exact = float((w * (loss(z_hi) - loss(z_lo))).sum())
    columns = (w[:, None] * grad * (z_hi - z_lo)).sum(0).cpu().numpy() / T             # (C,) first-order split
    t = torch.as_tensor(tail).cpu().numpy()
    share = columns[t] + (exact - columns[t].sum()) / max(len(t), 1)
    return share / np.maximum(np.asarray(span, dtype=np.float64), 1e-12)


def accuracy_slope(pred_hi, pred_lo, labels, w, tail, span, C) -> np.ndarray:
    """-d(balanced val accuracy) / d(beta_k): every val row whose prediction differs between the probes
    is charged to the tail class that took it (its column rose) or else lost it; rows moving between
    two head classes are shared evenly. The charges add up to the exact accuracy difference."""
    gain = w * ((pred_hi == labels).double() - (pred_lo == labels).double())         # (N,) signed
    is_tail = torch.zeros(C, dtype=torch.bool, device=labels.device)
    is_tail[torch.as_tensor(tail, device=labels.device)] = True
    owner = torch.where(is_tail[pred_hi], pred_hi, torch.where(is_tail[pred_lo], pred_lo, -1))
    charged = torch.zeros(C, dtype=torch.float64, device=labels.device)
    charged.index_add_(0, owner.clamp_min(0), gain * (owner >= 0))
    t = torch.as_tensor(tail, device=labels.device)
    share = charged[t] + float((gain * (owner < 0)).sum()) / max(len(t), 1)
    return -share.cpu().numpy() / np.maximum(np.asarray(span, dtype=np.float64), 1e-12)


def calibrated_temperature(logits, labels, weights) -> float:
    """The temperature T minimising the weighted CE of logits / T, on a log grid (0.05 to 50)."""
    grid = torch.logspace(np.log10(0.05), np.log10(50.0), 61, dtype=logits.dtype)
    ce = [float((weights * F.cross_entropy(logits / T, labels, reduction="none")).sum()) for T in grid]
    return float(grid[int(np.argmin(ce))])


class AdaptiveBeta:
    """Per-class beta_k of the tail classes; the rest keep `init` (their rows have d = 0).

    Args:
        num_classes: C.
        tail_classes: (T,) ids whose beta adapts.
        init: starting beta (the store's beta_init by default).
        step: largest move per epoch (both rules).
        lo, hi: bounds.
        adaptive: False keeps beta fixed at `init` (Table 7's rows without AD).
        rule: a name in BETA_RULES.
        delta, momentum: the paired rule's probe offset and slope smoothing.
        warmup: epochs before the first move (the probes must first learn something to compare).
    """

    def __init__(self, num_classes: int, tail_classes, init: float = 0.6, step: float = 0.05,
                 lo: float = 0.0, hi: float = 1.0, adaptive: bool = True, rule: str = "paired",
                 delta: float = 0.1, momentum: float = 0.5, warmup: int = 0, pool: float = 0.5,
                 criterion: str = "accuracy"):
        if not lo <= hi:
            raise ValueError(f"beta bounds need lo <= hi, got [{lo}, {hi}]")
        if rule not in BETA_RULES:
            raise ValueError(f"unknown AD rule {rule!r}; choose from {sorted(BETA_RULES)}")
        self.tail = np.asarray(tail_classes, dtype=np.int64)
        self.values = np.full(num_classes, float(np.clip(init, lo, hi)))                 # (C,) beta_k
        self.lo, self.hi, self.adaptive, self.warmup = float(lo), float(hi), bool(adaptive), int(warmup)
        self.rule = BETA_RULES[rule](step=step, delta=delta, momentum=momentum, pool=pool, criterion=criterion)
        self.epoch, self.frozen, self.rule_name = 0, False, rule
        self.trajectory = [self.values[self.tail].tolist()]                               # epoch-start betas

    @property
    def probes(self) -> int:
        """Extra heads the rule trains beside the main one (0 when beta is fixed)."""
        return self.rule.probes if self.adaptive and not self.frozen and len(self.tail) else 0

    def lane_values(self) -> list:
        """(C,) beta of the main head, then of each probe head."""
        out = [self.values]
        for off in (self.rule.offsets(self.values, self.tail) if self.probes else []):
            probe = self.values.copy()
            probe[self.tail] = np.clip(probe[self.tail] + off, self.lo, self.hi)
            out.append(probe)
        return out

    def update(self, heads, val, lanes=None) -> np.ndarray:
        """Move the tail betas after an epoch.

        Args:
            heads: the main head, then the probe heads, as trained this epoch.
            val: Rows of the val split, or None (beta is only recorded).
            lanes: the lane_values() the heads were trained with.
        Returns:
            (C,) the new beta values.
        """
        if self.frozen:                       # the refit pass: betas fixed, trajectory is the search's
            return self.values
        if self.adaptive and val is not None and len(self.tail):
            lanes = lanes if lanes is not None else self.lane_values()
            move = self.rule.step_for(heads, val, self.values, self.tail, lanes[1:])
            if self.epoch >= self.warmup:
                self.values[self.tail] = np.clip(self.values[self.tail] + move, self.lo, self.hi)
        self.epoch += 1
        self.trajectory.append(self.values[self.tail].tolist())
        return self.values

    def freeze(self, average_last: float = 0.0) -> "AdaptiveBeta":
        """Stop adapting. With average_last > 0 the betas become their mean over that last fraction of
        the epochs (Polyak averaging: a constant-step search ends wherever noise left it, its average
        does not); the refit pass trains with them."""
        if average_last > 0 and len(self.tail) and len(self.trajectory) > 1:
            traj = np.asarray(self.trajectory[1:])                                         # (E, T) after each epoch
            keep = max(1, int(round(average_last * len(traj))))
            self.values[self.tail] = traj[-keep:].mean(0)
        self.frozen = True
        return self

    @property
    def final(self) -> list:
        """The tail betas the returned head was trained with last (after a refit: the averaged ones)."""
        return self.values[self.tail].tolist()
