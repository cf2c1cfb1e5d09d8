"""dlcourse.models.generative.frechet_distance: the FID formula, checked against a direct
computation with scipy.linalg.sqrtm, and its defining properties."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from dlcourse.models.generative import frechet_distance


def direct(a: np.ndarray, b: np.ndarray) -> float:
    # ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 sqrtm(S_a S_b)), written as the formula reads.
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root = scipy.linalg.sqrtm(s_a @ s_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * root))


@pytest.mark.parametrize("d, n_a, n_b", [(1, 5, 7), (3, 20, 30), (6, 50, 40)])
def test_matches_scipy_sqrtm(d, n_a, n_b):
    g = torch.Generator().manual_seed(d)
    a = torch.randn(n_a, d, generator=g, dtype=torch.float64)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64)
    b = torch.randn(n_b, d, generator=g, dtype=torch.float64) @ mix + 0.5  # another mean and covariance
    expected = direct(a.numpy(), b.numpy())
    assert expected > 0.1
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(b, a) == pytest.approx(expected, rel=1e-6)  # symmetric


def test_zero_for_equal_statistics_and_a_shift_adds_its_squared_length():
    a = torch.randn(200, 4, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shift = torch.tensor([1.0, -2.0, 0.0, 0.5])
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift.square().sum()), rel=1e-6)


def test_too_little_variety_is_penalised():
    # Same mean, a quarter of the spread: d^2 = sum over dimensions of (1 - 0.5)^2 = 0.25 d.
    a = torch.randn(20_000, 3, generator=torch.Generator().manual_seed(1))
    narrow = 0.5 * torch.randn(20_000, 3, generator=torch.Generator().manual_seed(2))
    assert frechet_distance(a, narrow) == pytest.approx(0.75, abs=0.05)


@pytest.mark.parametrize("a, b, match", [
    (torch.zeros(1, 3), torch.zeros(5, 3), "features_a of shape"),
    (torch.zeros(5, 3), torch.zeros(5), "features_b of shape"),
    (torch.zeros(5, 3), torch.zeros(5, 4), "the same width"),
])
def test_bad_shapes_are_clear_errors(a, b, match):
    with pytest.raises(ValueError, match=match):
        frechet_distance(a, b)
