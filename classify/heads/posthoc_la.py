"""Post-hoc logit adjustment of the stage-one head (Menon et al.; the paper's Eq. 2 applied at test time)."""
import torch
from torch import Tensor

from .base import HeadBase, parse_taus, pick_on_val
from .registry import register_head


@register_head("posthoc_la")
class PosthocLogitAdjustHead(HeadBase):
    """logits = x W^T + b - tau * log p_y with the stage-one W, b and the train prior p_y.

    Subtracting the log prior turns a classifier of p(y | x) under the long-tailed
    prior into one for the balanced test prior.

    Args:
        ctx: HeadContext; weight/bias are the stage-one head, train_counts give p_y.
        taus: one value, or START:STOP:STEP swept on val.
    """
    trainable = False

    def __init__(self, ctx, taus: str = "0:2:0.1"):
        super().__init__()
        self.taus = parse_taus(taus)
        counts = torch.as_tensor(ctx.train_counts, dtype=torch.float64)
        self.register_buffer("weight", torch.as_tensor(ctx.weight, dtype=torch.float32))   # (C, D)
        self.register_buffer("bias", torch.as_tensor(ctx.bias, dtype=torch.float32))       # (C,)
        self.register_buffer("log_prior", torch.log(counts / counts.sum()).float())       # (C,) log p_y
        self.register_buffer("tau", torch.tensor(self.taus[0]))

    def _bias(self, tau) -> Tensor:
        return self.bias - tau * self.log_prior                                            # Eq. (2), post hoc

    def calibrate(self, train, val):
        z = val[0] @ self.weight.T if val is not None else None                          # one product for every tau
        best, scores = pick_on_val(lambda t: z + self._bias(t), self.taus, val, "--posthoc-la-taus")
        self.tau.fill_(best)
        return {"tau": best, "val_accuracy_by_tau": scores}

    @staticmethod
    def reuses_stage1(options: dict) -> bool:
        return True

    def linear_equivalent(self):
        return self.weight, self._bias(self.tau)

    def forward(self, x: Tensor) -> Tensor:  # (B, D) -> (B, C)
        return x @ self.weight.T + self._bias(self.tau)
