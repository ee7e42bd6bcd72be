"""LDAM with deferred re-weighting (Cao et al., NeurIPS 2019): the LDAM-DRW baseline."""
import torch
import torch.nn.functional as F
from torch import Tensor

from glag.extract.names import option_help

from .base import LossBase
from .registry import register_loss


@register_loss("ldam")
class LDAMLoss(LossBase):
    """Label-distribution-aware margin loss, re-weighted by effective numbers from `drw_epoch` on.

    The true class's logit is lowered by Delta_j = C / N_j^(1/4), C chosen so that the
    rarest class gets `max_m`; the logits are then scaled by `s`. Cao et al. use s = 30
    with a cosine (normalised) classifier, whose logits lie in [-1, 1]. GLAG's head is a
    plain linear layer with unbounded logits: s = 30 on those made stage one collapse on
    Fashion-MNIST-LT (41 +- 18 % test accuracy over 3 seeds), so the default is s = 1.
    From epoch `drw_epoch` on, each class is weighted by (1 - beta) / (1 - beta^N_j)
    (normalised to sum to C), the "deferred re-weighting" that completes LDAM-DRW.

    Args:
        class_counts: (C,) N_k.
        max_m: largest margin (given to the rarest class).
        s: logit scale.
        drw_epoch: first 0-based epoch with class weights; -1 means 4/5 of total_epochs
            (the classic 160 of 200); >= total_epochs means never (plain LDAM).
        beta: effective-number hyper-parameter of the DRW weights, in [0, 1).
        total_epochs: training epochs, from the trainer's config.
    """
    OPTION_HELP = option_help("ldam")

    def __init__(self, class_counts, max_m: float = 0.5, s: float = 1.0, drw_epoch: int = -1,
                 beta: float = 0.9999, total_epochs: int = 200):
        super().__init__(class_counts)
        if max_m <= 0 or s <= 0 or not 0 <= beta < 1 or drw_epoch < -1:
            raise ValueError(f"LDAM needs max_m > 0, s > 0, 0 <= beta < 1 and drw_epoch >= -1, "
                             f"got max_m={max_m}, s={s}, beta={beta}, drw_epoch={drw_epoch}")
        self.s = float(s)
        self.drw_epoch = (4 * int(total_epochs)) // 5 if drw_epoch == -1 else int(drw_epoch)
        counts = self.class_counts.double()                                       # (C,)
        margin = counts ** -0.25                                                  # Delta_j ∝ N_j^(-1/4)
        self.register_buffer("margin", (margin * (max_m / margin.max())).float())  # (C,)
        weight = (1 - beta) / (1 - beta ** counts)                                # effective numbers
        self.register_buffer("drw_weight", (weight / weight.sum() * len(counts)).float())  # (C,)
        self.drw_on = False

    def update(self, epoch: int) -> None:
        """Switch the class weights on from `drw_epoch` on."""
        self.drw_on = epoch >= self.drw_epoch

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:               # (B, C), (B,)
        logits = logits.float()  # margins of ~1e-2 would be lost in bf16
        shift = F.one_hot(target, logits.shape[1]) * self.margin                # (B, C)
        weight = self.drw_weight if self.drw_on else None
        return F.cross_entropy(self.s * (logits - shift), target, weight=weight)
