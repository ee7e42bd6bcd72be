"""Label-aware smoothing (MiSLAS: Zhong et al., "Improving Calibration for Long-Tailed Recognition", CVPR 2021).

Cross-entropy against a label smoothed by a per-class factor eps_y that grows with
the class's training count: head classes, on which a network is over-confident,
are smoothed more. MiSLAS uses it to retrain the classifier in stage two.
"""
import math

import torch
from torch import Tensor

from glag.extract.names import LAS_SHAPES as SHAPES, option_help

from .base import LossBase
from .registry import register_loss


def smoothing_factors(counts, head: float, tail: float, shape: str, power: float = 3.0) -> torch.Tensor:
    """(C,) eps_y from eps_tail (rarest class) to eps_head (largest) along `shape` of the normalised count.

    With r = (N_y - N_min) / (N_max - N_min): concave tail + (head - tail) sin(r pi / 2); linear
    tail + (head - tail) r; convex head + (head - tail) sin(3 pi / 2 + r pi / 2); exp tail + (head - tail) r^power.
    """
    n = torch.as_tensor(counts, dtype=torch.float64)
    span = float(n.max() - n.min())
    r = (n - n.min()) / span if span > 0 else torch.ones_like(n)        # every class equal: all are "head"
    if shape == "concave":
        eps = tail + (head - tail) * torch.sin(r * math.pi / 2)
    elif shape == "linear":
        eps = tail + (head - tail) * r
    elif shape == "convex":
        eps = head + (head - tail) * torch.sin(1.5 * math.pi + r * math.pi / 2)
    elif shape == "exp":
        eps = tail + (head - tail) * r ** power
    else:
        raise ValueError(f"unknown smoothing shape {shape!r}; choose from {list(SHAPES)}")
    return eps.float()


@register_loss("las")
class LabelAwareSmoothing(LossBase):
    """mean over the batch of (1 - eps_y) * (-log p_y) + eps_y * mean_c(-log p_c).

    Args:
        class_counts: (C,) N_k, which set eps_y.
        smooth_head, smooth_tail: eps of the largest and of the rarest class (MiSLAS: 0.4 / 0.1 on
            CIFAR-100-LT and iNaturalist, 0.3 / 0.0 on CIFAR-10-LT and ImageNet-LT).
        shape: how eps grows with the count (MiSLAS: concave).
        power: exponent of the "exp" shape.
    """
    OPTION_HELP = option_help("las")

    def __init__(self, class_counts, smooth_head: float = 0.4, smooth_tail: float = 0.1, shape: str = "concave",
                 power: float = 3.0):
        super().__init__(class_counts)
        if not (0 <= smooth_tail <= 1 and 0 <= smooth_head <= 1):
            raise ValueError(f"smoothing factors must be in [0, 1], got head {smooth_head}, tail {smooth_tail}")
        self.register_buffer("eps", smoothing_factors(class_counts, smooth_head, smooth_tail, shape, power))  # (C,)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:            # (B, C), (B,)
        log_p = torch.log_softmax(logits.float(), dim=1)
        eps = self.eps[target]                                               # (B,)
        nll = -log_p.gather(1, target[:, None]).squeeze(1)                   # (B,)
        return ((1 - eps) * nll - eps * log_p.mean(1)).mean()
