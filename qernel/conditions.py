"""The condition vector and the condition grid of a sweep (DESIGN.md §2, §3; issue 16).

Every walker carries a condition vector `cond` of shape (..., n_cond): the parameters of the
Hamiltonian family the shared model is conditioned on. Its components are named, in order, by
a tuple of names from `CONDITIONS`:

    ("depth",)              today's sweeps: n_cond = 1, cond[..., 0] = V in E_M
    ("depth", "coupling")   V in E_M and λ = a_M / a_B* (dimensionless)

The depth is always the first component (cond[..., 0] = V: the orbital prior, the pretraining
targets and the evaluation's per-depth files read it there). A physical parameter that is not
among the names is the system's (`qernel.system.System`): `parameter(cond, names, "coupling",
default=system.coupling)` is what the Hamiltonian and the Jastrow read.

A sweep resolves to a `ConditionGrid`: D points, each a row of `values` (D, n_cond), with a
path label per point. Training puts walker w at row group[w] (`ConditionGrid.conditions`);
evaluation gives every walker the same row.

This module imports no jax at import time (`qernel.config`, which the Snakefile imports, uses it).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

DEPTH = "depth"
COUPLING = "coupling"
#: The components a condition vector may carry, with their units.
CONDITIONS = {DEPTH: "E_M (the moiré depth V)", COUPLING: "1 (the coupling λ = a_M / a_B*)"}
#: Today's condition vector: the depth alone (n_cond = 1).
DEPTH_ONLY: tuple[str, ...] = (DEPTH,)
#: The label format of a grid point built from depths alone (`qernel.config.depth_label`'s).
LABEL_FORMAT = "{:.3f}"


def check_names(names: Sequence[str]) -> tuple[str, ...]:
    """The condition names as a tuple, validated: at least one, each in `CONDITIONS`, no repeats,
    "depth" first.

    Raises ValueError naming the offending name (or saying what is missing).
    """
    if isinstance(names, str):
        raise ValueError(f"condition names must be a sequence of names, not the string {names!r}")
    names = tuple(names)
    if not names:
        raise ValueError(f"condition names: at least one is needed ({DEPTH!r} first)")
    for name in names:
        if name not in CONDITIONS:
            raise ValueError(f"unknown condition name {name!r}; known: {sorted(CONDITIONS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"condition names {names} repeat a name")
    if names[0] != DEPTH:
        raise ValueError(f"condition names {names}: the first must be {DEPTH!r} (cond[..., 0] is the depth V)")
    return names


def index_of(names: Sequence[str], name: str) -> int | None:
    """The position of `name` in the condition vector named by `names`, or None when the vector
    does not carry it.

    Raises ValueError for invalid `names` (`check_names`) or a `name` not in `CONDITIONS`.
    """
    names = check_names(names)
    if name not in CONDITIONS:
        raise ValueError(f"unknown condition name {name!r}; known: {sorted(CONDITIONS)}")
    return names.index(name) if name in names else None


def parameter(cond, names: Sequence[str], name: str, default=None):
    """The physical parameter `name` for the condition vector `cond` (..., n_cond).

    cond[..., i] (shape (...), the dtype of cond) when names[i] == name; else `default` returned
    unchanged (the system's value, e.g. `system.coupling`, a Python float). Units: those of
    `CONDITIONS[name]`. Works on numpy and jax arrays, inside jit (the names are static).

    Raises ValueError for invalid names, an unknown `name`, a cond whose last axis is not
    len(names) long, or a name the vector does not carry with no default.
    """
    i = index_of(names, name)
    n = np.shape(cond)[-1] if np.ndim(cond) else None
    if n != len(tuple(names)):
        raise ValueError(f"condition vector has shape {np.shape(cond)}, but its names {tuple(names)} need a last "
                         f"axis of length {len(tuple(names))}")
    if i is None:
        if default is None:
            raise ValueError(f"the condition vector {tuple(names)} does not carry {name!r} and no default was given")
        return default
    return cond[..., i]


def names_of(model) -> tuple[str, ...]:
    """The condition names of a model: its `condition_names` attribute (a
    `qernel.model.Wavefunction` has one), else `DEPTH_ONLY` (a model conditioned on V alone).

    Raises ValueError for invalid names (`check_names`).
    """
    return check_names(getattr(model, "condition_names", None) or DEPTH_ONLY)


@dataclasses.dataclass(frozen=True, eq=False)
class ConditionGrid:
    """The D points of a sweep in condition space.

    names: the condition names (`check_names`), n_cond of them; values: (D, n_cond) float64, row d
    the condition vector of point d (units per `CONDITIONS`; values[:, 0] the depths V in E_M);
    labels: D path labels (strings; `qernel.config` makes them distinct). `values` is copied and
    made read-only.

    Raises ValueError (from the constructor) for bad names, values that are not a finite
    (D, n_cond) array with D >= 1, or labels that are not D strings.
    """

    names: tuple[str, ...]
    values: np.ndarray
    labels: tuple[str, ...]

    def __post_init__(self):
        names = check_names(self.names)
        values = np.array(self.values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(names) or values.shape[0] < 1:
            raise ValueError(f"condition grid values have shape {values.shape}; expected (D, {len(names)}) with D >= 1 "
                             f"for the names {names}")
        if not np.all(np.isfinite(values)):
            raise ValueError(f"condition grid values must be finite, got {values.tolist()}")
        labels = tuple(self.labels)
        if len(labels) != values.shape[0] or not all(isinstance(s, str) for s in labels):
            raise ValueError(f"condition grid labels: expected {values.shape[0]} strings, got {labels!r}")
        values.setflags(write=False)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "labels", labels)

    @classmethod
    def from_depths(cls, depths, labels: Sequence[str] | None = None) -> "ConditionGrid":
        """The grid of a 1-D depth sweep: names ("depth",), values depths[:, None] (n_cond = 1).

        depths: (D,) in E_M; labels: D path labels (default: each depth as "{:.3f}").
        Raises ValueError as the constructor does (and for depths that are not 1-D).
        """
        depths = np.atleast_1d(np.asarray(depths, dtype=np.float64))
        if depths.ndim != 1:
            raise ValueError(f"depths must be a 1-D array, got shape {depths.shape}")
        if labels is None:
            labels = tuple(LABEL_FORMAT.format(float(v)) for v in depths)
        return cls(DEPTH_ONLY, depths[:, None], tuple(labels))

    @property
    def n_points(self) -> int:
        """D, the number of grid points."""
        return self.values.shape[0]

    @property
    def n_cond(self) -> int:
        """The length of the condition vector."""
        return len(self.names)

    @property
    def depths(self) -> np.ndarray:
        """(D,) the depth V (E_M) of each point: values[:, 0]."""
        return self.values[:, 0]

    def column(self, name: str) -> np.ndarray | None:
        """(D,) the values of condition `name` at each point, or None when the grid does not carry it.

        Raises ValueError for a name not in `CONDITIONS`.
        """
        i = index_of(self.names, name)
        return None if i is None else self.values[:, i]

    @property
    def cond_range(self) -> tuple[tuple[float, float], ...]:
        """((min, max) per component): the condition range for `qernel.model.make_wavefunction`."""
        return tuple((float(c.min()), float(c.max())) for c in self.values.T)

    def conditions(self, group, dtype="float32"):
        """The condition vector of each walker, (W, n_cond), a jax array of `dtype`: row group[w]
        of `values` for walker w (group: (W,) ints in [0, D)).

        Raises ValueError for a group that is not 1-D or indexes outside the grid.
        """
        group = np.asarray(group)
        if group.ndim != 1 or (group.size and (group.min() < 0 or group.max() >= self.n_points)):
            raise ValueError(f"group must be a 1-D array of point indices in [0, {self.n_points}), "
                             f"got shape {group.shape}")
        import jax.numpy as jnp

        return jnp.asarray(self.values[group], dtype)

    def point(self, index: int) -> np.ndarray:
        """(n_cond,) the condition vector of point `index` (float64)."""
        return self.values[index]

    def to_dict(self) -> dict:
        """A plain mapping (names, values as nested lists, labels): for metadata and logs."""
        return {"names": list(self.names), "values": self.values.tolist(), "labels": list(self.labels)}


def as_grid(grid_or_depths) -> ConditionGrid:
    """A `ConditionGrid` as given, or the 1-D grid of a depth array (D,) in E_M (`from_depths`).

    Raises ValueError as `ConditionGrid.from_depths` does.
    """
    if isinstance(grid_or_depths, ConditionGrid):
        return grid_or_depths
    return ConditionGrid.from_depths(grid_or_depths)


def condition_vector(point, names: Sequence[str] = DEPTH_ONLY) -> np.ndarray:
    """One condition vector (n_cond,) float64 from a grid row or, for n_cond = 1, a bare depth V.

    Raises ValueError when its length is not len(names) (or names are invalid).
    """
    names = check_names(names)
    vec = np.atleast_1d(np.asarray(point, dtype=np.float64))
    if vec.shape != (len(names),):
        raise ValueError(f"condition vector {vec.tolist()} has shape {vec.shape}; the names {names} need "
                         f"({len(names)},)")
    return vec
