"""Exact samples of a Slater determinant's |ψ|²: where the walkers start.

|det[φ_j(r_i)]|² / N! over positions is a projection determinantal point process (DPP) with the
kernel K(r, r') = Σ_j φ̃_j(r) φ̃_j*(r'), φ̃ the orbitals orthonormalised; it is sampled exactly, one
electron at a time, by the chain rule (Hough, Krishnapur, Peres & Virág, Probab. Surveys 3,
206 (2006), Algorithm 18; Gillenwater's thesis, Alg. 2): electron i is drawn from the diagonal of
the kernel conditioned on electrons 1 … i−1, i.e. from the squared norms of the rows of the orbital
matrix projected orthogonally to the rows already drawn. Positions are discretised on a uniform
grid of the supercell and jittered uniformly within their grid cell; the walkers' Metropolis
burn-in then removes what the grid and the network's difference from the determinant leave.

Why: a uniform start puts electrons anywhere. In a deep moiré potential (or a crystal-like
determinant) a walker that starts with two electrons in one minimum, or one electron on a site
the determinant leaves empty, is stuck: leaving means crossing a region where |ψ|² is
exponentially small, which the small Gaussian moves that the deep potential forces (the
proposal width adapts to ~0.1 a_M) do not do within any burn-in we can afford. Its local
energy then biases the energy and its gradient. Measured (demo system, 6 holes in 3×3, λ = 10.62,
V = 10 E_M; the model equal to the 2-shell Hartree–Fock determinant, E_HF = −29.9959 E_M per hole;
128–256 walkers, energy over 10 blocks of 10 moves; probe of the issue-13 notes): from a
uniform start, +3.9 ± 0.5 E_M per hole above E_HF after 100 burn-in moves and −0.05 ± 0.05
after 1500; from this module's start, −0.03 ± 0.10 after 100. Exact sampling starts every
walker in the determinant's own distribution.

Shapes: positions in a_M; orbital values (M, n) on M grid points; samples (W, n, 2).
"""

from __future__ import annotations

import jax
import numpy as np

from qernel.lattice import Supercell

#: Grid points per a_M along each supercell edge (spacing 0.1 a_M; a site's orbital at
#: V = 10 E_M has a width ~0.2 a_M, and the jitter and the burn-in smooth the rest). The cost
#: of a draw is ~M·n² per walker (M grid points, n electrons per spin).
GRID_PER_CELL = 10


def grid_points(supercell: Supercell, per_cell: int = GRID_PER_CELL) -> tuple[np.ndarray, np.ndarray]:
    """(points (M, 2) in a_M, the centres of a uniform grid of the supercell; steps (2, 2), the grid
    cell's edge vectors (rows)). The grid has per_cell · |n_i| points along supercell vector i,
    n_i its moiré-cell count along that edge (at least per_cell)."""
    # lengths in a_M: a moiré cell edge is 1 a_M, so per_cell points per a_M of each supercell edge
    counts = [max(per_cell, int(np.ceil(per_cell * np.linalg.norm(v)))) for v in supercell.lattice]
    fa = (np.arange(counts[0]) + 0.5) / counts[0]
    fb = (np.arange(counts[1]) + 0.5) / counts[1]
    frac = np.stack(np.meshgrid(fa, fb, indexing="ij"), axis=-1).reshape(-1, 2)
    steps = supercell.lattice / np.array(counts, float)[:, None]
    return frac @ supercell.lattice, steps


def plane_wave_orbitals(points, gvectors, kpoints, coefficients):
    """φ_j(r) = e^{i k_j·r} Σ_G c_Gj e^{i G·r} at points (M, 2); gvectors (P, 2), kpoints (n, 2),
    coefficients (P, n); (M, n) complex. The form of the band, Hartree–Fock and prior orbitals
    (qernel.pretrain.TargetOrbitals, qernel.model.orbitals)."""
    points = np.asarray(points, float)
    plane = np.exp(1j * points @ np.asarray(gvectors, float).T)
    return np.exp(1j * points @ np.asarray(kpoints, float).T) * (plane @ np.asarray(coefficients))


def _sample_indices(rng: np.random.Generator, basis: np.ndarray, n_samples: int) -> np.ndarray:
    """Chain-rule sampling of a projection DPP. basis (M, n) with orthonormal columns; (n_samples, n)
    int. NumPy, vectorised over samples in chunks of ~2·10⁷ numbers (no compilation)."""
    m, n = basis.shape
    out = np.empty((n_samples, n), dtype=np.int64)
    chunk = max(1, int(2e7 // max(1, m * n)))
    for start in range(0, n_samples, chunk):
        k = min(chunk, n_samples - start)
        rows = np.repeat(basis[None], k, axis=0)  # (k, M, n)
        for i in range(n):
            cdf = np.cumsum(np.sum(np.abs(rows) ** 2, axis=2), axis=1)  # (k, M)
            x = np.minimum(np.sum(cdf < rng.uniform(size=(k, 1)) * cdf[:, -1:], axis=1), m - 1)
            u = rows[np.arange(k), x]
            u = u / np.linalg.norm(u, axis=1, keepdims=True)
            # condition on x: project every row orthogonally to the drawn row's direction
            rows -= np.matmul(rows, u.conj()[:, :, None]) * u[:, None, :]
            out[start:start + k, i] = x
    return out


def sample_determinant(key, orbital_values, points, steps, n_samples: int) -> np.ndarray:
    """n_samples exact draws (up to the grid) of |det φ_j(r_i)|² for one spin block.

    orbital_values (M, n) at the grid `points` (M, 2) of `grid_points` (steps its cell edges);
    returns positions (n_samples, n, 2) in a_M (not wrapped: inside the grid's cells). Raises
    ValueError when the orbitals are linearly dependent on the grid (rank < n: no determinant).
    """
    phi = np.asarray(orbital_values, complex)
    m, n = phi.shape
    if n == 0:
        return np.zeros((n_samples, 0, 2))
    q, r = np.linalg.qr(phi)
    d = np.abs(np.diag(r))
    if d.min() <= 1e-10 * d.max():
        raise ValueError(f"the {n} orbitals are linearly dependent on the sampling grid (no determinant to sample)")
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())
    idx = _sample_indices(rng, q, n_samples)
    jitter = rng.uniform(-0.5, 0.5, size=(n_samples, n, 2))
    return points[idx] + jitter @ np.asarray(steps)


def determinant_positions(key, system, orbital_values_at, depths) -> np.ndarray:
    """Walker positions (W, N, 2) (a_M, wrapped into the supercell), walker w drawn exactly from the
    determinant of the orbitals at its depth depths[w] (E_M), each spin block independently
    (up electrons first, as everywhere in qernel).

    orbital_values_at(points (M, 2), depth) → (up (M, N_up), down (M, N_down)): e.g.
    `qernel.model.Wavefunction.prior_orbital_values` or `qernel.pretrain.TargetOrbitals.orbital_values`.
    Raises ValueError as `sample_determinant`.
    """
    depths = np.asarray(depths, float).ravel()
    points, steps = grid_points(system.supercell)
    out = np.zeros((len(depths), system.n_electrons, 2))
    for i, v in enumerate(np.unique(depths)):
        rows = np.flatnonzero(depths == v)
        up, down = orbital_values_at(points, float(v))
        out[rows, :system.n_up] = sample_determinant(jax.random.fold_in(key, 2 * i), up, points, steps, len(rows))
        out[rows, system.n_up:] = sample_determinant(jax.random.fold_in(key, 2 * i + 1), down, points, steps, len(rows))
    return np.asarray(system.supercell.wrap(out))
