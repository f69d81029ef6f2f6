"""Symmetry-broken Hartree–Fock solutions remembered on disk, one file per depth and options.

    r = cached_hartree_fock(system, 10.0, shells=3.0, n_starts=2, seed=0, max_iter=200,
                            seeded=True, search_shells=2.0)   # an HFResult, as qernel.hartree_fock

The same HF problems are solved by several stages of a sweep: the reference rule
(`qernel.reference.hartree_fock_sweep`, every depth of the sweep) and the Hartree–Fock orbital
prior of the model (`qernel.hartree_fock_targets`, every anchor depth), which pretraining and every
depth's evaluation build again. Each solve takes seconds to a minute, and the multi-start search
may land on another of the degenerate symmetry-broken solutions when its inputs differ in the
last digit, so each solution is computed once and read back by every later job: the reference's
energy is then the energy of the very determinant the model starts from.

Files: ``hartree_fock_<key>.npz`` in `qernel.cache.cache_dir()`, key = sha256 of the physics inputs (the
supercell, spin counts, λ and φ — not the meV labels —, the depth, the options) and CACHE_VERSION, not of the source text (an unrelated edit
must not make a later evaluation recompute). A missing, corrupt or mismatched file is recomputed;
an unconverged solution is returned but never remembered; an unwritable folder only costs the
recomputation. Bump CACHE_VERSION when a change to the HF solver changes its solutions.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from qernel.atomic import atomic_path
from qernel.cache import cache_dir
from qernel.hartree_fock import Basis, HFResult, hartree_fock
from qernel.system import System

log = logging.getLogger(__name__)

#: Version of the remembered solutions (see the module docstring).
CACHE_VERSION = 2
_ARRAYS = ("energy_history", "determinant_history", "gradient_history", "descent_history")


def cache_key(*parts) -> str:
    """sha256 (32 hex digits) of the parts' repr and CACHE_VERSION."""
    return hashlib.sha256(repr((CACHE_VERSION,) + parts).encode()).hexdigest()[:32]


def _write(path: Path, r: HFResult) -> None:
    meta = {"energy": float(r.energy), "components": {k: float(v) for k, v in r.components.items()},
            "converged": bool(r.converged), "iterations": int(r.iterations), "label": r.label,
            "attempts": [[a[0], float(a[1]), bool(a[2]), int(a[3])] for a in r.attempts]}
    arrays = {"vectors": r.basis.vectors, "integers": r.basis.integers, "area": np.float64(r.basis.area),
              "c_up": r.coefficients[0], "c_down": r.coefficients[1],
              "e_up": r.orbital_energies[0], "e_down": r.orbital_energies[1],
              "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    arrays.update({name: np.asarray(getattr(r, name)) for name in _ARRAYS})
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def _read(path: Path, system: System) -> HFResult:
    with np.load(path) as z:
        meta = json.loads(z["meta"].tobytes().decode())
        basis = Basis(z["vectors"], z["integers"], float(z["area"]))
        coefficients = (z["c_up"], z["c_down"])
        if coefficients[0].shape != (basis.size, system.n_up) or coefficients[1].shape != (basis.size, system.n_down):
            raise ValueError(f"orbitals of shapes {coefficients[0].shape}, {coefficients[1].shape}")
        return HFResult(meta["energy"], meta["components"], basis, coefficients, (z["e_up"], z["e_down"]),
                        meta["converged"], meta["iterations"], label=meta["label"],
                        attempts=tuple(tuple(a) for a in meta["attempts"]),
                        **{name: z[name] for name in _ARRAYS})


def cached_hartree_fock(system: System, depth: float, shells: float, n_starts: int, seed: int, max_iter: int,
                        seeded: bool = True, search_shells: float | None = None, directory=None) -> HFResult:
    """`qernel.hartree_fock.hartree_fock(system, depth, shells, n_starts, seed=seed, max_iter=max_iter,
    seeded=seeded, search_shells=search_shells)` (energies in E_M per supercell), remembered in
    `directory` (default `cache_dir()`) as the module docstring says. Raises what hartree_fock raises."""
    depth = float(depth)
    search = None if search_shells is None or search_shells >= shells else float(search_shells)
    # the Hamiltonian's inputs only: `system.physical` (meV labels) does not change the problem
    physics = (np.asarray(system.supercell.matrix).tolist(), system.n_up, system.n_down, float(system.coupling),
               float(system.phase))
    key = cache_key(physics, depth, float(shells), int(n_starts), int(seed), int(max_iter), bool(seeded), search)
    path = Path(directory or cache_dir()) / f"hartree_fock_{key}.npz"
    if path.exists():
        try:
            r = _read(path, system)
            log.info(f"HF at V={depth:g} read from {path}")
            return r
        except Exception as err:  # noqa: BLE001 (any unreadable file: recompute, never stop a job)
            log.warning(f"{path}: unreadable ({type(err).__name__}: {err}); recomputing")
    r = hartree_fock(system, depth, shells=shells, n_starts=n_starts, seed=seed, max_iter=max_iter, seeded=seeded,
                     search_shells=search)
    if not r.converged:
        return r
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write(path, r)
    except OSError:
        log.warning(f"could not remember the HF solution in {path}")
    return r
