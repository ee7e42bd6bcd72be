"""Stage-one backbones, registered by name in BACKBONES (the only importer of torchvision.models;
`torchvision:<name>` reaches any of its classification builders, see torchvision_models.py).

Each member file is imported explicitly so that its `@register_backbone` runs.
"""
from .registry import BACKBONES, BackboneName, build_backbone, is_backbone, register_backbone
from .classifier import Classifier
from .pretrained import load_pretrained
from .deployed import load_deployed
from . import resnet_cifar, resnet_imagenet  # noqa: F401  (registration)

__all__ = ["BACKBONES", "BackboneName", "build_backbone", "is_backbone", "register_backbone", "Classifier",
           "load_pretrained", "load_deployed"]
