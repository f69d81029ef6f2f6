"""The moiré potential: symmetry and its minima against the analytic extremum."""

import math

import numpy as np
import pytest
from scipy.optimize import minimize

from qernel.lattice import MOIRE_LATTICE
from qernel.moire import moire_fourier_components, moire_potential


def _rotate(r, angle):
    c, s = math.cos(angle), math.sin(angle)
    return r @ np.array([[c, s], [-s, c]])


@pytest.mark.parametrize("phase_deg", [0.0, 45.0, 17.0, 100.0])
def test_c3_symmetry_and_periodicity(phase_deg):
    r = np.random.default_rng(0).normal(size=(100, 2))
    v = moire_potential(r, 1.3, math.radians(phase_deg))
    np.testing.assert_allclose(moire_potential(_rotate(r, 2 * math.pi / 3), 1.3, math.radians(phase_deg)), v, atol=1e-12)
    for a in MOIRE_LATTICE:
        np.testing.assert_allclose(moire_potential(r + a, 1.3, math.radians(phase_deg)), v, atol=1e-12)


@pytest.mark.parametrize("phase_deg", [0.0, 45.0])
def test_minimum_matches_grid_search(phase_deg):
    """For |φ| < 60° the minimum is at the moiré sites r = 0 with Δ = −6V cos φ."""
    depth, phase = 2.0, math.radians(phase_deg)
    n = 300
    f = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 2) / n
    r = f @ MOIRE_LATTICE
    v = moire_potential(r, depth, phase)
    start = r[np.argmin(v)]
    res = minimize(lambda p: moire_potential(np.asarray(p)[None], depth, phase)[0], start, tol=1e-14)
    assert res.fun == pytest.approx(-6 * depth * math.cos(phase), abs=1e-9)
    # the minimiser is a moiré lattice site
    frac = res.x @ np.linalg.inv(MOIRE_LATTICE)
    np.testing.assert_allclose(frac, np.round(frac), atol=1e-5)


def test_fourier_components_reproduce_the_potential():
    q, c = moire_fourier_components(0.7, 0.4)
    r = np.random.default_rng(1).normal(size=(30, 2))
    direct = np.real(np.exp(1j * r @ q.T) @ c)
    np.testing.assert_allclose(direct, moire_potential(r, 0.7, 0.4), atol=1e-12)
    # mean zero: no G = 0 component
    assert not np.any(np.all(q == 0, axis=1))
