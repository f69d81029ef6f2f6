"""One-body density on the supercell (electrons per a_M²): integrates to N over the supercell.

Positions are reduced to fractional supercell coordinates in [0, 1) and histogrammed on an
(m_x, m_y) grid of equal bins (bin centres (i + ½)/m_x, (j + ½)/m_y along L1, L2); the
per-step estimate is the walker mean of counts / bin area, so mean(density) · A = N.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from qernel.lattice import Supercell
from qernel.observables.base import ObservableBase, PhaseDiagramLayout, SeriesSpec, step_series
from qernel.observables.grids import bin_centres, bins_from_coords, histogram
from qernel.stats import Reblocker

if TYPE_CHECKING:
    import xarray as xr


def default_supercell_bins(supercell: Supercell, cell_bins: tuple[int, int]) -> tuple[int, int]:
    """(n_x · |L_1|, n_y · |L_2|) rounded (|L_i| in moiré periods, at least 1): for S = diag(n1, n2)
    its bins coincide with the folded grid's, repeated over the cells."""
    reps = [max(1, int(round(np.linalg.norm(supercell.lattice[i])))) for i in range(2)]
    return cell_bins[0] * reps[0], cell_bins[1] * reps[1]


@dataclasses.dataclass(frozen=True)
class SupercellDensity(ObservableBase):
    """The supercell density observable (module docstring). supercell; bins: (m_x, m_y)."""

    supercell: Supercell
    bins: tuple
    name: ClassVar[str] = "supercell_density"
    phase_diagram: ClassVar = PhaseDiagramLayout(("sx", "sy"), ("supercell_density", "supercell_density_stderr"),
                                                 ("sx", "sy"))

    @classmethod
    def from_config(cls, system, cfg) -> "SupercellDensity":
        sbins = cfg.supercell_density_bins
        if sbins is None:
            sbins = default_supercell_bins(system.supercell, cfg.density_bins)
        return cls(system.supercell, tuple(sbins))

    @classmethod
    def from_evaluation(cls, ev: xr.Dataset) -> "SupercellDensity | None":
        from qernel.observables.registry import supercell_of

        bins = bins_from_coords(ev, "sx", "sy")
        if "supercell_density" not in ev or bins is None:
            return None
        return cls(supercell_of(ev), bins)

    def estimator(self, log_psi):  # noqa: ARG002 (a function of positions only)
        """(params, x (W, N, 2), cond) -> {supercell_density (m_x, m_y)} in a_M⁻², walker mean."""
        import jax.numpy as jnp

        sc = self.supercell
        super_to_frac = sc.reciprocal.T / (2.0 * np.pi)
        super_bin_area = sc.area / (self.bins[0] * self.bins[1])
        bins = self.bins

        def estimate(params, x, cond):  # noqa: ARG001
            dt = x.dtype
            w = x.shape[0]
            fs = x.reshape(-1, 2) @ jnp.asarray(super_to_frac, dt)
            return {"supercell_density": histogram(fs - jnp.floor(fs), bins).astype(dt) / (w * super_bin_area)}

        return estimate

    def series(self) -> dict[str, SeriesSpec]:
        return {"supercell_density": SeriesSpec(tuple(self.bins), ("sx", "sy"), "a_M^-2",
                                                "walker mean of the supercell one-body density histogram, per step")}

    def coords(self) -> dict:
        return {"sx": bin_centres(self.bins[0]), "sy": bin_centres(self.bins[1])}

    def reduce(self, ev: xr.Dataset, criterion: str = "wolff") -> xr.Dataset:
        """observables.nc part: supercell_density, supercell_density_stderr (sx, sy), reblocked."""
        import xarray as xr

        r = Reblocker().update(step_series(ev, "supercell_density", ("sx", "sy"))).result(criterion=criterion)
        return xr.Dataset({"supercell_density": (("sx", "sy"), np.asarray(r.mean)),
                           "supercell_density_stderr": (("sx", "sy"), np.asarray(r.stderr))},
                          coords=self.coords())
