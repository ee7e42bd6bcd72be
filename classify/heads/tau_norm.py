"""tau-normalisation of the stage-one head (Kang et al., 'Decoupling'), post hoc."""
import torch
from torch import Tensor

from .base import HeadBase, parse_taus, pick_on_val
from .registry import register_head


@register_head("tau_norm")
class TauNormHead(HeadBase):
    """logits = x (w_c / ||w_c||^tau)^T (+ b_c with bias=True); tau picked on the validation split.

    Long-tailed training makes head-class weight norms large; dividing by a
    power of the norm rebalances the decision boundaries without training.
    tau = 0 is the stage-one head without its bias, tau = 1 cosine-like weights.

    Args:
        ctx: HeadContext; weight is the stage-one head.
        taus: one value, or START:STOP:STEP swept on val (best overall accuracy wins).
        bias: keep the stage-one bias (Kang et al. drop it; a head whose bias carries the prior needs it).
    """
    trainable = False

    def __init__(self, ctx, taus: str = "0:2:0.1", bias: bool = False):
        super().__init__()
        self.taus = parse_taus(taus)
        self.register_buffer("weight", torch.as_tensor(ctx.weight, dtype=torch.float32))   # (C, D)
        self.register_buffer("bias", torch.as_tensor(ctx.bias, dtype=torch.float32) * float(bias))  # (C,) or 0
        self.register_buffer("tau", torch.tensor(self.taus[0]))

    def _scaled(self, tau) -> Tensor:
        norms = self.weight.norm(dim=1, keepdim=True).clamp_min(1e-12)                     # (C, 1)
        return self.weight / norms ** tau

    def calibrate(self, train, val):
        z = val[0] @ self.weight.T if val is not None else None                          # one product for every tau
        norms = self.weight.norm(dim=1).clamp_min(1e-12)                                   # (C,)
        best, scores = pick_on_val(lambda t: z / norms ** t + self.bias, self.taus, val, "--tau-norm-taus")
        self.tau.fill_(best)
        return {"tau": best, "val_accuracy_by_tau": scores}

    @staticmethod
    def reuses_stage1(options: dict) -> bool:
        return True

    def linear_equivalent(self):
        return self._scaled(self.tau), self.bias

    def forward(self, x: Tensor) -> Tensor:  # (B, D) -> (B, C)
        return x @ self._scaled(self.tau).T + self.bias
