"""Orbital-pretraining targets from symmetry-broken Hartree–Fock, per depth.

The bands orbitals (`qernel.pretrain.make_targets`) are the liquid's: at large V and λ the
ground state is a generalised Wigner crystal whose HF determinant breaks the moiré translation
symmetry (a honeycomb or triangular charge order in the supercell) and lies far below the band
determinant (demo, V = 10 E_M: −30.21 against −28.5 E_M per hole). Pretraining the network toward
the HF orbitals at each walker's depth starts the variational optimisation in the right phase
(the standard route of crystal studies: e.g. DeepSolid and the moiré neural-VMC papers pretrain
on HF), and the walkers are drawn from |Ψ_HF|², so they start on the crystal sites.

Targets are `qernel.pretrain.TargetOrbitals` with k = 0 and the plane-wave basis of the HF
(supercell reciprocal vectors K): φ_j(r) = Σ_K c_Kj e^{iK·r} / √A. Only the occupied subspace of a
determinant is physical, so the columns are put into a smooth gauge across depths (orthogonal
Procrustes, a unitary rotation within the occupied space):

- at the depth nearest the model's reference depth, the columns are rotated to best match the
  model's own columns there (the non-interacting orbitals of its orbital prior, column j with
  Bloch envelope k_j), so where HF equals the band determinant the target is the prior;
- each further depth is rotated to best match its already-aligned neighbour, outward.

Maximising Re tr((C U)† B) over unitary U gives U = W V† for the SVD C† B = W Σ V† (Schönemann 1966).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from qernel.hartree_fock import band_orbitals_in_basis, hartree_fock
from qernel.cache import cache_dir
from qernel.hartree_fock_cache import cached_hartree_fock
from qernel.pretrain import TargetOrbitals
from qernel.system import System

log = logging.getLogger(__name__)


def procrustes_rotation(c, b):
    """The unitary U (n, n) maximising Re tr((c U)† b) for c, b (P, n); identity when n = 0."""
    if c.shape[1] == 0:
        return np.zeros((0, 0), complex)
    w, _, vh = np.linalg.svd(c.conj().T @ b)
    return w @ vh


def hartree_fock_targets(system: System, depths, reference_depth: float | None = None, shells: float = 2.0,
                         starts: int = 2, seeded: bool = True, max_iter: int = 200, seed: int = 0,
                         search_shells: float | None = None, directory=None) -> TargetOrbitals:
    """HF orbitals at every depth of the grid (E_M), gauge-aligned (module docstring).

    shells: plane-wave cutoff of the HF basis (|K| <= shells·|b|); starts, seeded, max_iter, seed,
    search_shells: as `qernel.hartree_fock.hartree_fock` (lowest of several random and
    crystal-seeded starts, searched at search_shells when below shells, then refined).
    directory: when given, each depth's solution is read from or remembered in that folder
    (`qernel.hartree_fock_cache.cached_hartree_fock`).
    Returns TargetOrbitals (depths as given, energies the HF energies in E_M per supercell,
    closed_shell True where the HF solution converged). Raises ValueError for an empty grid.
    """
    depths = np.atleast_1d(np.asarray(depths, dtype=float))
    if depths.size == 0:
        raise ValueError("hartree_fock_targets needs at least one depth")
    if reference_depth is None:
        reference_depth = float(depths[len(depths) // 2])
    results = []
    for v in depths:
        t = time.time()
        if directory is None:
            r = hartree_fock(system, float(v), shells=shells, n_starts=starts, seeded=seeded, max_iter=max_iter,
                             seed=seed, search_shells=search_shells)
        else:
            r = cached_hartree_fock(system, float(v), shells, starts, seed, max_iter, seeded, search_shells, directory)
        log.info(f"HF pretraining target at V={v:g}: E/N = {r.energy / system.n_electrons:.6f} E_M "
                 f"({r.label}, {'converged' if r.converged else 'NOT converged'}, {time.time() - t:.1f} s)")
        results.append(r)
    # the gauge walk: over the depths in ascending order, outward from the one nearest the reference
    order = np.argsort(depths, kind="stable")
    start = int(np.argmin(np.abs(depths[order] - reference_depth)))
    aligned = [None] * len(depths)

    def align(i, target):
        aligned[i] = tuple(c @ procrustes_rotation(c, b) for c, b in zip(results[i].coefficients, target))

    align(order[start], band_orbitals_in_basis(system, results[0].basis, max(float(reference_depth), 0.0)))
    for p in range(start + 1, len(order)):
        align(order[p], aligned[order[p - 1]])
    for p in range(start - 1, -1, -1):
        align(order[p], aligned[order[p + 1]])
    area = system.supercell.area
    coefficients = tuple(np.stack([aligned[i][s] for i in range(len(depths))]) / np.sqrt(area) for s in (0, 1))
    kpoints = tuple(np.zeros((len(depths), c.shape[2], 2)) for c in coefficients)
    return TargetOrbitals(system, depths, results[0].basis.vectors, kpoints, coefficients,
                          np.array([r.energy for r in results]), np.array([bool(r.converged) for r in results]))


def cached_hartree_fock_targets(system: System, depths, reference_depth: float | None = None, shells: float = 3.0,
                                search_shells: float | None = 2.0, starts: int = 2,
                                seed: int = 0, directory=None, seeded: bool = True,
                                max_iter: int = 200) -> TargetOrbitals:
    """`hartree_fock_targets` whose HF solution at each depth is remembered
    on disk (`qernel.hartree_fock_cache.cached_hartree_fock`, in `directory`, default its
    `cache_dir()`): every job that builds the same HF-prior model (pretraining, each depth's
    evaluation) reads the solutions that the sweep's HF reference rule (or the first job) computed,
    and only the cheap gauge walk is redone. Solutions that did not converge are used with a warning
    (and not remembered)."""
    t = hartree_fock_targets(system, depths, reference_depth, shells, starts, seeded, max_iter, seed, search_shells,
                             directory=directory or cache_dir())
    if not np.all(t.closed_shell):
        bad = [float(v) for v, ok in zip(t.depths, t.closed_shell) if not ok]
        log.warning(f"HF did not converge at V = {bad} E_M: the prior uses the lowest determinant met there")
    return t
