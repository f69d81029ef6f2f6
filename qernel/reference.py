"""The Hartree–Fock reference of a sweep: symmetry-broken HF at every depth → hartree_fock.nc.

`hartree_fock_sweep` runs `qernel.hartree_fock.hartree_fock` (band, random and crystal-seeded
starts, the lowest converged kept) at each depth of a sweep and returns one dataset over V,
which `qernel.aggregate` merges into phase_diagram.nc (DESIGN.md §3–§4). Energies per electron
in E_M, in the conventions of the VMC outputs (interaction = Hartree + exchange + the Madelung
term λ(N/2)ξ_M; potential = the moiré term).

hartree_fock.nc (dimension V, coord V in E_M; depth labels in the attr ``depth_labels``)
------------------------------------------------------------------------------------------
    hf_energy, hf_kinetic_energy, hf_potential_energy, hf_interaction_energy (V)
        per electron, E_M; NaN where HF did not converge (or was skipped)
    hf_energy_bound (V)            the lowest determinant energy met, converged or not (a
                                   variational upper bound), NaN where skipped
    hf_converged (V)               1 converged, 0 not (or skipped)
    hf_iterations, hf_shells, hf_plane_waves (V)
    hf_structure_factor, hf_structure_factor_uncorrected (V, k), coords kx, ky, k_norm:
        (⟨|ρ_k|²⟩ − |⟨ρ_k⟩|²)/N and ⟨|ρ_k|²⟩/N at `default_kvectors(supercell)` (the VMC k set)
    hf_structure_factor_peak (V)   mean of the uncorrected S over the moiré K points (the
                                   definition of `aggregate.structure_factor_peak`)
    hf_translation_order (V)       max over the K points of |⟨ρ_K⟩|/N: 0 for a determinant that
                                   keeps the moiré translation symmetry, > 0 for a crystal
    hf_translation_overlap (V)     min_i |⟨Φ|T_{a_i}|Φ⟩| over the moiré lattice vectors (1: invariant)
    hf_momentum_x, hf_momentum_y (V)   total crystal momentum (1/a_M, folded into the moiré
                                   Brillouin zone) where the determinant is translation
                                   invariant, NaN where it breaks the symmetry
    hf_density (V, x, y)           density folded onto the moiré cell (electrons per a_M², the
                                   grid of the VMC density)
Attrs: ``hf_status`` ("V=<label>: <status>; ..."; the list as JSON in ``hf_status_json``),
``hf_best_start`` (the start that won per depth), the options (``hf_<option>``), provenance
(qernel.io).

Basis: the search over starts runs at search_shells (2.0) and the lowest solution is refined at
shells (3.0). Demo system (6 holes, 3×3, λ = 10.62) at V = 10 E_M: E/N = −29.9959 (2 shells,
127 plane waves), −30.2127 (3 shells, 301), −30.2133 (4 shells, 517): 3 shells are converged to
~1e-3 E_M, 2 shells are not (0.22 E_M per hole too high).

Cost bound: the basis at `shells` has M plane waves (M ≈ 3.6 n_cells shells²); if
M > max_plane_waves the shells are lowered in steps of 0.5 down to MIN_SHELLS = 2.0 until it
fits, and if even 2.0 shells exceed it the depth is skipped (NaN, status "skipped: ..."). Below
2 shells the basis cannot hold the localised crystal orbitals (demo at V = 10 E_M: E/N =
−24.40 at 1 shell), so the bound would be useless as a reference. With the default 400: the
3×3 demo runs at 3 shells (M = 301); paper_6x6 (M = 517 at 2 shells) and larger are skipped
unless a sweep raises max_plane_waves (each iteration costs ~M² log M + M³).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import logging
import multiprocessing
import time
from typing import Mapping

import numpy as np
import xarray as xr

# the snapshot of this stage lives with the other stage snapshots (no JAX: the workflow builds it)
from qernel.config import hartree_fock_snapshot  # noqa: F401
from qernel.hartree_fock import Basis, cell_density, determinant_observables
from qernel.hartree_fock_cache import cached_hartree_fock
from qernel.observables import DEFAULT_CELL_BINS, bin_centres, default_kvectors, ordering_vector_mask

log = logging.getLogger(__name__)

#: Variables over V that the phase diagram takes from hartree_fock.nc.
HF_SCALARS = ("hf_energy", "hf_kinetic_energy", "hf_potential_energy", "hf_interaction_energy", "hf_energy_bound",
              "hf_converged", "hf_iterations", "hf_shells", "hf_plane_waves", "hf_structure_factor_peak",
              "hf_translation_order", "hf_translation_overlap", "hf_momentum_x", "hf_momentum_y")
MIN_SHELLS = 2.0


@dataclasses.dataclass(frozen=True)
class HFOptions:
    """A sweep's `hartree_fock` options (config schema `definitions.hartree_fock`).

    enabled: run HF; shells: plane-wave cutoff in |b|; search_shells: the cutoff of the
    multi-start search when below shells (the lowest solution is then refined at shells);
    starts: band + random starts (the
    crystal-seeded ones are added when seeded); max_iter: SCF iterations per start (and as many
    direct-minimisation steps); max_plane_waves: the cost bound (module docstring).
    """

    enabled: bool = True
    shells: float = 3.0
    search_shells: float = 2.0
    starts: int = 2
    seeded: bool = True
    max_iter: int = 200
    max_plane_waves: int = 400

    @classmethod
    def from_dict(cls, spec: Mapping | None, key: str = "hartree_fock") -> "HFOptions":
        """Options from a mapping; ValueError naming `key`.<option> for an unknown or bad entry."""
        spec = dict(spec or {})
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(spec) - set(fields))
        if unknown:
            raise ValueError(f"{key}.{unknown[0]}: unknown option (allowed: {', '.join(fields)})")
        out = cls(**spec)
        for name, ok in (("shells", out.shells > 0), ("search_shells", out.search_shells > 0),
                         ("starts", out.starts >= 1), ("max_iter", out.max_iter >= 1),
                         ("max_plane_waves", out.max_plane_waves >= 1)):
            if not ok:
                raise ValueError(f"{key}.{name}: must be positive, got {getattr(out, name)!r}")
        return out


def choose_shells(system, options: HFOptions) -> tuple[float | None, int]:
    """(shells, M) of the largest cutoff in shells, shells − 0.5, ..., MIN_SHELLS whose basis has at
    most max_plane_waves plane waves; (None, M at the smallest cutoff tried) if none does. A
    configured `shells` below MIN_SHELLS is used as given."""
    shells = float(options.shells)
    while True:
        size = Basis.build(system, shells).size
        if size <= options.max_plane_waves:
            return shells, size
        if shells <= MIN_SHELLS:
            return None, size
        shells = max(MIN_SHELLS, shells - 0.5)


def reference_solution(system, depth, shells, options: HFOptions, seed: int = 0, directory=None):
    """The reference's HF solution at one depth (E_M per supercell): `cached_hartree_fock` with the
    options' starts, iterations and seeding, searched at min(search_shells, shells); read from the
    HF cache when any job solved it before. A top-level function: it runs in worker processes too."""
    return cached_hartree_fock(system, depth, shells, options.starts, seed, options.max_iter, options.seeded,
                               min(options.search_shells, shells), directory)


def hartree_fock_sweep(system, depths, labels=None, options: HFOptions | None = None, seed: int = 0,
                       attrs: Mapping | None = None, cache_directory=None, workers: int = 1) -> xr.Dataset:
    """HF at each depth (E_M) of `depths` for `system`; the dataset of the module docstring.

    seed: the random starts' generator (the same at every depth). Each depth's solution is
    remembered on disk (`qernel.hartree_fock_cache`, in cache_directory, default its cache_dir())
    with the options the model's Hartree–Fock orbital prior uses for the defaults, so a sweep whose
    model has `prior_source: hartree_fock` solves each depth once and its model starts from the
    very determinant whose energy is the reference. workers > 1: the depths are solved in that
    many processes at once (spawned; each solve runs on one BLAS thread, `qernel.hartree_fock`).

    A depth whose HF fails to converge (or raises, or is over the cost bound, or is disabled)
    gets NaN with its reason in the attr hf_status; the others are unaffected.
    """
    options = options or HFOptions()
    depths = np.asarray(depths, float).ravel()
    labels = list(labels) if labels is not None else [f"{v:.3f}" for v in depths]
    n = system.n_electrons
    kvec = default_kvectors(system.supercell)
    kmask = ordering_vector_mask(kvec)
    nv, nk = len(depths), len(kvec)
    bins = DEFAULT_CELL_BINS
    scal = {name: np.full(nv, np.nan) for name in HF_SCALARS}
    scal["hf_converged"] = np.zeros(nv, dtype=np.int8)
    s_conn = np.full((nv, nk), np.nan)
    s_unc = np.full((nv, nk), np.nan)
    density = np.full((nv,) + tuple(bins), np.nan)
    status, won = [], []
    shells, size = choose_shells(system, options) if options.enabled else (None, 0)
    solve = functools.partial(reference_solution, system, shells=shells, options=options, seed=seed, directory=cache_directory)
    pending, pool = [], None
    if shells is not None and options.enabled:
        pool = (concurrent.futures.ProcessPoolExecutor(min(workers, nv), mp_context=multiprocessing.get_context("spawn"))
                if workers > 1 and nv > 1 else None)
        pending = [(pool.submit(solve, v) if pool else None, time.perf_counter()) for v in depths]
    for i, (v, label) in enumerate(zip(depths, labels)):
        if not options.enabled:
            status.append(f"V={label}: skipped: hartree_fock.enabled is false")
            won.append(f"V={label}: -")
            continue
        if shells is None:
            reason = (f"skipped: {size} plane waves at {max(MIN_SHELLS, min(options.shells, MIN_SHELLS))} shells "
                      f"exceed hartree_fock.max_plane_waves={options.max_plane_waves}")
            status.append(f"V={label}: {reason}")
            won.append(f"V={label}: -")
            log.warning("HF at V=%s %s", label, reason)
            continue
        future, t0 = pending[i]
        try:
            if future is None:
                t0 = time.perf_counter()
            r = future.result() if future is not None else solve(v)
        except Exception as e:  # noqa: BLE001 (a failed depth must not stop the sweep)
            status.append(f"V={label}: failed: {type(e).__name__}: {e}")
            won.append(f"V={label}: -")
            log.exception("HF at V=%s failed", label)
            continue
        obs = determinant_observables(r, kvec)
        scal["hf_energy_bound"][i] = r.energy / n
        scal["hf_iterations"][i] = r.iterations
        scal["hf_shells"][i] = shells
        scal["hf_plane_waves"][i] = r.basis.size
        dt = time.perf_counter() - t0
        if not r.converged:
            status.append(f"V={label}: not converged after {r.iterations} iterations (lowest determinant "
                          f"{r.energy / n:.6f} E_M per electron, kept as hf_energy_bound)")
            won.append(f"V={label}: {r.label}")
            log.warning("HF at V=%s did not converge in %d iterations (%.1f s); hf_* are NaN", label, r.iterations, dt)
            continue
        scal["hf_converged"][i] = 1
        c = r.components
        scal["hf_energy"][i] = c["total"] / n
        scal["hf_kinetic_energy"][i] = c["kinetic"] / n
        scal["hf_potential_energy"][i] = c["potential"] / n
        scal["hf_interaction_energy"][i] = c["interaction"] / n
        s_conn[i], s_unc[i] = obs.structure_factor, obs.structure_factor_uncorrected
        if kmask.any():
            scal["hf_structure_factor_peak"][i] = float(np.mean(obs.structure_factor_uncorrected[kmask]))
            scal["hf_translation_order"][i] = float(np.max(np.abs(obs.rho_mean[kmask]))) / n
        scal["hf_translation_overlap"][i] = float(np.min(obs.translation_overlap))
        scal["hf_momentum_x"][i], scal["hf_momentum_y"][i] = obs.momentum
        density[i] = cell_density(r, bins)
        status.append(f"V={label}: converged")
        won.append(f"V={label}: {r.label}")
        log.info("HF at V=%s: E/N = %.6f E_M (start %s, %d iterations, %d plane waves, %.1f s); starts: %s", label,
                 r.energy / n, r.label, r.iterations, r.basis.size, dt,
                 ", ".join(f"{a[0]} {a[1] / n:.5f}{'' if a[2] else ' (not converged)'}" for a in r.attempts))
    if pool is not None:
        pool.shutdown()
    x, y = bin_centres(bins[0]), bin_centres(bins[1])
    ds = xr.Dataset(
        {name: ("V", val) for name, val in scal.items()}
        | {"hf_structure_factor": (("V", "k"), s_conn), "hf_structure_factor_uncorrected": (("V", "k"), s_unc),
           "hf_density": (("V", "x", "y"), density)},
        coords={"V": ("V", depths), "kx": ("k", kvec[:, 0]), "ky": ("k", kvec[:, 1]),
                "k_norm": ("k", np.linalg.norm(kvec, axis=-1)), "x": ("x", x), "y": ("y", y)},
    )
    for name in ("hf_energy", "hf_kinetic_energy", "hf_potential_energy", "hf_interaction_energy"):
        ds[name].attrs.update(units="E_M", description="per electron; NaN where HF did not converge (hf_status)")
    ds.attrs.update(dict(attrs or {}))
    ds.attrs.update({"hf_status": "; ".join(status), "hf_status_json": json.dumps(status),
                     "hf_best_start": "; ".join(won), "depth_labels": ",".join(labels)})
    ds.attrs.update({f"hf_{k}": (int(v) if isinstance(v, bool) else v) for k, v in dataclasses.asdict(options).items()})
    return ds
