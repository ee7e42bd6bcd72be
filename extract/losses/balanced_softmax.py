"""Balanced softmax (Ren et al.): the label prior added to the logits during training."""
import torch.nn.functional as F
from torch import Tensor

from .base import LossBase
from .registry import register_loss


@register_loss("balanced_softmax")
class BalancedSoftmax(LossBase):
    """CE on logits + log p_y, i.e. Eq. 2 with tau = 1 and no option to tune."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:   # (B, C), (B,)
        return F.cross_entropy(logits + self.log_prior, target)      # Eq. (2), tau = 1
