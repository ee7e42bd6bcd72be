"""Backbone + linear head: the stage-one model."""
from torch import Tensor, nn


class Classifier(nn.Module):
    """Features f(x) from a backbone, logits z = W f(x) + b from a linear head.

    The head's weight (C, D) and bias (C,) are what the bank stores as the stage-one classifier.

    Args:
        backbone: module with `feature_dim` D mapping (B, Cin, H, W) -> (B, D).
        num_classes: C.
    """

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"Classifier needs num_classes >= 1, got {num_classes}")
        self.backbone = backbone
        self.feature_dim, self.num_classes = backbone.feature_dim, num_classes
        self.head = nn.Linear(backbone.feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:      # (B, Cin, H, W) -> (B, D)
        return self.backbone(x)

    def forward(self, x: Tensor) -> Tensor:       # (B, Cin, H, W) -> (B, C)
        return self.head(self.backbone(x))
