"""The interface every stage-two head implements."""
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from glag.data.errors import GlagError


@dataclass(frozen=True)
class HeadContext:
    """What a head may start from: the bank's stage-one head and label counts.

    Attributes:
        weight: (C, D) stage-one classifier weight (in the head's feature space's units).
        bias: (C,) stage-one classifier bias.
        train_counts: (C,) N_k of the long-tailed train split.
        seed: for heads that initialise parameters at random.
    """
    weight: np.ndarray
    bias: np.ndarray
    train_counts: np.ndarray
    seed: int = 0

    @property
    def num_classes(self) -> int:
        return self.weight.shape[0]

    @property
    def feature_dim(self) -> int:
        return self.weight.shape[1]


class HeadBase(nn.Module):
    """A classifier on cached features: forward (B, D) -> (B, C).

    Lifecycle: the trainer optimises `parameters()` with SGD when `trainable`,
    then calls `calibrate(train, val)` once; post-hoc heads (not trainable)
    fit their statistics or pick their tau there. All state a deployed model
    needs lives in parameters or buffers, so `state_dict()` is the whole head.
    """
    trainable = True
    needs_train_rows = False      # calibrate() reads the train rows (else it is given None for them)

    @staticmethod
    def reuses_stage1(options: dict) -> bool:
        """True if the head (with these own options) applies the stage-one head's weights, which live in
        the raw feature space: such a head cannot run in --space tukey."""
        return False

    def calibrate(self, train: tuple, val: tuple | None) -> dict:
        """Post-training step. Args: train, val = (features (N, D), labels (N,)) tensors or None (train is None
        unless the head sets needs_train_rows).
        Returns: what was chosen (e.g. {"tau": 1.0}), recorded in metrics.json."""
        return {}

    def linear_equivalent(self) -> tuple[Tensor, Tensor] | None:
        """(W (C, D), b (C,)) of a linear layer with the same predictions, or None if there is none."""
        return None

    def forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError


def parse_taus(spec) -> list[float]:
    """A tau list from "1.0" (one value) or "START:STOP:STEP" (inclusive range)."""
    text = str(spec)
    if ":" not in text:
        return [float(text)]
    try:
        start, stop, step = (float(p) for p in text.split(":"))
    except ValueError:
        raise GlagError(f"tau range {text!r}: expected START:STOP:STEP, e.g. 0:2:0.1") from None
    if step <= 0 or stop < start:
        raise GlagError(f"tau range {text!r}: need STEP > 0 and STOP >= START")
    return [round(float(t), 10) for t in np.arange(start, stop + step / 2, step)]


def pick_on_val(logits_for, taus: list, val, option: str) -> tuple[float, dict]:
    """The tau with the best validation accuracy (first on ties).

    Args:
        logits_for: tau -> logits (N, C) of the validation features.
        val: (features, labels) or None; None is allowed only for a single tau.
        option: the CLI option that gave `taus`, for the error message.
    Returns:
        (best tau, {tau: val accuracy}).
    """
    if len(taus) == 1:
        return taus[0], {}
    if val is None:
        raise GlagError(f"{option}: sweeping tau needs a val split and the bank has none; "
                        f"give one value instead (e.g. {option} 1.0)")
    scores = {}
    with torch.no_grad():
        for tau in taus:
            scores[tau] = float((logits_for(tau).argmax(1) == val[1]).float().mean())
    best = max(taus, key=lambda t: (scores[t], -taus.index(t)))
    return best, scores
