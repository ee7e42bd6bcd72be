"""The gradual alpha schedule of GraLoss (paper Eq. 3), shared with stage two's KD weight (Eq. 11)."""

# ep in [0, 1] -> alpha; all three forms start at 0 and end at s * (c - 1) (paper Table 5, Fig. 3).
_FORMS = {
    "convex": lambda ep, c, s: s * (c ** ep - 1),         # Eq. (3)
    "linear": lambda ep, c, s: s * (c - 1) * ep,           # straight line between Eq. (3)'s end points
    "concave": lambda ep, c, s: s * (c - c ** (1 - ep)),   # Eq. (3) mirrored: fast early, slow late
}
ALPHA_FORMS = tuple(_FORMS)


def alpha_t(epoch: int, total_epochs: int, form: str = "convex", c: float = 2.0, s: float = 1.0) -> float:
    """alpha at a 0-based epoch: 0 at the first epoch, s * (c - 1) at the last.

    ep = epoch / (total_epochs - 1) runs from 0 to 1, so the last epoch uses the
    full adjustment (the paper's T / T_max with epochs counted from 0).

    Args:
        epoch: current epoch, 0 <= epoch < total_epochs.
        total_epochs: number of training epochs T_max (>= 1).
        form: one of ALPHA_FORMS.
        c: curvature, > 1.
        s: scale.
    Returns:
        alpha (float).
    """
    if form not in _FORMS:
        raise ValueError(f"alpha form {form!r} is unknown; choose from {list(ALPHA_FORMS)}")
    if not c > 1:
        raise ValueError(f"alpha schedule needs c > 1, got c={c}")
    if total_epochs < 1:
        raise ValueError(f"alpha schedule needs total_epochs >= 1, got {total_epochs}")
    if not 0 <= epoch < total_epochs:
        raise ValueError(f"epoch must be in 0..{total_epochs - 1} (0-based), got {epoch}")
    ep = epoch / max(total_epochs - 1, 1)                  # Eq. (3): ep = T / T_max
    return float(_FORMS[form](ep, c, s))
