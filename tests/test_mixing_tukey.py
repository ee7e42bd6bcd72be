import numpy as np
import pytest
import torch

from glag.data.mixing import mix_rows
from glag.data.tukey import tukey_inverse, tukey_transform, tukey_transform_


def test_tukey_lambda_one_is_identity():
    x = np.random.default_rng(0).random((4, 3))
    assert np.array_equal(tukey_transform(x, 1.0), x)


@pytest.mark.parametrize("lam", [0.0, 0.25, 0.5, 2.0])
def test_tukey_inverse_round_trip(lam):
    x = torch.rand(50, 4) + 0.01
    assert torch.allclose(tukey_inverse(tukey_transform(x, lam), lam), x, atol=1e-5)


@pytest.mark.parametrize("lam", [0.0, 0.5, 0.25, 1.0, 2.0])
def test_in_place_tukey_matches_the_plain_one(lam):
    x = np.random.default_rng(0).random((50, 7)).astype(np.float32)
    expected = tukey_transform(x.copy(), lam)
    y = x.copy()
    assert tukey_transform_(y, lam) is y
    np.testing.assert_array_equal(y, expected)


def test_tukey_inverse_clips_negative_rows():
    assert torch.equal(tukey_inverse(torch.tensor([-1.0, 4.0]), 0.5), torch.tensor([0.0, 16.0]))


def test_mix_rows_mean_and_covariance():
    """s = a + beta d + sqrt(gamma) eps: with a, d fixed the spread comes from gamma alone."""
    n, D, beta, gamma = 40000, 3, 0.3, 0.5
    a, d = torch.ones(n, D), torch.full((n, D), 2.0)
    g = torch.Generator().manual_seed(0)
    s = mix_rows(a, d, torch.full((n,), beta), gamma, "isotropic", g).double()
    assert torch.allclose(s.mean(0), torch.full((D,), 1 + 2 * beta, dtype=torch.float64), atol=0.02)
    assert torch.allclose(torch.cov(s.T), gamma * torch.eye(D, dtype=torch.float64), atol=0.02)
    s1 = mix_rows(a, d, beta, gamma, "all-ones", g).double()
    assert torch.allclose(torch.cov(s1.T), gamma * torch.ones(D, D, dtype=torch.float64), atol=0.02)


def test_mix_rows_rejects_bad_mode_and_gamma():
    with pytest.raises(ValueError, match="gamma mode"):
        mix_rows(torch.zeros(1, 2), torch.zeros(1, 2), 0.5, 0.1, "diag")
    with pytest.raises(ValueError, match="gamma"):
        mix_rows(torch.zeros(1, 2), torch.zeros(1, 2), 0.5, -1.0)
