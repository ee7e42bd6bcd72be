"""GraLoss, the Gradual Balanced Loss (paper Sec. 4.1, Eq. 3-4)."""
import torch.nn.functional as F
from torch import Tensor

from glag.extract.names import option_help

from .base import LossBase
from .registry import register_loss
from .schedule import alpha_t


@register_loss("graloss")
class GradualBalancedLoss(LossBase):
    """Logit-adjusted CE whose strength alpha grows from 0 over training.

    Early epochs learn features as plain CE does; later epochs, when the cosine
    learning rate is small, move the decision boundaries away from the tail classes.

    Args:
        class_counts: (C,) N_k, for log p_y.
        form: alpha curve, one of ALPHA_FORMS (paper Table 5; convex is best).
        c: curvature of Eq. 3 (> 1); alpha ends at s * (c - 1).
        s: scale of Eq. 3 (paper: 1, or 0.5 on iNaturalist).
        total_epochs: training epochs T_max, from the trainer's config.
    """
    OPTION_HELP = option_help("graloss")

    def __init__(self, class_counts, form: str = "convex", c: float = 2.0, s: float = 1.0,
                 total_epochs: int = 200):
        super().__init__(class_counts)
        self.form, self.c, self.s, self.total_epochs = form, float(c), float(s), int(total_epochs)
        self.alpha = alpha_t(0, self.total_epochs, form, self.c, self.s)  # validates the options

    def update(self, epoch: int) -> None:
        """Set alpha for a 0-based epoch (0 at epoch 0, maximal at the last epoch)."""
        self.alpha = alpha_t(epoch, self.total_epochs, self.form, self.c, self.s)  # Eq. (3)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:               # (B, C), (B,)
        return F.cross_entropy(logits + self.alpha * self.log_prior, target)    # Eq. (4)
