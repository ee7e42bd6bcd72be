"""LWS: learnable weight scaling of the stage-one head (Kang et al., 'Decoupling')."""
import torch
from torch import Tensor, nn

from .base import HeadBase
from .registry import register_head


@register_head("lws")
class LWSHead(HeadBase):
    """logits_c = f_c * (w_c . x + b_c): the stage-one head frozen, only the per-class scales f learn.

    Rescaling each class's logit is enough to undo most of the norm bias that
    long-tailed training leaves in w_c, at C parameters instead of C * (D + 1).

    Args:
        ctx: HeadContext; weight/bias are the frozen stage-one head.
        init: starting value of every scale f_c.
    """

    def __init__(self, ctx, init: float = 1.0):
        super().__init__()
        self.register_buffer("weight", torch.as_tensor(ctx.weight, dtype=torch.float32))   # (C, D)
        self.register_buffer("bias", torch.as_tensor(ctx.bias, dtype=torch.float32))       # (C,)
        self.scales = nn.Parameter(torch.full((ctx.num_classes,), float(init)))           # (C,) f

    @staticmethod
    def reuses_stage1(options: dict) -> bool:
        return True

    def linear_equivalent(self):
        f = self.scales.detach()
        return f[:, None] * self.weight, f * self.bias

    def forward(self, x: Tensor) -> Tensor:  # (B, D) -> (B, C)
        return self.scales * (x @ self.weight.T + self.bias)
