"""evaluation.nc → observables.nc: every observable reduces its own series (reblocked errors).

The observables.nc schema is documented in `qernel.aggregate`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from qernel.observables.base import step_series
from qernel.observables.density import DensityResult
from qernel.observables.energy import EnergyResult
from qernel.observables.pair_correlation import PairCorrelationResult
from qernel.observables.registry import from_evaluation
from qernel.observables.structure_factor import StructureFactorResult

#: Series of `evaluation.nc` (written by `qernel.evaluate`) that `compute_observables` needs.
EVALUATION_REQUIRED = ("energy", "kinetic_energy", "potential_energy", "interaction_energy", "local_energy_variance",
                       "density", "supercell_density")
#: Attrs of evaluation.nc that describe one run, not the observables (not carried over).
EVALUATION_RUN_ATTRS = ("date_created", "supercell", "pair_r_max")


def merge_parts(depth: float, parts, energy_unit_meV: float | None = None, attrs: dict | None = None) -> xr.Dataset:
    """One observables dataset from the observables' parts (datasets with their own global attrs).

    attrs: global attrs under the parts' (e.g. carried over from evaluation.nc); depth: V in
    E_M; energy_unit_meV: E_M in meV when known (gives `depth_meV`, else NaN).
    """
    parts = list(parts)
    ds = xr.merge(parts, combine_attrs="drop_conflicts") if parts else xr.Dataset()
    e_m = float("nan") if energy_unit_meV is None else float(energy_unit_meV)
    ds.attrs.update(attrs or {})
    ds.attrs["depth"] = float(depth)
    ds.attrs["depth_meV"] = float(depth) * e_m
    ds.attrs["energy_unit_meV"] = e_m
    for part in parts:
        ds.attrs.update(part.attrs)
    return ds


def observables_dataset(depth: float, energy: EnergyResult | None = None, density: DensityResult | None = None,
                        structure_factor: StructureFactorResult | None = None,
                        pair_correlation: PairCorrelationResult | None = None,
                        energy_unit_meV: float | None = None, attrs: dict | None = None) -> xr.Dataset:
    """The per-depth observables dataset (the `observables.nc` schema of `qernel.aggregate`)
    from in-memory results (the accumulators').

    depth: V in E_M; energy_unit_meV: E_M in meV when known (gives `depth_meV`). Variable
    attrs (units, long_name) are added by `qernel.io.write_netcdf`.
    """
    parts = [r.to_dataset() for r in (energy, density, structure_factor, pair_correlation) if r is not None]
    ds = merge_parts(depth, parts, energy_unit_meV, attrs)
    if energy is not None:
        ds.attrs["n_electrons"] = int(energy.n_electrons)
    if density is not None:
        ds.attrs["filling"] = float(density.filling)
    return ds


def compute_observables(evaluation_path, out_path, attrs: dict | None = None, criterion: str = "wolff") -> xr.Dataset:
    """Observables of one depth from its `evaluation.nc`; writes `observables.nc` atomically.

    Every observable found in the evaluation (`qernel.observables.registry.from_evaluation`)
    reblocks its per-step series (walker means, see `qernel.evaluate`; `qernel.stats`,
    `criterion`) exactly as the accumulators do it online: energies per electron with their
    errors, n_eff and the variance of the local energy; the folded and supercell densities;
    S(k) (connected, bias-corrected, delta-method errors) and the uncorrected ⟨|ρ_k|²⟩/N; g(r)
    when recorded. The output follows the observables.nc schema of `qernel.aggregate`, plus
    `acceptance` and reblocking diagnostics. attrs: global attrs (provenance; they win over
    those carried from the evaluation file). Returns the dataset as written.

    Raises FileNotFoundError (no file), ValueError (not an evaluation file, fewer than 2
    steps, inconsistent grids), each naming the file; warns (RuntimeWarning) when the energy
    reblocking found no plateau.
    """
    from qernel import io as qio

    evaluation_path = Path(evaluation_path)
    if not evaluation_path.is_file():
        raise FileNotFoundError(f"evaluation file {str(evaluation_path)!r} does not exist")
    ev = qio.read_netcdf(evaluation_path)
    missing = [n for n in EVALUATION_REQUIRED if n not in ev]
    missing += [a for a in ("depth", "n_electrons", "n_walkers", "supercell") if a not in ev.attrs]
    if missing:
        raise ValueError(f"{evaluation_path}: not an evaluation file of qernel.evaluate (missing {missing})")
    n_walkers = int(ev.attrs["n_walkers"])
    n_steps = int(ev.sizes[ev["energy"].dims[0]])
    if n_steps < 2:
        raise ValueError(f"{evaluation_path}: {n_steps} measurement step(s); error bars need at least 2")

    try:
        parts = [o.reduce(ev, criterion) for o in from_evaluation(ev)]
    except ValueError as err:
        raise ValueError(f"{evaluation_path}: {err}") from None
    energy_err = next(p["energy_stderr"] for p in parts if "energy_stderr" in p)
    if not energy_err.attrs.get("reblocking_converged", 1):
        warnings.warn(f"{evaluation_path}: the energy reblocking found no plateau in {n_steps} steps: its error "
                      "bar is a lower bound (sample longer)", RuntimeWarning, stacklevel=2)

    e_m = ev.attrs.get("energy_unit_meV", float("nan"))
    if attrs and attrs.get("energy_unit_meV") is not None:
        e_m = attrs["energy_unit_meV"]
    carried = {k: v for k, v in ev.attrs.items() if k not in EVALUATION_RUN_ATTRS}
    out = merge_parts(float(ev.attrs["depth"]), parts, energy_unit_meV=float(e_m), attrs=carried)
    if "acceptance" in ev:
        out["acceptance"] = ((), float(np.mean(step_series(ev, "acceptance"))))
    out.attrs.update({"n_walkers": n_walkers, "n_steps": n_steps, "evaluation_file": str(evaluation_path),
                      "supercell": ev.attrs["supercell"]})
    qio.write_netcdf(out, out_path, attrs)
    return qio.read_netcdf(out_path)
