"""Stage-one losses (pure torch), registered by name in LOSSES.

Each member file is imported explicitly so that its `@register_loss` runs.
"""
from .base import LossBase
from .registry import LOSSES, build_loss, loss_help, loss_options, register_loss
from .schedule import ALPHA_FORMS, alpha_t
from . import (balanced_softmax, cross_entropy, focal, gradual_balanced, label_aware_smoothing, ldam,  # noqa: F401
               logit_adjust)

__all__ = ["LOSSES", "LossBase", "build_loss", "loss_help", "loss_options", "register_loss",
           "ALPHA_FORMS", "alpha_t"]
