"""cRT: a linear classifier re-trained on frozen features (Kang et al., 'Decoupling')."""
import torch
from torch import Tensor, nn

from glag.data.errors import GlagError

from .base import HeadBase
from .registry import register_head

INITS = ("scratch", "stage1")


@register_head("linear")
class LinearHead(HeadBase):
    """logits = x W^T + b, trained; W, b start afresh (cRT) or from the stage-one head.

    Args:
        ctx: HeadContext (shapes and seed; the stage-one head for init="stage1").
        init: "scratch" draws nn.Linear's range from the seed; "stage1" fine-tunes the stage-one
            head (MiSLAS retrains its classifier that way).
    """

    def __init__(self, ctx, init: str = "scratch"):
        super().__init__()
        if init not in INITS:
            raise GlagError(f"--linear-init {init!r}: choose from {list(INITS)}")
        C, D = ctx.num_classes, ctx.feature_dim
        self.fc = nn.Linear(D, C)
        with torch.no_grad():
            if init == "stage1":
                self.fc.weight.copy_(torch.as_tensor(ctx.weight, dtype=torch.float32))
                self.fc.bias.copy_(torch.as_tensor(ctx.bias, dtype=torch.float32))
            else:
                g = torch.Generator().manual_seed(ctx.seed)
                bound = D ** -0.5  # nn.Linear's own range, but drawn from our generator so runs repeat
                self.fc.weight.copy_(torch.rand(C, D, generator=g) * 2 * bound - bound)
                self.fc.bias.zero_()

    @staticmethod
    def reuses_stage1(options: dict) -> bool:
        return options.get("init", "scratch") == "stage1"

    def linear_equivalent(self):
        return self.fc.weight.detach(), self.fc.bias.detach()

    def forward(self, x: Tensor) -> Tensor:  # (B, D) -> (B, C)
        return self.fc(x)
