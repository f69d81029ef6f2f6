"""The two-electron exact diagonalisation against exact limits (it is the interacting reference)."""

import math

import numpy as np
import pytest

from qernel.bands import noninteracting_ground_state
from qernel.ewald import Ewald
from qernel.exact_diagonalization import MOIRE_RECIPROCAL_LENGTH, two_electron_energy
from qernel.lattice import Supercell
from qernel.system import System

PHASE = math.radians(45)


@pytest.mark.parametrize("supercell", [Supercell.diagonal(1), Supercell(((2, 1), (0, 1)))])
def test_noninteracting_limit_is_the_band_ground_state(supercell):
    system = System(supercell, n_up=1, n_down=1, coupling=0.0, phase=PHASE)
    exact = noninteracting_ground_state(system, depth=1.5).energy
    assert two_electron_energy(supercell, 1.5, 0.0, PHASE, shells=4.0) == pytest.approx(exact, abs=1e-9)


def test_weak_coupling_is_second_order_perturbation_theory():
    """V = 0: E = λ ξ_M − λ² Σ_{q≠0} (2π/(A|q|))² / |q|² + O(λ³) in the same basis.

    First order vanishes (the Ewald potential averages to zero over the cell); the second-order
    sum runs over the pair states |q, −q⟩ (energy |q|²/2 + |q|²/2 above |0, 0⟩) inside the cutoff.
    """
    sc, shells = Supercell.diagonal(1), 3.0
    q = sc.reciprocal_vectors(shells * MOIRE_RECIPROCAL_LENGTH, include_origin=False)
    second = -np.sum((2 * math.pi / (sc.area * np.linalg.norm(q, axis=1))) ** 2 / np.sum(q**2, axis=1))
    xi = Ewald(sc).madelung
    for lam in (1e-3, 2e-3):
        e = two_electron_energy(sc, 0.0, lam, PHASE, shells)
        assert (e - lam * xi) / lam**2 == pytest.approx(second, rel=2e-2)


def test_energy_is_concave_in_the_coupling():
    """E_0(λ) = min_ψ ⟨H_0 + λ W⟩ is a minimum of functions linear in λ, hence concave."""
    sc = Supercell.diagonal(1)
    e = [two_electron_energy(sc, 3.0, lam, PHASE, 3.0) for lam in (0.0, 1.0, 2.0, 3.0)]
    second_differences = np.diff(e, 2)
    assert np.all(second_differences < 0), second_differences


def test_extrapolation_continues_the_variational_sequence():
    """More plane waves lower the energy monotonically (a larger variational space); the
    extrapolated value lies below the last cutoff's and closer to it than the last step."""
    from qernel.exact_diagonalization import extrapolated_energy

    e_inf, energies = extrapolated_energy(Supercell.diagonal(1), 1.0, 2.0, PHASE, shells=(3.0, 4.0, 5.0, 6.0))
    assert np.all(np.diff(energies) < 0)
    assert energies[-1] - 0.01 < e_inf < energies[-1]
    e0, flat = extrapolated_energy(Supercell.diagonal(1), 1.0, 0.0, PHASE, shells=(3.0, 4.0))
    assert e0 == flat[-1]  # λ = 0 converges at once: nothing to extrapolate
