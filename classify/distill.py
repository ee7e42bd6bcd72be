"""The stage-two objective of GLAG (paper Eq. 11); the adaptive beta (AD) is in beta.py.

    loss = loss_CE(y, z) + alpha(T) * loss_KD(M1, M2; z)              (Eq. 11)

loss_CE is any loss of `glag.extract.losses.LOSSES` (plain CE by default); the KD
term is taken on head-class rows only, against the stage-one logits, with
alpha(T) the same schedule as GraLoss (Eq. 3).
"""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glag.extract.losses import alpha_t


def kd_loss(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """T^2-scaled KL(softmax(teacher / T) || softmax(student / T)), mean over rows.

    The T^2 factor keeps the gradient size independent of T (Hinton et al.).
    Args:
        student, teacher: (B, C) logits.
    Returns:
        scalar; 0 for an empty batch.
    """
    if student.shape[0] == 0:
        return student.sum() * 0.0
    log_p = F.log_softmax(student / temperature, dim=1)
    log_q = F.log_softmax(teacher / temperature, dim=1)
    return F.kl_div(log_p, log_q, log_target=True, reduction="batchmean") * temperature ** 2


class DistillObjective(nn.Module):
    """CE (built from LOSSES) plus alpha(T)-weighted KD on head-class rows (Eq. 11).

    Args:
        base: a LossBase (its `update(epoch)` is forwarded).
        head_classes: (C,) bool, True for classes whose rows get the KD term.
        total_epochs: stage-two epochs, for alpha(T).
        kd: False turns the KD term off (alpha stays 0).
        temperature, form, c, s: KD temperature and the Eq. 3 schedule of alpha.
    """

    def __init__(self, base: nn.Module, head_classes, total_epochs: int, kd: bool = True,
                 temperature: float = 2.0, form: str = "convex", c: float = 2.0, s: float = 1.0):
        super().__init__()
        self.base, self.kd, self.total_epochs = base, bool(kd), int(total_epochs)
        self.temperature, self.form, self.c, self.s = float(temperature), form, float(c), float(s)
        self.register_buffer("head_classes", torch.as_tensor(head_classes, dtype=torch.bool))  # (C,)
        self.alpha = alpha_t(0, self.total_epochs, form, self.c, self.s) if self.kd else 0.0  # validates

    def update(self, epoch: int) -> None:
        """Set alpha for a 0-based epoch; called before the epoch's first batch."""
        self.base.update(epoch)
        if self.kd:
            self.alpha = alpha_t(epoch, self.total_epochs, self.form, self.c, self.s)      # Eq. (3)

    @property
    def needs_teacher(self) -> bool:
        """Whether this epoch's loss reads teacher logits (KD on, alpha > 0)."""
        return self.kd and self.alpha != 0.0

    def forward(self, logits: Tensor, target: Tensor, teacher: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Args: logits (B, C); target (B,); teacher (B, C), or (n, C) for the n head-class rows only, in
        row order (the trainer computes only those). Returns: (total, ce, kd) scalars."""
        ce = self.base(logits, target)
        if not self.needs_teacher:
            return ce, ce.detach(), torch.zeros((), device=logits.device)
        rows = self.head_classes[target]                                                   # (B,) head rows
        kd = kd_loss(logits[rows], teacher if len(teacher) != len(target) else teacher[rows], self.temperature)
        return ce + self.alpha * kd, ce.detach(), kd.detach()                              # Eq. (11)
