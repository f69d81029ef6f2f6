"""The plane-wave band solver against exact limits and quoted values."""

import math

import numpy as np
import pytest

from qernel.bands import noninteracting_ground_state, plane_wave_basis, solve_bands
from qernel.lattice import Supercell
from qernel.system import System
from qernel.units import WSE2_WS2


def test_free_electron_levels():
    k = np.array([[0.0, 0.0], [0.4, -0.3], [1.1, 2.0]])
    bands = solve_bands(k, 0.0, 0.3, n_bands=20)
    for ik, kk in enumerate(k):
        free = np.sort(0.5 * np.sum((kk + plane_wave_basis()) ** 2, axis=1))[:20]
        np.testing.assert_allclose(bands.energies[ik], free, atol=1e-12)


def test_lowest_gamma_level_v1_phi45():
    bands = solve_bands([[0.0, 0.0]], 1.0, math.radians(45.0), n_bands=1)
    assert bands.energies[0, 0] == pytest.approx(-0.215751, abs=1e-5)


def test_wse2_ws2_preset_gamma_level_in_meV():
    depth = WSE2_WS2.to_moire(15.0)
    bands = solve_bands([[0.0, 0.0]], depth, math.radians(45.0), n_bands=1)
    assert WSE2_WS2.to_meV(bands.energies[0, 0]) == pytest.approx(-11.9896, abs=1e-3)


def test_converges_with_cutoff():
    k = Supercell.diagonal(3).kpoints
    # the deepest depth of the paper's sweeps, where convergence is slowest
    levels = [solve_bands(k, 20.0, math.radians(45.0), shells=s, n_bands=4).energies for s in (2.0, 4.0, 6.0, 10.0)]
    errors = [np.abs(lv - levels[-1]).max() for lv in levels[:-1]]
    assert errors[0] > errors[1] > errors[2]
    default = solve_bands(k, 20.0, math.radians(45.0), n_bands=4).energies
    assert np.abs(default - levels[-1]).max() < 1e-7


def test_coefficients_are_orthonormal_eigenvectors():
    bands = solve_bands([[0.3, 0.1]], 2.0, 0.5, n_bands=5)
    c = bands.coefficients[0]
    np.testing.assert_allclose(c.conj().T @ c, np.eye(5), atol=1e-10)


def test_free_electron_ground_state_is_closed_shell_sum():
    # 3×3 supercell at V = 0: Γ plus the six shortest supercell reciprocal vectors
    sc = Supercell.diagonal(3)
    gs = noninteracting_ground_state(System(sc, n_up=7), depth=0.0)
    b = np.linalg.norm(sc.reciprocal[0])
    assert gs.energy == pytest.approx(6 * 0.5 * b**2, rel=1e-12)
    assert gs.closed_shell
    open_shell = noninteracting_ground_state(System(sc, n_up=6), depth=0.0)
    assert not open_shell.closed_shell
    assert open_shell.energy == pytest.approx(5 * 0.5 * b**2, rel=1e-12)


def test_spin_degenerate_filling_and_level_count():
    sc = Supercell.diagonal(2)
    gs_pol = noninteracting_ground_state(System(sc, n_up=3), depth=1.5)
    gs_unpol = noninteracting_ground_state(System(sc, n_up=3, n_down=3), depth=1.5)
    assert gs_unpol.energy == pytest.approx(2 * gs_pol.energy)
    # deep potential: the lowest band is nearly flat, N levels ≈ N × band minimum
    deep = noninteracting_ground_state(System(sc, n_up=4), depth=20.0)
    assert len(deep.occupied_up) == 4 and {o[1] for o in deep.occupied_up} == {0}
