"""`--backbone torchvision:<name>`: any classification model of torchvision.models, from scratch.

The model comes from `torchvision.models.get_model(name, weights=None)`: weights are never
downloaded (a user's own file goes through --pretrained, loaded with weights_only=True). Its class
head (`fc`, `classifier`, `heads` or `head`; in a Sequential, the last Linear of it) is replaced by
a ReLU, so the backbone returns the head's input as features: parameter names stay torchvision's,
so a torchvision state dict loads by name (its head keys are dropped or reported as unexpected),
and the features are non-negative as the Tukey transform of stage two needs. Behind the global
average pool of a ResNet or RegNet the ReLU changes nothing; behind a LayerNorm (ConvNeXt, ViT,
Swin) or SiLU (EfficientNet) it is part of the network stage one trains.
"""
import torch
from torch import nn

from glag.data.errors import GlagError

PREFIX = "torchvision:"
HEADS = ("fc", "classifier", "heads", "head")   # where torchvision's classification models keep their head


def model_names() -> list:
    """The classification builders of torchvision.models (no detection, video or quantized ones)."""
    import torchvision.models as tvm
    return tvm.list_models(module=tvm)


def check_name(name: str) -> str:
    """The model name after `torchvision:`; a one-line GlagError when torchvision has no such classifier."""
    model = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if model not in model_names():
        raise GlagError(f"--backbone {name}: torchvision has no classification model {model!r}; choose from "
                        f"torchvision.models.list_models(module=torchvision.models), e.g. torchvision:resnet18")
    return model


def build_torchvision(name: str, in_channels: int, image_size: int) -> nn.Module:
    """torchvision's `name` (with or without the prefix), randomly initialised, head -> ReLU.

    Returns:
        the torchvision module with `feature_dim` D, mapping (B, Cin, H, W) to (B, D) features >= 0.
    Raises:
        GlagError: unknown name, no head found, a first conv that cannot take Cin channels, an
            output that is not (B, D) at this image size (too small for its strides, auxiliary heads).
    """
    import torchvision.models as tvm
    model_name = check_name(name)
    try:
        model = tvm.get_model(model_name, weights=None, **_size_kwargs(model_name, image_size))
    except (AssertionError, ValueError, TypeError) as e:     # e.g. a ViT whose patch does not divide the side
        raise GlagError(f"--backbone {name}: cannot be built for {image_size}x{image_size} images ({e}); "
                        "choose another --image-size or model") from None
    model.feature_dim = _strip_head(model, name)
    if in_channels != 3:
        _adapt_first_conv(model, in_channels, name)
    _probe(model, in_channels, image_size, name)
    return model


def _size_kwargs(model_name: str, image_size: int) -> dict:
    """ViTs fix their input side at build time (position embeddings); the other models pool globally."""
    return {"image_size": image_size} if model_name.startswith("vit_") else {}   # to VisionTransformer


def _strip_head(model: nn.Module, name: str) -> int:
    """Replace the class head's Linear by a ReLU; returns its in_features (the feature width D)."""
    for attr in HEADS:
        head = getattr(model, attr, None)
        if isinstance(head, nn.Linear):
            setattr(model, attr, nn.ReLU())
            return head.in_features
        if isinstance(head, nn.Sequential):
            last = [key for key, m in head.named_children() if isinstance(m, nn.Linear)]
            if last:
                dim = head.get_submodule(last[-1]).in_features
                setattr(head, last[-1], nn.ReLU())
                return dim
    raise GlagError(f"--backbone {name}: no linear class head found under {', '.join(HEADS)}; "
                    "use a model with a linear head (ResNet, RegNet, ConvNeXt, EfficientNet, ViT, ...)")


def _adapt_first_conv(model: nn.Module, in_channels: int, name: str) -> None:
    """Rebuild the first convolution for Cin channels, its weight the sum over the RGB ones (same scale)."""
    first = next(((key, m) for key, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if first is None or first[1].in_channels != 3 or first[1].groups != 1:
        raise GlagError(f"--backbone {name}: cannot adapt its first layer to {in_channels}-channel images; "
                        "use RGB data (e.g. the folder reader with --channels 3)")
    key, conv = first
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    1, conv.bias is not None, conv.padding_mode)
    with torch.no_grad():
        new.weight.copy_(conv.weight.sum(dim=1, keepdim=True).expand_as(new.weight) / in_channels)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    parent, _, attr = key.rpartition(".")
    setattr(model.get_submodule(parent), attr, new)


def _probe(model: nn.Module, in_channels: int, image_size: int, name: str) -> None:
    """One image through the model in eval mode, so a misfit fails at build time and not mid-training."""
    if getattr(model, "aux_logits", False):
        raise GlagError(f"--backbone {name}: has auxiliary heads (training returns several outputs); "
                        "use a model with one head")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, in_channels, image_size, image_size))
    except (RuntimeError, AssertionError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise GlagError(f"--backbone {name}: does not run on {image_size}x{image_size} images ({first}); "
                        "use a larger --image-size or a smaller model") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.shape != (1, model.feature_dim):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise GlagError(f"--backbone {name}: returns {shape} without its head, expected (1, {model.feature_dim}); "
                        "its head is not a plain last layer")
