"""cRT: a linear classifier re-trained from scratch on frozen features (Kang et al., 'Decoupling')."""
import torch
from torch import Tensor, nn

from .base import HeadBase
from .registry import register_head


@register_head("linear")
class LinearHead(HeadBase):
    """logits = x W^T + b with W, b initialised afresh (the stage-one head is not reused).

    Args:
        ctx: HeadContext (shapes and seed only).
    """

    def __init__(self, ctx):
        super().__init__()
        C, D = ctx.num_classes, ctx.feature_dim
        self.fc = nn.Linear(D, C)
        g = torch.Generator().manual_seed(ctx.seed)
        bound = D ** -0.5  # nn.Linear's own range, but drawn from our generator so runs repeat
        with torch.no_grad():
            self.fc.weight.copy_(torch.rand(C, D, generator=g) * 2 * bound - bound)
            self.fc.bias.zero_()

    def linear_equivalent(self):
        return self.fc.weight.detach(), self.fc.bias.detach()

    def forward(self, x: Tensor) -> Tensor:  # (B, D) -> (B, C)
        return self.fc(x)
