"""Exact single-particle solver of h = -½∇² + Δ_V(r) by plane waves (moiré units).

Bloch states at crystal momentum k: φ_{k,n}(r) = A^{-1/2} Σ_G c_{G,n} e^{i(k+G)·r}, G over the
moiré reciprocal lattice, A the supercell area (so each φ is normalised on the supercell).
In this basis h_{GG'} = ½|k+G|² δ_{GG'} + Δ_{G−G'}, with Δ_{±g_j} = −V e^{±iφ}.

At the supercell k-points these are the exact one-electron orbitals of the periodic
supercell; filling the lowest levels per spin gives the exact non-interacting
N-electron ground state (the λ = 0 reference of every test and the target of orbital
pretraining).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from qernel.lattice import MOIRE_RECIPROCAL, lattice_points
from qernel.moire import moire_fourier_components
from qernel.system import System

#: Default plane-wave cutoff: |G| <= DEFAULT_SHELLS · |b| (|b| = 4π/√3).
DEFAULT_SHELLS = 8.0
_DEGENERACY_TOL = 1e-8


@dataclasses.dataclass(frozen=True)
class BandStructure:
    """Bands at a set of k-points.

    kpoints: (K, 2) in 1/a_M; gvectors: (P, 2) moiré reciprocal vectors of the basis;
    energies: (K, B) in E_M, ascending per k; coefficients: (K, P, B) complex, unit-normalised
    columns; area: the normalisation area of the orbitals (a_M²).
    """

    kpoints: np.ndarray
    gvectors: np.ndarray
    energies: np.ndarray
    coefficients: np.ndarray
    area: float


def plane_wave_basis(shells: float = DEFAULT_SHELLS) -> np.ndarray:
    """Moiré reciprocal vectors with |G| <= shells·|b|; (P, 2)."""
    bnorm = np.linalg.norm(MOIRE_RECIPROCAL[0])
    return lattice_points(MOIRE_RECIPROCAL, shells * bnorm)


def _potential_matrix(gvectors: np.ndarray, depth: float, phase: float) -> np.ndarray:
    """Δ_{G−G'} in the basis `gvectors` (P, 2): the k-independent part of h; (P, P) complex."""
    diff = gvectors[:, None, :] - gvectors[None, :, :]
    h = np.zeros((len(gvectors), len(gvectors)), dtype=complex)
    qs, coeffs = moire_fourier_components(depth, phase)
    bnorm = np.linalg.norm(MOIRE_RECIPROCAL[0])
    for q, c in zip(qs, coeffs):
        h += c * np.all(np.abs(diff - q) < 1e-8 * bnorm, axis=-1)
    return h


def _add_kinetic(h: np.ndarray, k: np.ndarray, gvectors: np.ndarray) -> np.ndarray:
    h += np.diag(0.5 * np.sum((k + gvectors) ** 2, axis=-1))
    return h


def hamiltonian_matrix(k: np.ndarray, gvectors: np.ndarray, depth: float, phase: float) -> np.ndarray:
    """h_{GG'} at crystal momentum k (2,) in the basis `gvectors` (P, 2); (P, P) complex Hermitian."""
    return _add_kinetic(_potential_matrix(gvectors, depth, phase), k, gvectors)


def solve_bands(kpoints, depth: float, phase: float, area: float = 1.0, shells: float = DEFAULT_SHELLS,
                n_bands: int | None = None) -> BandStructure:
    """Diagonalise h at each k-point (K, 2). depth V and energies in E_M, phase φ in radians.

    Raises ValueError for depth < 0.
    """
    if depth < 0:
        raise ValueError(f"depth V must be >= 0, got {depth}")
    kpoints = np.atleast_2d(np.asarray(kpoints, dtype=float))
    gvectors = plane_wave_basis(shells)
    n_bands = len(gvectors) if n_bands is None else min(n_bands, len(gvectors))
    energies, coefficients = [], []
    potential = _potential_matrix(gvectors, depth, phase)  # the same at every k: built once
    for k in kpoints:
        e, c = np.linalg.eigh(_add_kinetic(potential.copy(), k, gvectors))  # = hamiltonian_matrix(k, ...)
        energies.append(e[:n_bands])
        coefficients.append(c[:, :n_bands])
    return BandStructure(kpoints, gvectors, np.array(energies), np.array(coefficients), float(area))


@dataclasses.dataclass(frozen=True)
class GroundState:
    """The non-interacting N-electron ground state.

    energy: total in E_M; occupied_up / occupied_down: (k index, band index) pairs, ascending
    in energy; closed_shell: False when the highest occupied level is degenerate with the
    lowest empty one (the energy is still exact, the determinant is not unique).
    """

    bands: BandStructure
    energy: float
    occupied_up: tuple[tuple[int, int], ...]
    occupied_down: tuple[tuple[int, int], ...]
    closed_shell: bool


def noninteracting_ground_state(system: System, depth: float, shells: float = DEFAULT_SHELLS,
                                n_bands: int | None = None) -> GroundState:
    """Fill the lowest levels at the supercell k-points with n_up and n_down electrons.

    Raises ValueError for depth < 0 or when the levels computed (n_bands + 1 per k-point) are too
    few for the same-spin electrons.
    """
    n_max = max(system.n_up, system.n_down)
    if n_bands is None:
        n_bands = n_max  # enough: even at a single k-point, N levels are needed at most
    bands = solve_bands(system.supercell.kpoints, depth, system.phase, system.supercell.area, shells, n_bands + 1)
    flat = [(e, ik, ib) for ik in range(bands.energies.shape[0]) for ib, e in enumerate(bands.energies[ik])]
    flat.sort(key=lambda t: (round(t[0], 12), t[1], t[2]))
    if n_max >= len(flat):
        raise ValueError(f"{n_max} same-spin electrons need more than the {len(flat)} levels computed")
    levels = np.array([t[0] for t in flat])
    occ = [(t[1], t[2]) for t in flat]
    energy = float(levels[: system.n_up].sum() + levels[: system.n_down].sum())
    closed = all(n == 0 or levels[n] - levels[n - 1] > _DEGENERACY_TOL for n in {system.n_up, system.n_down})
    return GroundState(bands, energy, tuple(occ[: system.n_up]), tuple(occ[: system.n_down]), closed)


def orbital_values(bands: BandStructure, occupied, r):
    """φ_j(r) for the occupied (k, band) pairs at positions r (..., 2); (..., n_occ) complex.

    Works on numpy or jax arrays (jit-able: the coefficient tables are constants; JAX is imported
    only for the latter).
    """
    if isinstance(r, np.ndarray):
        xp = np
    else:
        import jax.numpy as xp
    if len(occupied) == 0:
        return xp.zeros(r.shape[:-1] + (0,), dtype=complex)
    ik = np.array([o[0] for o in occupied])
    ib = np.array([o[1] for o in occupied])
    k = bands.kpoints[ik]  # (n_occ, 2)
    c = bands.coefficients[ik, :, ib].T / np.sqrt(bands.area)  # (P, n_occ)
    plane = xp.exp(1j * (r @ xp.asarray(bands.gvectors.T)))  # (..., P)
    bloch = xp.exp(1j * (r @ xp.asarray(k.T)))  # (..., n_occ)
    return bloch * (plane @ xp.asarray(c))


def slater_log_psi(ground_state: GroundState, n_up: int):
    """log ψ(x) (complex) of the exact non-interacting Slater determinant, x (N, 2).

    Returns a function of (params, x, cond) to match `qernel.hamiltonian.LogPsi`
    (params and cond are ignored).
    """
    import jax.numpy as jnp

    from qernel.linalg import slogdet

    def log_psi(params, x, cond):
        out = jnp.zeros((), dtype=jnp.complex128 if x.dtype == jnp.float64 else jnp.complex64)
        for occ, xs in ((ground_state.occupied_up, x[:n_up]), (ground_state.occupied_down, x[n_up:])):
            if len(occ) == 0:
                continue
            mat = orbital_values(ground_state.bands, occ, xs)
            sign, logabs = slogdet(mat)
            out = out + logabs + 1j * jnp.angle(sign)
        return out

    return log_psi


def exact_density(ground_state: GroundState, r) -> np.ndarray:
    """One-body density Σ_σ Σ_occ |φ(r)|² (electrons per a_M²) at positions r (..., 2)."""
    r = np.asarray(r, dtype=float)
    rho = np.zeros(r.shape[:-1])
    for occ in (ground_state.occupied_up, ground_state.occupied_down):
        if occ:
            rho += np.sum(np.abs(orbital_values(ground_state.bands, occ, r)) ** 2, axis=-1)
    return rho
