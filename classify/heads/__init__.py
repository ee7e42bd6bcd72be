"""Stage-two heads, registered by name in HEADS. Each maps features (B, D) to logits (B, C).

Each member file is imported explicitly so that its `@register_head` runs.
"""
from .base import HeadBase, HeadContext
from .registry import HEADS, build_head, head_options, own_options, register_head
from . import linear, lws, tau_norm, ncm, posthoc_la  # noqa: F401  (registration)

__all__ = ["HEADS", "HeadBase", "HeadContext", "build_head", "head_options", "own_options", "register_head"]
