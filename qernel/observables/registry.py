"""The observables of an evaluation: the registered types, in the order evaluation.nc lists them.

Adding an observable: write its module (a class following `qernel.observables.base.Observable`)
and add the class to `OBSERVABLE_TYPES` below.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING

from qernel.conditions import DEPTH_ONLY
from qernel.lattice import Supercell
from qernel.observables.density import FoldedDensity
from qernel.observables.energy import EnergyComponents
from qernel.observables.pair_correlation import PairCorrelation
from qernel.observables.structure_factor import StructureFactor
from qernel.observables.supercell_density import SupercellDensity

if TYPE_CHECKING:
    import xarray as xr

#: Every observable type an evaluation measures (when `from_config` returns one).
OBSERVABLE_TYPES = (EnergyComponents, FoldedDensity, SupercellDensity, StructureFactor, PairCorrelation)


def default_observables(system, cfg, condition_names: tuple[str, ...] = DEPTH_ONLY) -> tuple:
    """The observables that an evaluation config asks for on `system`, as a tuple (hashable).

    cfg: a `qernel.evaluate.EvalConfig` (density_bins, supercell_density_bins,
    structure_factor_shells, pair_correlation_bins, laplacian, max_vmap_batch_size).
    condition_names: what each entry of the walkers' condition vector is (`qernel.conditions`);
    an observable with a `condition_names` field (the energy: the Hamiltonian reads λ from the
    condition where it is named) gets them.
    """
    names = tuple(condition_names)
    out = []
    for cls in OBSERVABLE_TYPES:
        o = cls.from_config(system, cfg)
        if o is None:
            continue
        if dataclasses.is_dataclass(o) and "condition_names" in {f.name for f in dataclasses.fields(o)}:
            o = dataclasses.replace(o, condition_names=names)
        out.append(o)
    return tuple(out)


def from_evaluation(ev: xr.Dataset) -> tuple:
    """The observables whose series an evaluation.nc dataset holds, with its grids.

    Raises ValueError for an inconsistent grid (e.g. an r grid that does not match pair_r_max).
    """
    return tuple(o for cls in OBSERVABLE_TYPES if (o := cls.from_evaluation(ev)) is not None)


def phase_diagram_layouts() -> dict:
    """{grid dims: `PhaseDiagramLayout`} of the registered observables with gridded variables,
    in registration order (what `qernel.aggregate` stacks along V)."""
    return {cls.phase_diagram.dims: cls.phase_diagram for cls in OBSERVABLE_TYPES if cls.phase_diagram is not None}


def supercell_of(ev: xr.Dataset) -> Supercell:
    """The supercell of an evaluation.nc dataset (its JSON attr `supercell`, rows of S)."""
    return Supercell(tuple(tuple(int(v) for v in row) for row in json.loads(ev.attrs["supercell"])))
