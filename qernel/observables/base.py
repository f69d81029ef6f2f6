"""What every observable shares: the `Observable` protocol, its series layout, block-summed series.

An observable owns its whole life (jaqmc's evaluate → reduce → finalize):

1. a grid (a frozen dataclass: hashable, so it can key the compiled measurement step);
2. `estimator(log_psi)`: a jit-able `(params, x (W, N, 2), cond (W, n_cond)) -> {key: array}`
   of walker means for one measurement step (no Python loop over walkers or electrons);
3. `series()`: the per-step variables it writes to evaluation.nc (`SeriesSpec`: shape, dims,
   units, long_name), `split(stats)`: host stats of B steps → those series (B, *shape),
   `coords()` and `attrs()`: its evaluation.nc coordinates and global attrs;
4. `reduce(ev, criterion)`: its part of observables.nc from the series in evaluation.nc
   `ev`, with reblocked error bars (`qernel.stats`); `phase_diagram`: how `qernel.aggregate`
   stacks its gridded variables along V (`PhaseDiagramLayout`);
5. constructors `from_config(system, cfg)` (the evaluation: an `EvalConfig`-like object) and
   `from_evaluation(ev)` (the same grid read back from evaluation.nc); both return None when
   the observable is not measured (e.g. no k-vectors). An observable whose estimator reads the
   Hamiltonian's parameters (the energy) has a `condition_names` field, which
   `registry.default_observables` sets to the names of the walkers' condition vector
   (`qernel.conditions`).

The observables of an evaluation are registered in `qernel.observables.registry`.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    import xarray as xr

#: Bound on the elements of the largest intermediate array of one estimator call (walkers ×
#: electrons × k-vectors, or walkers × pairs × images): larger work is done in chunks.
MAX_CHUNK_ELEMENTS = 2**24

#: estimator(params, x (W, N, 2), cond (W, n_cond)) -> {key: walker mean of one step}.
Estimator = Callable[[Any, Any, Any], dict]


@dataclasses.dataclass(frozen=True)
class SeriesSpec:
    """One per-step variable of evaluation.nc.

    shape: the value of one step (() for a scalar); dims: its dimension names (len(shape));
    units, long_name: CF attrs; float64: always stored as float64 (else in the evaluation's
    dtype: float32 unless the evaluation ran in float64).
    """

    shape: tuple
    dims: tuple
    units: str
    long_name: str
    float64: bool = False


@dataclasses.dataclass(frozen=True)
class PhaseDiagramLayout:
    """How `qernel.aggregate` stacks an observable's gridded observables.nc variables along V.

    dims: their grid dimensions; variables: the names (with their `_stderr` companions);
    grid_coords: coords that must agree between depths; extra_coords: coords carried along.
    """

    dims: tuple
    variables: tuple
    grid_coords: tuple
    extra_coords: tuple = ()


@runtime_checkable
class Observable(Protocol):
    """An observable of the evaluation: grid, per-step estimator, series, reduction (module docstring)."""

    name: ClassVar[str]
    #: its gridded observables.nc variables in phase_diagram.nc (None: none, or scalars).
    phase_diagram: ClassVar[PhaseDiagramLayout | None]

    def estimator(self, log_psi) -> Estimator: ...

    def series(self) -> dict[str, SeriesSpec]: ...

    def split(self, stats: dict) -> dict[str, np.ndarray]: ...

    def coords(self) -> dict: ...

    def attrs(self) -> dict: ...

    def reduce(self, ev: xr.Dataset, criterion: str = "wolff") -> xr.Dataset: ...


class ObservableBase:
    """Defaults for an `Observable`: series keyed like the estimator's output, no coords or attrs."""

    name: ClassVar[str] = ""
    phase_diagram: ClassVar[PhaseDiagramLayout | None] = None

    def series(self) -> dict[str, SeriesSpec]:
        return {}

    def split(self, stats: dict) -> dict[str, np.ndarray]:
        """Host stats of B steps (leading axis B) → {series name: float64 (B, *shape)}."""
        return {name: np.asarray(stats[name], dtype=np.float64) for name in self.series() if name in stats}

    def coords(self) -> dict:
        return {}

    def attrs(self) -> dict:
        return {}


class BlockSeries:
    """Per-step values of one series, summed into blocks of `block` steps (a power of 2).

    n_steps: steps of the chain; shape: one step's value; max_elements: the most numbers the
    stored series may hold: block is the smallest power of 2 with ceil(n_steps/block)·size <=
    max_elements (or n_steps). Reblocking block means of 2^j steps reproduces levels >= j of the
    full series' blocking analysis.
    """

    def __init__(self, n_steps: int, shape: tuple, max_elements: int):
        size = int(np.prod(shape, dtype=np.int64))
        block = 1
        while -(-n_steps // block) * size > max_elements and block < n_steps:
            block *= 2
        self.block, self.n_steps, self.shape = block, n_steps, tuple(shape)
        self.sums = np.zeros((-(-n_steps // block),) + self.shape)

    def add(self, t0: int, values: np.ndarray) -> None:
        """Add the values (B, *shape) of steps t0 .. t0 + B − 1."""
        idx = (t0 + np.arange(values.shape[0])) // self.block
        np.add.at(self.sums, idx, values)

    def values(self, n_done: int | None = None) -> np.ndarray:
        """Block means (n_blocks, *shape) of the first n_done steps (default: all)."""
        n = self.n_steps if n_done is None else n_done
        n_blocks = -(-n // self.block)
        counts = np.minimum(self.block, n - self.block * np.arange(n_blocks)).astype(float)
        return self.sums[:n_blocks] / counts.reshape((-1,) + (1,) * len(self.shape))


def step_series(ds: xr.Dataset, name: str, dims: tuple = ()) -> np.ndarray:
    """The per-step (or per-block) series `name` of evaluation.nc as float64 (T, *dims), time first."""
    var = ds[name]
    tdim = var.dims[0]
    return np.asarray(var.transpose(tdim, *dims).values, dtype=float)


def as_steps(x, xp=np):
    """Positions (W, N, 2) or (T, W, N, 2) → array (T, W, N, 2) of namespace xp (np or jnp).

    Raises ValueError for any other shape.
    """
    x = xp.asarray(x)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 2:
        raise ValueError(f"positions must have shape (W, N, 2) or (T, W, N, 2), got {x.shape}")
    return x
