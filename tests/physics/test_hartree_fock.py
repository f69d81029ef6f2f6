"""Hartree–Fock in the supercell plane-wave basis against exact limits and direct sampling."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from qernel.bands import noninteracting_ground_state
from qernel.ewald import Ewald
from qernel.hartree_fock import HartreeFock, hartree_fock, plane_wave_determinant_energy
from qernel.lattice import Supercell
from qernel.system import System


def test_noninteracting_limit_equals_band_solver():
    system = System(Supercell.diagonal(2), n_up=4, n_down=1, coupling=0.0, phase=math.radians(45))
    assert noninteracting_ground_state(system, 3.0).closed_shell
    result = hartree_fock(system, depth=3.0, n_starts=1)
    assert result.converged
    assert result.energy == pytest.approx(noninteracting_ground_state(system, 3.0).energy, abs=1e-5)


def test_plane_wave_determinant_interaction_matches_direct_sampling(x64):
    """⟨λ Σ_{i<j} v_E + λNξ_M/2⟩ over |ψ|² of a plane-wave determinant, by importance sampling."""
    import jax

    sc = Supercell.diagonal(2)
    system = System(sc, n_up=3, coupling=1.0)
    k_occ = np.stack([np.zeros(2), sc.reciprocal[0], -sc.reciprocal[0]])
    exact = plane_wave_determinant_energy(system, k_occ)
    # the HF functional gives the same energy for the same determinant
    hf = HartreeFock(system, 0.0)
    rows = [int(np.argmin(np.linalg.norm(hf.basis.vectors - k, axis=1))) for k in k_occ]
    c_up = np.zeros((hf.basis.size, 3), complex)
    c_up[rows, [0, 1, 2]] = 1.0
    assert hf.energy((c_up, np.zeros((hf.basis.size, 0))))["total"] == pytest.approx(exact["total"], rel=1e-10)

    rng = np.random.default_rng(0)
    x = jnp.asarray(sc.to_cart(rng.uniform(size=(200_000, 3, 2))))
    kj = jnp.asarray(k_occ)
    w = np.asarray(jax.vmap(lambda y: jnp.abs(jnp.linalg.det(jnp.exp(1j * y @ kj.T))) ** 2)(x))
    e = np.asarray(Ewald(sc).energy(x))
    mean = np.sum(w * e) / np.sum(w)
    err = np.sqrt(np.sum(w**2 * (e - mean) ** 2)) / np.sum(w)
    assert abs(mean - exact["interaction"]) < 4 * err
    assert err < 0.05 * abs(exact["exchange"])  # the test resolves the exchange term


def test_scf_converges_and_lowers_the_energy_variationally():
    # closed shell (one electron per spin at Γ): exchange and correlation of the orbitals
    system = System(Supercell.diagonal(1), n_up=1, n_down=1, coupling=2.0, phase=math.radians(45))
    hf = HartreeFock(system, 1.0, shells=2.0)
    start = hf.energy(hf.initial_coefficients(None, 0.0))["total"]
    result = hartree_fock(system, 1.0, shells=2.0, n_starts=1)
    assert result.converged
    assert result.energy < start - 1e-3
    # self-consistency: the orbitals diagonalise their own Fock matrix ([F, P] = 0)
    p = result.density_matrices()
    f_up, f_down, comps = hf.fock(*p)
    for f, pp in ((f_up, p[0]), (f_down, p[1])):
        assert np.max(np.abs(f @ pp - pp @ f)) < 1e-5
    assert comps["total"] == pytest.approx(result.energy, rel=1e-10)
    assert comps["total"] == pytest.approx(sum(comps[k] for k in ("kinetic", "potential", "interaction")), rel=1e-12)
