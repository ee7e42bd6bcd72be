"""The interface every stage-one loss implements."""
import torch
from torch import Tensor, nn


class LossBase(nn.Module):
    """A classification loss with the label prior at hand and a per-epoch hook.

    The trainer calls `update(epoch)` (0-based) before each epoch's first batch;
    losses whose behaviour changes over training override it, and it must depend
    on `epoch` alone so that a resumed run reproduces it.

    Args:
        class_counts: (C,) positive training samples per class N_k.
    """

    def __init__(self, class_counts):
        super().__init__()
        counts = torch.as_tensor(class_counts, dtype=torch.float64)
        if counts.ndim != 1 or counts.numel() < 1 or not bool((counts > 0).all()):
            bad = int((counts <= 0).sum()) if counts.ndim == 1 else "?"
            raise ValueError(f"class_counts must be a non-empty 1-D sequence of positive counts (every class "
                             f"needs a training sample); got shape {tuple(counts.shape)}, {bad} non-positive")
        self.num_classes = counts.numel()
        self.register_buffer("class_counts", counts.float())                          # (C,) N_k
        self.register_buffer("log_prior", torch.log(counts / counts.sum()).float())   # (C,) log p_y

    def update(self, epoch: int) -> None:
        """Per-epoch hook; a no-op unless the loss changes over training."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Args: logits (B, C), target (B,) int64. Returns: scalar mean loss."""
        raise NotImplementedError
