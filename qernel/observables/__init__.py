"""Observables of the evaluation: one module per observable, each owning its whole life.

Positions x are in a_M with shape (W, N, 2) (one Monte Carlo step of W walkers) or
(T, W, N, 2) (T consecutive steps); energies in E_M. Each step's walker average is one
sample of a time series whose error bar comes from reblocking (`qernel.stats`), so the
error bars account for the autocorrelation along the chain (walkers are independent chains
and are averaged first).

Modules (each class follows the `base.Observable` protocol: grid, jitted per-step estimator,
evaluation.nc series, reduction to observables.nc with reblocked errors):

* `energy` (`EnergyComponents`, `EnergyAccumulator`): total, kinetic, moiré-potential and
  interaction energies per electron (E_M) with reblocked standard errors; Var(E_L).
* `density` (`FoldedDensity`, `DensityAccumulator`): the one-body density folded onto the
  moiré unit cell (a_M⁻²; mean(density) · √3/2 = ν).
* `supercell_density` (`SupercellDensity`): the one-body density on the supercell
  (mean(density) · A = N).
* `structure_factor` (`StructureFactor`, `StructureFactorAccumulator`): S(k) at supercell
  reciprocal vectors k ≠ 0, connected and uncorrected, delta-method errors.
* `pair_correlation` (`PairCorrelation`, `PairCorrelationAccumulator`): g(r), minimum image.
* `registry`: `OBSERVABLE_TYPES`, `default_observables(system, cfg)`, `from_evaluation(ev)`.
* `compute`: `compute_observables` (evaluation.nc → observables.nc), `observables_dataset`.
* `base`: the protocol, `SeriesSpec`, `BlockSeries`; `grids`: fractional coordinates and histograms.

The `*Accumulator` classes take positions in memory (`update(x)`, `result()`; memory does not
grow with the chain length); the evaluation uses the observables' jitted estimators instead.

Importing this package imports neither JAX nor xarray (config resolution builds the default
observables to size their series before any job starts): the modules import them in the
functions that compute, and `compute` (xarray throughout) is imported on first use.
"""

import importlib

from qernel.observables.base import (MAX_CHUNK_ELEMENTS, BlockSeries, Observable, ObservableBase, PhaseDiagramLayout,
                                     SeriesSpec, step_series)
from qernel.observables.density import (DEFAULT_CELL_BINS, DensityAccumulator, DensityResult, FoldedDensity,
                                        cell_coords)
from qernel.observables.energy import EnergyAccumulator, EnergyComponents, EnergyResult
from qernel.observables.grids import MOIRE_CELL_AREA, bin_centres, moire_fractional, supercell_fractional
from qernel.observables.pair_correlation import (PairCorrelation, PairCorrelationAccumulator, PairCorrelationResult,
                                                 pair_r_limit)
from qernel.observables.registry import OBSERVABLE_TYPES, default_observables, from_evaluation, phase_diagram_layouts
from qernel.observables.structure_factor import (DEFAULT_K_SHELLS, K_POINT_NORM, StructureFactor,
                                                 StructureFactorAccumulator, StructureFactorResult, default_kvectors,
                                                 ordering_vector_mask, rho_k)
from qernel.observables.supercell_density import SupercellDensity, default_supercell_bins

_COMPUTE = ("compute_observables", "merge_parts", "observables_dataset")


def __getattr__(name: str):
    if name in _COMPUTE or name == "compute":
        module = importlib.import_module("qernel.observables.compute")
        return module if name == "compute" else getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "MAX_CHUNK_ELEMENTS", "BlockSeries", "Observable", "ObservableBase", "PhaseDiagramLayout", "SeriesSpec",
    "step_series",
    "compute_observables", "merge_parts", "observables_dataset",
    "DEFAULT_CELL_BINS", "DensityAccumulator", "DensityResult", "FoldedDensity", "cell_coords",
    "EnergyAccumulator", "EnergyComponents", "EnergyResult",
    "MOIRE_CELL_AREA", "bin_centres", "moire_fractional", "supercell_fractional",
    "PairCorrelation", "PairCorrelationAccumulator", "PairCorrelationResult", "pair_r_limit",
    "OBSERVABLE_TYPES", "default_observables", "from_evaluation", "phase_diagram_layouts",
    "DEFAULT_K_SHELLS", "K_POINT_NORM", "StructureFactor", "StructureFactorAccumulator", "StructureFactorResult",
    "default_kvectors", "ordering_vector_mask", "rho_k",
    "SupercellDensity", "default_supercell_bins",
]
