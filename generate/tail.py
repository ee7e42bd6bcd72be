"""Which classes are tail classes (the paper does not define them).

Rules are registered by name; `--tail` offers them. A rule's own option is
`tail_<rule name>` in the config (e.g. `--tail-max-count` for "max-count").
Whatever the rule, empty classes and the largest classes are never tail
classes: there is nothing to calibrate, or no class with more samples to
calibrate from (on small datasets every class can have N_k <= 100).
"""
import numpy as np

from glag.data.errors import GlagError
from glag.data.registry import registrar

TAIL_RULES: dict = {}


register_tail_rule = registrar(TAIL_RULES, "tail rule")


@register_tail_rule("max-count")
def max_count(counts: np.ndarray, value) -> np.ndarray:
    """Classes with N_k <= value: with 100, the medium + few classes of the many/medium/few split."""
    if value < 1:
        raise GlagError(f"--tail-max-count {value}: must be >= 1")
    return (counts > 0) & (counts <= value)


@register_tail_rule("fraction")
def fraction(counts: np.ndarray, value) -> np.ndarray:
    """The ceil(value * C) classes with the fewest samples (ties by class id)."""
    if not 0 < value <= 1:
        raise GlagError(f"--tail-fraction {value}: must be in (0, 1]")
    nonempty = np.flatnonzero(counts > 0)
    order = nonempty[np.argsort(counts[nonempty], kind="stable")]
    mask = np.zeros(len(counts), bool)
    mask[order[: int(np.ceil(value * len(nonempty)))]] = True
    return mask


def tail_mask(counts, rule: str, cfg: dict, allow_empty: bool = False) -> np.ndarray:
    """(C,) bool by the named rule; its value comes from cfg["tail_<rule>"].

    allow_empty: return an all-False mask instead of raising when no class qualifies
        (with head balancing the generator still has rows to draw).
    """
    if rule not in TAIL_RULES:
        raise GlagError(f"--tail {rule!r}: choose from {sorted(TAIL_RULES)}")
    counts = np.asarray(counts, np.int64)
    mask = TAIL_RULES[rule](counts, cfg["tail_" + rule.replace("-", "_")]) & (counts < counts.max())
    if not mask.any() and not allow_empty:
        raise GlagError(f"--tail {rule}: no class is a tail class with these counts "
                        f"(min {int(np.min(counts))}, max {int(np.max(counts))}); raise the threshold")
    return mask
