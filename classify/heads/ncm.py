"""Nearest class mean (Kang et al., 'Decoupling'): a non-parametric head from the real train rows."""
import torch
import torch.nn.functional as F
from torch import Tensor

from glag.data.errors import GlagError

from .base import HeadBase
from .registry import register_head

METRICS = ("cosine", "euclidean")


@register_head("ncm")
class NCMHead(HeadBase):
    """Class means mu_c of the train features; logits are cosine similarities or -||x - mu_c||^2.

    With "cosine", means are taken of L2-normalised features, so every class
    counts equally however many rows it has.

    Args:
        ctx: HeadContext (shapes only).
        metric: "cosine" or "euclidean".
    """
    trainable = False
    needs_train_rows = True

    def __init__(self, ctx, metric: str = "cosine"):
        super().__init__()
        if metric not in METRICS:
            raise GlagError(f"--ncm-metric {metric!r}: choose from {list(METRICS)}")
        self.metric = metric
        self.register_buffer("means", torch.zeros(ctx.num_classes, ctx.feature_dim))       # (C, D) mu

    def _prep(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=1) if self.metric == "cosine" else x

    def calibrate(self, train, val):
        x, y = self._prep(train[0]), train[1]                                              # (N, D), (N,)
        sums = torch.zeros_like(self.means).index_add_(0, y, x)
        counts = torch.bincount(y, minlength=self.means.shape[0]).clamp_min(1)
        self.means.copy_(sums / counts[:, None])                                           # Eq. (5) in raw space
        return {"metric": self.metric}

    def linear_equivalent(self):
        if self.metric == "cosine":  # argmax of x.mu_c/|x| equals argmax of x.mu_c: same predictions
            return self.means, torch.zeros(self.means.shape[0], device=self.means.device)
        return 2 * self.means, -(self.means ** 2).sum(1)  # -||x-mu||^2 = 2x.mu - ||mu||^2 - ||x||^2

    def forward(self, x: Tensor) -> Tensor:  # (B, D) -> (B, C)
        if self.metric == "cosine":
            return self._prep(x) @ self.means.T
        return -torch.cdist(x, self.means) ** 2
