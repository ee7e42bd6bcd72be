"""Logit-adjusted cross-entropy with a fixed tau (Menon et al.; paper Eq. 2)."""
import torch.nn.functional as F
from torch import Tensor

from glag.extract.names import option_help

from .base import LossBase
from .registry import register_loss


@register_loss("logit_adjust")
class LogitAdjustedLoss(LossBase):
    """CE on logits shifted by tau * log p_y, which enlarges the margin of rare classes.

    Args:
        class_counts: (C,) N_k.
        tau: strength of the adjustment; 0 is plain CE, 1 is balanced softmax. The default
            0.5 is the paper's best stage-one tau for decoupled training (Table 1); at 1 this
            loss would be `balanced_softmax` under another name.
    """
    OPTION_HELP = option_help("logit_adjust")

    def __init__(self, class_counts, tau: float = 0.5):
        super().__init__(class_counts)
        self.tau = float(tau)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:          # (B, C), (B,)
        return F.cross_entropy(logits + self.tau * self.log_prior, target)  # Eq. (2)
