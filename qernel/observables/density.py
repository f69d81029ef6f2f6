"""One-body density folded onto the moiré unit cell (electrons per a_M²).

Positions are reduced to fractional coordinates (u, v) w.r.t. a1, a2 modulo 1 and
histogrammed on an (n_x, n_y) grid of equal bins (bin centres u = (i + ½)/n_x,
v = (j + ½)/n_y). Averaged over the supercell's n_cells moiré cells, so that
mean(density) · (√3/2) = ν (it integrates to the filling over the moiré cell).

`FoldedDensity` is the observable of the evaluation (jitted estimator, evaluation.nc series,
observables.nc variables); `DensityAccumulator` accumulates both grids (this one and
`qernel.observables.supercell_density`) from positions in memory.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from qernel.lattice import MOIRE_LATTICE, MOIRE_RECIPROCAL, Supercell
from qernel.observables.base import ObservableBase, PhaseDiagramLayout, SeriesSpec, as_steps, step_series
from qernel.observables.grids import (MOIRE_CELL_AREA, bin_centres, bins_from_coords, histogram, histogram_steps,
                                      moire_fractional, supercell_fractional)
from qernel.observables.supercell_density import default_supercell_bins
from qernel.stats import Reblocker

if TYPE_CHECKING:
    import xarray as xr

#: Default grid of the folded density on the moiré unit cell.
DEFAULT_CELL_BINS = (24, 24)


def cell_coords(bins: tuple[int, int]) -> dict:
    """Coords of the folded grid: x (n_x,), y (n_y,) fractional bin centres; cart_x, cart_y (x, y) in a_M."""
    x, y = bin_centres(bins[0]), bin_centres(bins[1])
    u, v = np.meshgrid(x, y, indexing="ij")
    cart = np.stack([u, v], axis=-1) @ MOIRE_LATTICE
    return {"x": x, "y": y, "cart_x": (("x", "y"), cart[..., 0]), "cart_y": (("x", "y"), cart[..., 1])}


@dataclasses.dataclass(frozen=True)
class DensityResult:
    """One-body density in electrons per a_M² with reblocked standard errors.

    x (n_x,), y (n_y,): fractional moiré-cell coordinates of the bin centres (along a1, a2);
    density, density_stderr (n_x, n_y): folded onto the moiré cell, integrates to `filling`;
    sx (m_x,), sy (m_y,): fractional supercell coordinates of the supercell grid's bin
    centres; supercell_density, supercell_density_stderr (m_x, m_y): integrates to N.
    """

    x: np.ndarray
    y: np.ndarray
    density: np.ndarray
    density_stderr: np.ndarray
    sx: np.ndarray
    sy: np.ndarray
    supercell_density: np.ndarray
    supercell_density_stderr: np.ndarray
    filling: float
    n_steps: int

    def to_dataset(self) -> xr.Dataset:
        import xarray as xr

        u, v = np.meshgrid(self.x, self.y, indexing="ij")
        cart = np.stack([u, v], axis=-1) @ MOIRE_LATTICE
        return xr.Dataset(
            {
                "density": (("x", "y"), self.density),
                "density_stderr": (("x", "y"), self.density_stderr),
                "supercell_density": (("sx", "sy"), self.supercell_density),
                "supercell_density_stderr": (("sx", "sy"), self.supercell_density_stderr),
            },
            coords={"x": self.x, "y": self.y, "sx": self.sx, "sy": self.sy,
                    "cart_x": (("x", "y"), cart[..., 0]), "cart_y": (("x", "y"), cart[..., 1])},
            attrs={"filling": self.filling},
        )


class DensityAccumulator:
    """Histogram estimator of the one-body density from positions (module docstrings of this
    module and of `supercell_density` for the grids).

    cell_bins: (n_x, n_y) of the folded moiré-cell grid. supercell_bins: (m_x, m_y) of the
    supercell grid; default `default_supercell_bins`.
    """

    def __init__(self, supercell: Supercell, cell_bins=DEFAULT_CELL_BINS, supercell_bins=None):
        self.supercell = supercell
        self.cell_bins = (int(cell_bins[0]), int(cell_bins[1]))
        if supercell_bins is None:
            supercell_bins = default_supercell_bins(supercell, self.cell_bins)
        self.supercell_bins = (int(supercell_bins[0]), int(supercell_bins[1]))
        self._cell = Reblocker()
        self._super = Reblocker()
        self._n_electrons: int | None = None

    def update(self, x) -> "DensityAccumulator":
        """Add positions (W, N, 2) or (T, W, N, 2) in a_M; raises ValueError if N changes."""
        x = as_steps(x)
        t, w, n = x.shape[:3]
        if self._n_electrons is None:
            self._n_electrons = n
        elif n != self._n_electrons:
            raise ValueError(f"number of electrons changed from {self._n_electrons} to {n}")
        pts = x.reshape(t, w * n, 2)
        cell_bin_area = MOIRE_CELL_AREA / (self.cell_bins[0] * self.cell_bins[1])
        counts = histogram_steps(moire_fractional(pts), self.cell_bins)
        self._cell.update(counts / (w * self.supercell.n_cells * cell_bin_area))
        super_bin_area = self.supercell.area / (self.supercell_bins[0] * self.supercell_bins[1])
        counts = histogram_steps(supercell_fractional(self.supercell, pts), self.supercell_bins)
        self._super.update(counts / (w * super_bin_area))
        return self

    def result(self, criterion: str = "wolff") -> DensityResult:
        """Reblocked means and errors; raises ValueError before any update."""
        if self._n_electrons is None:
            raise ValueError("no samples: call update() first")
        c = self._cell.result(criterion=criterion)
        s = self._super.result(criterion=criterion)
        return DensityResult(
            bin_centres(self.cell_bins[0]), bin_centres(self.cell_bins[1]),
            np.asarray(c.mean), np.asarray(c.stderr),
            bin_centres(self.supercell_bins[0]), bin_centres(self.supercell_bins[1]),
            np.asarray(s.mean), np.asarray(s.stderr),
            self._n_electrons / self.supercell.n_cells, int(c.n_samples),
        )


@dataclasses.dataclass(frozen=True)
class FoldedDensity(ObservableBase):
    """The folded moiré-cell density observable (module docstring).

    bins: (n_x, n_y); n_cells: moiré cells in the supercell; n_electrons: N (filling N/n_cells).
    """

    bins: tuple
    n_cells: int
    n_electrons: int
    name: ClassVar[str] = "density"
    phase_diagram: ClassVar = PhaseDiagramLayout(("x", "y"), ("density", "density_stderr"), ("x", "y"),
                                                 ("cart_x", "cart_y"))

    @classmethod
    def from_config(cls, system, cfg) -> "FoldedDensity":
        return cls(tuple(cfg.density_bins), int(system.supercell.n_cells), int(system.n_electrons))

    @classmethod
    def from_evaluation(cls, ev: xr.Dataset) -> "FoldedDensity | None":
        from qernel.observables.registry import supercell_of

        bins = bins_from_coords(ev, "x", "y")
        if "density" not in ev or bins is None:
            return None
        return cls(bins, int(supercell_of(ev).n_cells), int(ev.attrs["n_electrons"]))

    def estimator(self, log_psi):  # noqa: ARG002 (a function of positions only)
        """(params, x (W, N, 2), cond) -> {density (n_x, n_y)} in a_M⁻², walker mean."""
        import jax.numpy as jnp

        cell_to_frac = MOIRE_RECIPROCAL.T / (2.0 * np.pi)
        cell_bin_area = MOIRE_CELL_AREA / (self.bins[0] * self.bins[1])
        bins, n_cells = self.bins, self.n_cells

        def estimate(params, x, cond):  # noqa: ARG001
            dt = x.dtype
            w = x.shape[0]
            fc = x.reshape(-1, 2) @ jnp.asarray(cell_to_frac, dt)
            return {"density": histogram(fc - jnp.floor(fc), bins).astype(dt) / (w * n_cells * cell_bin_area)}

        return estimate

    def series(self) -> dict[str, SeriesSpec]:
        return {"density": SeriesSpec(tuple(self.bins), ("x", "y"), "a_M^-2",
                                      "walker mean of the folded one-body density histogram, per step")}

    def coords(self) -> dict:
        return cell_coords(self.bins)

    def reduce(self, ev: xr.Dataset, criterion: str = "wolff") -> xr.Dataset:
        """observables.nc part: density, density_stderr (x, y), reblocked; global attr filling."""
        import xarray as xr

        r = Reblocker().update(step_series(ev, "density", ("x", "y"))).result(criterion=criterion)
        return xr.Dataset({"density": (("x", "y"), np.asarray(r.mean)),
                           "density_stderr": (("x", "y"), np.asarray(r.stderr))},
                          coords=self.coords(), attrs={"filling": self.n_electrons / self.n_cells})
