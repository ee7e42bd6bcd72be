"""Rebuild finished synthetic rows from the store's halves (Eq. 8-9 with gamma).

    s = a + beta_k * d + sqrt(gamma) * eps,   d = b - a

With a = x_hat + z_own and b = mu_S + z_S independent, s has mean
(1 - beta) x_hat + beta mu_S (Eq. 8) and covariance
(1 - beta)^2 Sigma_i + beta^2 Sigma_S + gamma * G (Eq. 9), where G is I for
gamma_mode "isotropic" and the all-ones matrix 11^T for "all-ones" (the
free-lunch code adds the scalar to every covariance entry).
Shared by generate (its statistical tests) and classify (every epoch).
"""
import torch

from glag.data.names import GAMMA_MODES


def gamma_noise(n: int, D: int, gamma_mode: str = "isotropic", generator=None):
    """The eps of Eq. 9's dispersion: (n, D) for gamma * I, (n, 1) (one value per row) for gamma * 11^T."""
    if gamma_mode not in GAMMA_MODES:
        raise ValueError(f"unknown gamma mode {gamma_mode!r}; choose from {list(GAMMA_MODES)}")
    return torch.randn((n, D) if gamma_mode == "isotropic" else (n, 1), generator=generator)


def mix_rows(a, d, beta, gamma: float = 0.0, gamma_mode: str = "isotropic", generator=None, eps=None):
    """Finished rows in the store's feature space.

    Args:
        a, d: (n, D) tensors.
        beta: (n,) per-row confidence (beta of the row's class), or a float.
        gamma: dispersion (Eq. 9); 0 adds nothing.
        generator: torch.Generator for the gamma noise.
        eps: the noise itself (from `gamma_noise`), so that heads trained side by side with
            different betas see the same draws; None draws it from `generator`.
    Returns:
        (n, D) tensor.
    """
    if gamma_mode not in GAMMA_MODES:
        raise ValueError(f"unknown gamma mode {gamma_mode!r}; choose from {list(GAMMA_MODES)}")
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    beta = torch.as_tensor(beta, dtype=a.dtype, device=a.device)
    s = torch.addcmul(a, beta.unsqueeze(-1) if beta.ndim else beta, d)     # a + beta d, Eq. (8), (9)
    if gamma > 0:
        if eps is None:
            eps = gamma_noise(a.shape[0], a.shape[1], gamma_mode, generator)
        s = s + gamma ** 0.5 * eps.to(device=a.device, dtype=a.dtype)     # + gamma I or gamma 11^T
    return s
