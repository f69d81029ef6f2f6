"""MP2 on top of the symmetry-broken HF (qernel.mp2) against exact diagonalisation at weak coupling.

E_exact − E_HF = E2 + O(λ³): in the same plane-wave basis, E2/E_corr → 1 linearly in λ and
E2/λ² is constant to O(λ). Opposite spins: `qernel.exact_diagonalization.two_electron_energy`;
same spins: a dense diagonalisation in the antisymmetrised pair basis built here from plane waves.
"""

import math

import numpy as np
import pytest

from qernel.exact_diagonalization import two_electron_energy
from qernel.hartree_fock import HartreeFock, hartree_fock
from qernel.lattice import Supercell
from qernel.mp2 import mp2, mp2_energy
from qernel.system import System

PHASE = math.radians(45)
CELL = Supercell.diagonal(1)
WEAK = (0.05, 0.1, 0.2)


def same_spin_pair_ed(system: System, depth: float, shells: float) -> float:
    """Exact ground-state energy (E_M) of two same-spin electrons in the plane-wave basis of
    `HartreeFock(system, depth, shells)`: dense, over the pairs p1 < p2, with
    ⟨p1 p2|V|p3 p4⟩ = (λ/A) 2π/|K1 − K3| δ(K1 + K2 = K3 + K4) for K1 ≠ K3, antisymmetrised."""
    hf = HartreeFock(system, depth, shells)
    b = hf.basis
    ii, jj = np.triu_indices(b.size, 1)
    h = hf.h
    ham = (h[ii][:, ii] * (jj[:, None] == jj[None, :]) + h[jj][:, jj] * (ii[:, None] == ii[None, :])
           - h[ii][:, jj] * (jj[:, None] == ii[None, :]) - h[jj][:, ii] * (ii[:, None] == jj[None, :]))
    total = b.integers[ii] + b.integers[jj]
    conserved = np.all(total[:, None] == total[None, :], axis=-1)

    def coulomb(a1, a3):
        q = np.linalg.norm(b.vectors[a1][:, None] - b.vectors[a3][None, :], axis=-1)
        return np.where(conserved & (q > 1e-9), system.coupling / b.area * 2 * np.pi / np.where(q > 1e-9, q, 1.0), 0)

    ham = ham + coulomb(ii, ii) - coulomb(ii, jj)
    return float(np.linalg.eigvalsh(ham)[0] + hf.madelung_energy)


def _hf(system, depth, shells):
    r = hartree_fock(system, depth, shells=shells, n_starts=2, seed=0, max_iter=300, seeded=True)
    assert r.converged
    return r


def _check_second_order(lams, e2, e_corr, slope, spread):
    """E2/E_corr − 1 = O(λ) (below slope·λ, and growing ∝ λ) and E2/λ² constant within `spread`."""
    ratio = np.asarray(e2) / np.asarray(e_corr)
    assert np.all(np.asarray(e2) < 0)
    assert np.all(np.abs(ratio - 1) < slope * np.asarray(lams)), ratio
    assert (ratio[-1] - 1) / (ratio[0] - 1) == pytest.approx(lams[-1] / lams[0], rel=0.05), ratio
    per_lam2 = np.asarray(e2) / np.asarray(lams) ** 2
    assert np.ptp(per_lam2) / abs(np.mean(per_lam2)) < spread, per_lam2


def test_opposite_spin_pair_equals_the_exact_second_order_term():
    depth, shells = 2.0, 3.0
    e2, e_corr = [], []
    for lam in WEAK:
        system = System(CELL, n_up=1, n_down=1, coupling=lam, phase=PHASE)
        r = _hf(system, depth, shells)
        m = mp2(r, system, depth)
        assert m.same_spin == 0.0 and m.energy == m.opposite_spin and m.gap > 0
        e2.append(m.energy)
        e_corr.append(two_electron_energy(CELL, depth, lam, PHASE, shells=shells) - r.energy)
    # probe numbers: E2/E_corr = 1.0069, 1.0138, 1.0277; E2/λ² = −0.14911, −0.14930, −0.14967
    _check_second_order(WEAK, e2, e_corr, slope=0.2, spread=0.005)


def test_same_spin_pair_equals_the_exact_second_order_term():
    depth, shells = 5.0, 2.0
    e2, e_corr = [], []
    for lam in WEAK:
        system = System(CELL, n_up=2, coupling=lam, phase=PHASE)
        r = _hf(system, depth, shells)
        m = mp2(r, system, depth)
        assert m.opposite_spin == 0.0 and m.energy == m.same_spin and m.gap > 0
        e2.append(mp2_energy(r, system, depth))
        e_corr.append(same_spin_pair_ed(system, depth, shells) - r.energy)
    # probe numbers: E2/E_corr = 1.0008, 1.0015, 1.0031; E2/λ² = −4.3384e-3, −4.3364e-3, −4.3325e-3
    _check_second_order(WEAK, e2, e_corr, slope=0.03, spread=0.002)


def test_hf_energy_rebuilt_from_the_orbital_integrals():
    """Both spins, Hartree and exchange, a crystal-breaking supercell: Σ h_ii + ½ Σ (J − K) + λ(N/2)ξ_M."""
    system = System(Supercell.diagonal(2, 1), n_up=2, n_down=1, coupling=2.0, phase=PHASE)
    r = _hf(system, 5.0, 2.0)
    m = mp2(r, system, 5.0)
    assert m.reference_energy == pytest.approx(r.energy, abs=1e-11)
    assert m.same_spin < 0 and m.opposite_spin < 0 and m.energy == m.same_spin + m.opposite_spin
    assert m.brillouin < 1e-5 and abs(m.singles) < 1e-9


def test_unconverged_non_aufbau_and_foreign_results_raise():
    system = System(Supercell.diagonal(3), n_up=6, coupling=10.62, phase=PHASE)
    r = hartree_fock(system, 5.0, shells=1.0, n_starts=1, max_iter=1, seeded=False)
    assert not r.converged
    with pytest.raises(ValueError, match="needs a converged HF determinant"):
        mp2_energy(r, system, 5.0)
    # at V = 0 the converged HF of two holes in 2×2 cells is a crystal with a negative gap
    system = System(Supercell.diagonal(2), n_up=2, coupling=10.62, phase=PHASE)
    r = hartree_fock(system, 0.0, shells=2.0, n_starts=2, seed=0, max_iter=200, seeded=True)
    assert r.converged
    with pytest.raises(ValueError, match="not aufbau"):
        mp2_energy(r, system, 0.0)
    # a result of another depth is no HF solution at this one
    system = System(CELL, n_up=1, n_down=1, coupling=0.1, phase=PHASE)
    r = _hf(system, 2.0, 3.0)
    with pytest.raises(ValueError, match="not an HF solution"):
        mp2_energy(r, system, 5.0)
    with pytest.raises(ValueError, match="plane-wave basis"):
        mp2_energy(r, System(Supercell.diagonal(2), n_up=1, n_down=1, coupling=0.1, phase=PHASE), 2.0)
