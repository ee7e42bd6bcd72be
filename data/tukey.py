"""Tukey's ladder of powers (paper §4.2, ref. [24]) and its inverse.

Lives in `data/` because both stage-two tools need it: `generate` transforms
features before taking moments, `classify` maps mixed rows back (or transforms
real rows) so that the head sees one consistent feature space.
Works on numpy arrays and torch tensors alike.
"""
import numpy as np


def _check(lam: float):
    if lam < 0:
        raise ValueError(f"Tukey lambda must be >= 0 (0 means log), got {lam}")


def tukey_transform(x, lam: float = 0.5):
    """x -> x**lam (lam > 0) or log(x) (lam = 0); lam = 1 is the identity.

    Features are post-ReLU (non-negative); a fractional power of a negative
    value is undefined, so callers validate that first.
    """
    _check(lam)
    if lam == 1:
        return x
    if lam == 0:
        return (x + 1e-6).log() if hasattr(x, "log") else np.log(x + 1e-6)
    return x ** lam


def tukey_transform_(x: np.ndarray, lam: float = 0.5) -> np.ndarray:
    """tukey_transform in place on a float numpy array (no temporary of the input's size); returns x.

    lam = 0.5 is a square root, bit-identical to `x ** 0.5`."""
    _check(lam)
    if lam == 0:
        np.log(np.add(x, 1e-6, out=x), out=x)
    elif lam == 0.5:
        np.sqrt(x, out=x)
    elif lam != 1:
        np.power(x, lam, out=x)
    return x


def tukey_inverse(y, lam: float = 0.5):
    """The inverse map, clipped at 0 first: mixed or sampled rows can leave the
    image of the transform, and the backbone's features are non-negative anyway."""
    _check(lam)
    if lam == 1:
        return y
    if lam == 0:
        return y.exp() - 1e-6 if hasattr(y, "exp") else np.exp(y) - 1e-6
    y = y.clip(0, None)
    if lam == 0.5:                 # the default: a square, several times cheaper than a float power
        return y * y
    return y ** (1.0 / lam)
