"""The backbone registry: name -> builder(in_channels, image_size) -> feature extractor."""
from torch import nn

from glag.data.registry import registrar

BACKBONES: dict = {}


# Decorator for a builder `fn(in_channels, image_size) -> nn.Module`.
register_backbone = registrar(BACKBONES, "backbone")


def build_backbone(name: str, in_channels: int, image_size: int) -> nn.Module:
    """Build a randomly initialised feature extractor.

    Args:
        name: a key of BACKBONES.
        in_channels: image channels Cin (1 for gray, 3 for RGB).
        image_size: side H = W of the (square) training crops.
    Returns:
        nn.Module with attribute `feature_dim` (D) whose forward maps (B, Cin, H, W) to
        (B, D) features that are post-ReLU and globally average-pooled, hence >= 0.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)}")
    if in_channels < 1 or image_size < 1:
        raise ValueError(f"backbone {name!r} needs in_channels >= 1 and image_size >= 1, "
                         f"got {in_channels} and {image_size}")
    model = BACKBONES[name](in_channels, image_size)
    model.feature_dim = int(model.feature_dim)
    return model
