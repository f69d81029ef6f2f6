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

import hashlib
import logging
import os
import time
from pathlib import Path

import numpy as np

from qernel.atomic import atomic_path
from qernel.hartree_fock import band_orbitals_in_basis, hartree_fock
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
                         search_shells: float | None = None) -> TargetOrbitals:
    """HF orbitals at every depth of the grid (E_M), gauge-aligned (module docstring).

    shells: plane-wave cutoff of the HF basis (|K| <= shells·|b|); starts, seeded, max_iter, seed,
    search_shells: as `qernel.hartree_fock.hartree_fock` (lowest of several random and
    crystal-seeded starts, searched at search_shells when below shells, then refined).
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
        r = hartree_fock(system, float(v), shells=shells, n_starts=starts, seeded=seeded, max_iter=max_iter, seed=seed,
                         search_shells=search_shells)
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


#: Version of the cached HF prior orbitals: bump it when a change to the HF solver or the gauge
#: walk changes their result. The cache is keyed on the physics inputs and this version, not on the
#: source text: an unrelated edit must not make a later job (an evaluation of a trained model)
#: recompute, and possibly land on another of the degenerate symmetry-broken solutions.
CACHE_VERSION = 1


def cache_dir() -> Path:
    """Where `cached_hartree_fock_targets` remembers its results: $QERNEL_CACHE_DIR, else
    $XDG_CACHE_HOME/qernel, else ~/.cache/qernel."""
    if os.environ.get("QERNEL_CACHE_DIR"):
        return Path(os.environ["QERNEL_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qernel"


def _digest(*parts) -> str:
    """sha256 (32 hex digits) of the arguments' repr and CACHE_VERSION."""
    return hashlib.sha256(repr((CACHE_VERSION,) + parts).encode()).hexdigest()[:32]


def cached_hartree_fock_targets(system: System, depths, reference_depth: float | None = None, shells: float = 3.0,
                                search_shells: float | None = 2.0, starts: int = 2,
                                seed: int = 0, directory=None) -> TargetOrbitals:
    """`hartree_fock_targets` remembered on disk (one .npz per arguments and CACHE_VERSION in
    `directory`, default `cache_dir()`): every job that builds the same HF-prior model (pretraining,
    each depth's evaluation) computes the HF solutions once and reads the same ones. A missing or
    unreadable file (corrupt, of other shapes) is recomputed the same way; solutions that did not
    converge are used (with a warning) but not remembered; an unwritable cache only costs the
    recomputation."""
    depths = np.atleast_1d(np.asarray(depths, dtype=float))
    key = _digest(system, depths.tolist(), reference_depth, shells, search_shells, starts, seed)
    path = Path(directory or cache_dir()) / f"hartree_fock_targets_{key}.npz"
    if path.exists():
        try:
            with np.load(path) as z:
                t = TargetOrbitals(system, z["depths"], z["gvectors"], (z["k_up"], z["k_down"]),
                                   (z["c_up"], z["c_down"]), z["energies"], z["closed_shell"])
            shapes_ok = (np.allclose(t.depths, depths) and t.coefficients[0].shape[::2] == (len(depths), system.n_up)
                         and t.coefficients[1].shape[::2] == (len(depths), system.n_down))
            if shapes_ok:
                log.info(f"HF orbitals of the prior read from {path}")
                return t
            log.warning(f"{path}: cached HF orbitals of other shapes; recomputing")
        except Exception as err:  # noqa: BLE001 (any unreadable file: recompute, never stop a job)
            log.warning(f"{path}: unreadable ({type(err).__name__}: {err}); recomputing")
    t = hartree_fock_targets(system, depths, reference_depth, shells, starts, True, 200, seed, search_shells)
    if not np.all(t.closed_shell):
        bad = [float(v) for v, ok in zip(t.depths, t.closed_shell) if not ok]
        log.warning(f"HF did not converge at V = {bad} E_M: the prior uses the lowest determinant met there "
                    "(not remembered on disk)")
        return t
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, depths=t.depths, gvectors=t.gvectors, k_up=t.kpoints[0], k_down=t.kpoints[1],
                         c_up=t.coefficients[0], c_down=t.coefficients[1], energies=t.energies,
                         closed_shell=t.closed_shell)
    except OSError:
        log.warning(f"could not remember the HF orbitals in {path}")
    return t
