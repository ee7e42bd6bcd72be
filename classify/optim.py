"""SGD with momentum and weight decay, and the cosine schedule, for the few tensors of a head.

Same update as torch.optim.SGD (dampening 0, no Nesterov) and CosineAnnealingLR
(eta_min 0); written out because constructing a torch optimizer imports
torch._dynamo, ~2.5 s of a stage-two run that otherwise takes a few seconds.
"""
import math

import torch


def cosine_lr(base_lr: float, epoch: int, total_epochs: int) -> float:
    """lr of a 0-based epoch: base_lr at epoch 0, falling along half a cosine towards 0."""
    return 0.5 * base_lr * (1 + math.cos(math.pi * epoch / max(total_epochs, 1)))


class SGD:
    """v <- mu * v + (g + wd * p);  p <- p - lr * v.

    Args:
        params: tensors with requires_grad.
        lr, momentum, weight_decay: as torch.optim.SGD.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4):
        self.params, self.lr, self.momentum, self.weight_decay = list(params), lr, momentum, weight_decay
        self.buffers = [None] * len(self.params)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = p.grad.add(p, alpha=self.weight_decay) if self.weight_decay else p.grad
            if self.momentum:
                buf = self.buffers[i]
                self.buffers[i] = buf = g.clone() if buf is None else buf.mul_(self.momentum).add_(g)
                g = buf
            p.add_(g, alpha=-self.lr)
