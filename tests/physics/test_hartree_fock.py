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


# -- limits, SCF monotonicity, crystal seeds and the Wick observables (issue 13) ---------------
from qernel.hartree_fock import HFResult, cell_density, crystal_site_patterns, determinant_observables  # noqa: E402
from qernel.lattice import MOIRE_LATTICE, MOIRE_RECIPROCAL  # noqa: E402
from qernel.observables import default_kvectors, ordering_vector_mask  # noqa: E402

DEMO = System(Supercell.diagonal(3), n_up=6, coupling=10.62, phase=math.radians(45))


@pytest.mark.parametrize("depth,n_up", [(0.0, 7), (3.0, 4), (10.0, 4)])
def test_noninteracting_limit_equals_band_solver_at_several_depths(depth, n_up):
    """λ = 0: every start (band, random, crystal-seeded) relaxes to determinants of the band
    Hamiltonian, and the lowest is the band solver's N-electron ground state, also deep (V = 10).
    (Closed shells in 2×2: Γ + the six M plane waves at V = 0; the lowest band for V > 0.)"""
    system = System(Supercell.diagonal(2), n_up=n_up, n_down=1, coupling=0.0, phase=math.radians(45))
    exact = noninteracting_ground_state(system, depth)
    assert exact.closed_shell
    result = hartree_fock(system, depth=depth, shells=4.0, n_starts=2)
    assert result.converged
    # equal up to the smaller plane-wave basis of HF (4 shells vs the band solver's 8), from above
    assert -1e-9 <= result.energy - exact.energy < 1e-5
    assert any(a[0].startswith("crystal:") for a in result.attempts)  # the seeded starts ran


def _determinant(basis, c_up):
    """A spin-polarised determinant with orbitals c_up (M, n) as an HFResult."""
    return HFResult(0.0, {}, basis, (c_up, np.zeros((basis.size, 0))), (), True, 0)


def _closed_shell_gas():
    """7 spin-polarised holes in 3×3 at V = 0: Γ and the six shortest supercell K (closed shell)."""
    system = System(Supercell.diagonal(3), n_up=7, coupling=1.0, phase=math.radians(45))
    k = system.supercell.reciprocal_vectors(1.5 * np.linalg.norm(system.supercell.reciprocal[0]), include_origin=True)
    assert len(k) == 7  # Γ + one star of six: no degenerate level left half filled
    return system, k


def test_closed_shell_electron_gas_returns_the_plane_wave_determinant():
    """Weak coupling (r_s ≈ 0.6 a_B), V = 0: the HF minimum over band, random and crystal starts
    is the plane-wave determinant, with its exact energy (exchange by direct summation)."""
    system, k_occ = _closed_shell_gas()
    exact = plane_wave_determinant_energy(system, k_occ)
    result = hartree_fock(system, 0.0, shells=2.0, n_starts=3)
    assert result.converged
    assert result.energy == pytest.approx(exact["total"], abs=1e-6)
    for key in ("kinetic", "exchange", "interaction"):
        assert result.components[key] == pytest.approx(exact[key], abs=1e-6)
    obs = determinant_observables(result, default_kvectors(system.supercell))
    assert np.allclose(obs.translation_overlap, 1.0, atol=1e-8)  # translation invariant
    assert np.allclose(obs.momentum, 0.0, atol=1e-8)  # Σ of a closed star = 0
    assert np.max(np.abs(obs.rho_mean)) < 1e-6  # uniform density (to the SCF tolerance)


def test_structure_factor_of_a_plane_wave_determinant_by_hand():
    """S(k) = 1 − #{occupied K with K + k occupied}/N for plane waves; ⟨ρ_k⟩ = 0."""
    system, k_occ = _closed_shell_gas()
    hf = HartreeFock(system, 0.0, shells=2.0)
    rows = hf.basis.index_of(np.rint(k_occ @ system.supercell.lattice.T / (2 * np.pi)).astype(int))
    c = np.zeros((hf.basis.size, 7), complex)
    c[rows, np.arange(7)] = 1.0
    det = _determinant(hf.basis, c)
    kvec = default_kvectors(system.supercell)
    obs = determinant_observables(det, kvec)
    expect = [1 - sum(np.any(np.linalg.norm(k_occ - (q + kk), axis=1) < 1e-9) for q in k_occ) / 7 for kk in kvec]
    assert np.allclose(obs.structure_factor, expect, atol=1e-12)
    assert np.allclose(obs.structure_factor_uncorrected, expect, atol=1e-12)
    assert np.min(expect) < 0.5 and np.max(expect) == 1.0  # the test sees the exchange hole
    # one extra plane wave off a closed shell: total momentum = that k (mod the moiré reciprocal lattice)
    c2 = np.zeros((hf.basis.size, 2), complex)
    b1 = system.supercell.reciprocal[0]
    c2[hf.basis.index_of(np.array([[0, 0], [1, 0]])), [0, 1]] = 1.0
    det2 = _determinant(hf.basis, c2)
    p = determinant_observables(det2, kvec).momentum
    frac = (p - b1) @ MOIRE_LATTICE.T / (2 * np.pi)
    assert np.allclose(frac, np.rint(frac), atol=1e-9)


