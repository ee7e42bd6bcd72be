"""The backbone registry: name -> builder(in_channels, image_size) -> feature extractor.

Besides the registered names, `torchvision:<name>` builds any classification model of
torchvision.models without its head (torchvision_models.py); it is resolved when built, so
BACKBONES lists only GLAG's own backbones.
"""
from torch import nn

from glag.data.registry import registrar
from glag.extract.names import BackboneName  # noqa: F401  (the --backbone type, defined without torch)

from .torchvision_models import PREFIX, build_torchvision, check_name

BACKBONES: dict = {}


# Decorator for a builder `fn(in_channels, image_size) -> nn.Module`.
register_backbone = registrar(BACKBONES, "backbone")


def is_backbone(name: str) -> bool:
    """A registered name or `torchvision:<a torchvision classification model>`."""
    if name.startswith(PREFIX):
        try:
            check_name(name)
        except Exception:   # GlagError; the caller words its own message
            return False
        return True
    return name in BACKBONES


def build_backbone(name: str, in_channels: int, image_size: int) -> nn.Module:
    """Build a randomly initialised feature extractor.

    Args:
        name: a key of BACKBONES, or `torchvision:<model>`.
        in_channels: image channels Cin (1 for gray, 3 for RGB).
        image_size: side H = W of the (square) training crops.
    Returns:
        nn.Module with attribute `feature_dim` (D) whose forward maps (B, Cin, H, W) to
        (B, D) features that are post-ReLU and globally average-pooled, hence >= 0.
    """
    if name not in BACKBONES and not name.startswith(PREFIX):
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)} or {PREFIX}<model>")
    if in_channels < 1 or image_size < 1:
        raise ValueError(f"backbone {name!r} needs in_channels >= 1 and image_size >= 1, "
                         f"got {in_channels} and {image_size}")
    model = build_torchvision(name, in_channels, image_size) if name.startswith(PREFIX) \
        else BACKBONES[name](in_channels, image_size)
    model.feature_dim = int(model.feature_dim)
    return model
