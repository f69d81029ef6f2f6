"""The 2D Ewald sum against exact properties and the Bonsall–Maradudin constant."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from qernel.ewald import Ewald
from qernel.lattice import Supercell

pytestmark = pytest.mark.usefixtures("x64")


def _random_positions(sc, n, seed=0):
    f = np.random.default_rng(seed).uniform(size=(n, 2))
    return sc.to_cart(f)


@pytest.mark.parametrize("matrix", [((3, 0), (0, 3)), ((2, 1), (-1, 3))])
def test_energy_independent_of_kappa(matrix):
    sc = Supercell(matrix)
    x = _random_positions(sc, 6)
    k0 = math.sqrt(math.pi / sc.area)
    energies = [float(Ewald(sc, kappa=k0 * s).energy(jnp.asarray(x))) for s in (0.25, 1.0, 4.0)]
    madelungs = [Ewald(sc, kappa=k0 * s).madelung for s in (0.25, 1.0, 4.0)]
    np.testing.assert_allclose(energies, energies[1], rtol=1e-10)
    np.testing.assert_allclose(madelungs, madelungs[1], rtol=1e-10)


def test_bonsall_maradudin_triangular_wigner_crystal():
    # one electron per triangular cell: energy per electron ξ_M/2 = −1.1061026/r_s
    for sc in (Supercell.diagonal(1), Supercell.diagonal(3)):
        ew = Ewald(sc)
        x = jnp.asarray(sc.moire_translations)  # one electron on every moiré site
        n = len(x)
        rs = math.sqrt(sc.area / (math.pi * n))
        assert float(ew.energy(x)) / n == pytest.approx(-1.1061026 / rs, abs=1e-6 / rs)
    assert Ewald(Supercell.diagonal(1)).madelung / 2 == pytest.approx(-1.1061026 / math.sqrt(math.sqrt(3) / 2 / math.pi), abs=1e-6)


def _midpoint_integral(sc, fn, n):
    f = (np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 2) + 0.5) / n
    r = f @ sc.lattice
    return np.sum(fn(r)) * sc.area / n**2


@pytest.mark.parametrize("matrix", [((1, 0), (0, 1)), ((2, 1), (-1, 1))])
def test_cell_average_zero_and_fourier_component(matrix):
    """∫_cell v_E = 0 and ∫_cell v_E(r) e^{-iG·r} d²r = 2π/|G|.

    The midpoint rule on the 1/r singularity has an O(h) error; Richardson extrapolation
    of two grids removes it.
    """
    sc = Supercell(matrix)
    ew = Ewald(sc)
    v = lambda r: np.asarray(ew.pair_potential(jnp.asarray(r)))
    avg = [_midpoint_integral(sc, v, n) for n in (150, 300)]
    assert abs(2 * avg[1] - avg[0]) / sc.area < 2e-4
    for G in (sc.reciprocal[0], sc.reciprocal[0] + sc.reciprocal[1]):
        comp = [_midpoint_integral(sc, lambda r: v(r) * np.cos(r @ G), n) for n in (150, 300)]
        assert 2 * comp[1] - comp[0] == pytest.approx(2 * np.pi / np.linalg.norm(G), rel=2e-4)


def test_pair_potential_properties():
    sc = Supercell(((2, 1), (-1, 3)))
    ew = Ewald(sc)
    rng = np.random.default_rng(1)
    r = jnp.asarray(rng.normal(size=(20, 2)))
    v = ew.pair_potential(r)
    np.testing.assert_allclose(ew.pair_potential(-r), v, rtol=1e-12)  # even
    for L in sc.lattice:
        np.testing.assert_allclose(ew.pair_potential(r + L), v, rtol=1e-10)  # periodic
    # short range: v_E(r) → 1/r + const as r → 0
    tiny = jnp.asarray([[1e-4, 0.0], [0.0, 2e-4], [-1e-5, 1e-5]])
    regular = ew.pair_potential(tiny) - 1 / jnp.linalg.norm(tiny, axis=1)
    np.testing.assert_allclose(regular, regular[2], atol=1e-3)


def test_energy_is_sum_of_pairs_and_translation_invariant():
    sc = Supercell.diagonal(3)
    ew = Ewald(sc)
    x = jnp.asarray(_random_positions(sc, 5, seed=3))
    i, j = np.triu_indices(5, k=1)
    by_pairs = float(jnp.sum(ew.pair_potential(x[i] - x[j]))) + 2.5 * ew.madelung
    assert float(ew.energy(x)) == pytest.approx(by_pairs, rel=1e-12)
    for shift in ([0.3, -1.7], [12.0, 5.5]):
        assert float(ew.energy(x + jnp.asarray(shift))) == pytest.approx(float(ew.energy(x)), rel=1e-12)
    # vectorised over walkers
    batch = jnp.stack([x, x + 0.1, x[::-1]])
    np.testing.assert_allclose(ew.energy(batch), [ew.energy(b) for b in batch], rtol=1e-12)
