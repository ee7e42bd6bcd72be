"""Plain cross-entropy: the stage-one baseline."""
import torch.nn.functional as F
from torch import Tensor

from .base import LossBase
from .registry import register_loss


@register_loss("ce")
class CrossEntropy(LossBase):
    """Softmax cross-entropy, ignoring the label prior (paper Eq. 1)."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:  # (B, C), (B,)
        return F.cross_entropy(logits.float(), target)              # Eq. (1); fp32 like the others