def test_wick_structure_factor_matches_direct_sampling():
    """⟨ρ_k⟩ and ⟨|ρ_k|²⟩/N of a random (symmetry-broken) 3-electron determinant, exact by
    Wick's theorem, against importance sampling of |Φ|² with uniform points."""
    system = System(Supercell.diagonal(2), n_up=3, coupling=1.0)
    hf = HartreeFock(system, 0.0, shells=1.0)
    rng = np.random.default_rng(3)
    m = hf.basis.size
    c = np.linalg.qr(rng.normal(size=(m, 3)) + 1j * rng.normal(size=(m, 3)))[0]
    det = _determinant(hf.basis, c)
    kvec = default_kvectors(system.supercell)[:12]
    obs = determinant_observables(det, kvec)
    assert np.max(np.abs(obs.rho_mean)) > 0.1  # the test resolves ⟨ρ_k⟩ ≠ 0

    x = system.supercell.to_cart(rng.uniform(size=(60_000, 3, 2)))
    phi = np.exp(1j * x @ hf.basis.vectors.T) @ c  # (S, 3 electrons, 3 orbitals), unnormalised
    w = np.abs(np.linalg.det(phi)) ** 2
    w = w / w.sum()
    rho = np.exp(-1j * x @ kvec.T).sum(axis=1)  # (S, K)
    for values, exact in ((rho, obs.rho_mean), (np.abs(rho) ** 2 / 3, obs.structure_factor_uncorrected)):
        mean = np.sum(w[:, None] * values, axis=0)
        err = np.sqrt(np.sum(w[:, None] ** 2 * np.abs(values - mean) ** 2, axis=0))
        assert np.all(np.abs(mean - exact) < 4.5 * err + 1e-12)
        assert np.max(err) < 0.08


def test_scf_energy_never_rises():
    """ODA: E(P̃) non-increasing at every iteration, from a random start, in the regime where plain
    aufbau iteration oscillates (demo system at V = 0); the direct minimisation that follows is
    monotone too."""
    hf = HartreeFock(DEMO, 0.0, shells=2.0)
    r = hf.solve(hf.initial_coefficients(np.random.default_rng(1), 0.5), max_iter=25, max_descent=25)
    assert len(r.energy_history) == 26 and len(r.descent_history) > 0
    assert np.all(np.diff(r.energy_history) <= 1e-9 * abs(r.energy_history[0]))
    assert np.all(np.diff(r.descent_history) <= 1e-9 * abs(r.energy_history[0]))
    # the undamped aufbau determinants do rise: the damping is what makes it monotone
    assert np.any(np.diff(r.determinant_history[1:]) > 1e-3)


def test_crystal_seeded_start_finds_the_honeycomb_crystal():
    """Demo system (6 holes, 3×3, λ = 10.62, φ = 45°) at V = 10 E_M: the honeycomb-seeded start
    reaches at least the random start's energy and breaks the moiré translation symmetry, with
    the Bragg peak of a honeycomb at K (a classical honeycomb of 6 point charges: S(K) = 3/2)."""
    hf = HartreeFock(DEMO, 10.0, shells=2.0)
    patterns = crystal_site_patterns(DEMO)
    assert set(patterns) == {"sites", "triangular", "honeycomb"}
    seeded = hf.solve(hf.localized_coefficients(patterns["honeycomb"][:6], np.zeros((0, 2))), max_iter=200)
    random = hf.solve(hf.initial_coefficients(np.random.default_rng(0), 0.5), max_iter=200)
    assert seeded.converged and random.converged
    assert seeded.energy <= random.energy + 1e-6
    assert seeded.energy / 6 == pytest.approx(-29.996, abs=2e-3)  # the 2-shell HF value
    kvec = default_kvectors(DEMO.supercell)
    mask = ordering_vector_mask(kvec)
    obs = determinant_observables(seeded, kvec)
    assert np.max(np.abs(obs.rho_mean[mask])) / 6 > 0.2  # ⟨ρ_K⟩ ≠ 0: translation broken
    assert np.all(obs.translation_overlap < 1e-3) and np.all(np.isnan(obs.momentum))
    assert 1.0 < np.mean(obs.structure_factor_uncorrected[mask]) <= 1.5 + 1e-9
    dens = cell_density(seeded)
    assert np.mean(dens) * np.sqrt(3) / 2 == pytest.approx(6 / 9, rel=1e-10)


def test_search_in_a_small_basis_then_refine():
    """The starts run at 2 shells, the lowest is refined at 3: the refined energy is variational
    (not above the 2-shell one), converged, and the 3-shell HF energy of the demo at V = 10
    (−30.2127; −30.2133 at 4 shells, so 3 shells are converged to ~1e-3 E_M per hole)."""
    coarse = hartree_fock(DEMO, 10.0, shells=2.0, n_starts=1, seeded=False)
    fine = hartree_fock(DEMO, 10.0, shells=3.0, n_starts=1, seeded=False, search_shells=2.0)
    assert coarse.converged and fine.converged
    assert fine.basis.size == 301 and coarse.basis.size == 127
    assert fine.energy <= coarse.energy
    assert fine.energy / 6 == pytest.approx(-30.2127, abs=1e-3)
    assert fine.attempts[-1][0].endswith("refined at 3 shells")


def test_each_solve_runs_on_one_blas_thread(monkeypatch):
    """HF's linear algebra runs on one BLAS thread, whatever the process's setting (side by side,
    BLAS's own threads oversubscribe the cores: benchmarks/bench_hartree_fock.py), and the
    process's setting is back afterwards."""
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads():
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]

    seen = []
    solve = HartreeFock.solve

    def recording_solve(self, *args, **kwargs):
        seen.append(blas_threads())
        return solve(self, *args, **kwargs)

    monkeypatch.setattr(HartreeFock, "solve", recording_solve)
    system = System(Supercell.diagonal(1), n_up=1, n_down=0, coupling=1.0, phase=math.radians(45))
    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        assert before and all(n == 2 for n in before)  # a BLAS library is loaded and obeys the limit
        hartree_fock(system, 1.0, shells=1.0, n_starts=2, seed=0, seeded=False)
        assert blas_threads() == before
    assert seen and all(threads and all(n == 1 for n in threads) for threads in seen)
