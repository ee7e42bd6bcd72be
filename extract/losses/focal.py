"""Focal loss (Lin et al.): down-weights examples the model already gets right."""
import torch
from torch import Tensor

from .base import LossBase
from glag.extract.names import option_help

from .registry import register_loss


@register_loss("focal")
class FocalLoss(LossBase):
    """mean over the batch of -(1 - p_t)^gamma * log p_t.

    Args:
        class_counts: (C,) N_k (unused by the formula; kept for the common interface).
        gamma: focusing parameter (>= 0); 0 is plain CE.
    """
    OPTION_HELP = option_help("focal")

    def __init__(self, class_counts, gamma: float = 1.0):
        super().__init__(class_counts)
        if gamma < 0:
            raise ValueError(f"focal loss needs gamma >= 0, got {gamma}")
        self.gamma = float(gamma)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:            # (B, C), (B,)
        log_pt = torch.log_softmax(logits.float(), dim=1).gather(1, target[:, None]).squeeze(1)  # (B,)
        # clamp: 1 - exp(log p_t) can round to a tiny negative number
        weight = (1 - log_pt.exp()).clamp_min(0) ** self.gamma               # (B,)
        return -(weight * log_pt).mean()
