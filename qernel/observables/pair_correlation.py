"""Pair correlation g(r) of all pairs (minimum image), normalised to 1 for uncorrelated particles.

g(r) = A/(N(N−1)) ⟨Σ_{i≠j} δ(r − |r_ij|)⟩ / (2πr), all spins, for r below half the shortest
supercell lattice vector (where the minimum image is unique and the circle of radius r fits in
the cell); histogram of n_bins equal bins of [0, r_max], r in a_M.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from qernel.lattice import Supercell
from qernel.observables.base import (MAX_CHUNK_ELEMENTS, ObservableBase, PhaseDiagramLayout, SeriesSpec, as_steps,
                                     step_series)
from qernel.stats import Reblocker

if TYPE_CHECKING:
    import xarray as xr


def pair_r_limit(supercell: Supercell) -> float:
    """Half the shortest supercell lattice vector (the largest r of g(r)), a_M."""
    cutoff = 2.0 * np.max(np.linalg.norm(supercell.lattice, axis=-1))
    return 0.5 * float(np.min(np.linalg.norm(supercell.lattice_vectors(cutoff, include_origin=False), axis=-1)))


def image_shifts(supercell: Supercell) -> np.ndarray:
    """The 9 lattice vectors n1 L1 + n2 L2, n_i ∈ {−1, 0, 1}; (9, 2)."""
    n = np.array([(i, j) for i in (-1, 0, 1) for j in (-1, 0, 1)], dtype=float)
    return n @ supercell.lattice


def bin_edges(r_max: float, n_bins: int) -> np.ndarray:
    """Edges (n_bins + 1,) of the r bins, a_M."""
    return np.linspace(0.0, r_max, n_bins + 1)


def pair_counts(x, inv_lattice, lattice, shifts, r_max, n_bins: int):
    """Histogram per step of minimum-image pair distances (i < j): x (T, W, N, 2) → (T, n_bins).

    Jitted, n_bins static (compiled once per shape; JAX is imported on the first call)."""
    return _jitted_pair_counts()(x, inv_lattice, lattice, shifts, r_max, n_bins)


@functools.cache
def _jitted_pair_counts():
    import jax

    return jax.jit(_pair_counts, static_argnames=("n_bins",))


def _pair_counts(x, inv_lattice, lattice, shifts, r_max, n_bins: int):
    import jax.numpy as jnp

    n = x.shape[-2]
    iu, ju = np.triu_indices(n, k=1)
    d = x[..., iu, :] - x[..., ju, :]  # (T, W, P, 2)
    f = d @ inv_lattice
    d = (f - jnp.round(f)) @ lattice
    dist = jnp.min(jnp.linalg.norm(d[..., None, :] + shifts, axis=-1), axis=-1)  # (T, W, P)
    idx = jnp.floor(dist / r_max * n_bins).astype(jnp.int32)
    idx = jnp.where(idx < n_bins, idx, n_bins)  # overflow bin
    t = x.shape[0]
    flat = (jnp.arange(t)[:, None] * (n_bins + 1) + idx.reshape(t, -1)).ravel()
    counts = jnp.bincount(flat, length=t * (n_bins + 1)).reshape(t, n_bins + 1)
    return counts[:, :n_bins]


@dataclasses.dataclass(frozen=True)
class PairCorrelationResult:
    """g(r) at bin centres r (n_bins,) in a_M, normalised to 1 for uncorrelated particles."""

    r: np.ndarray
    pair_correlation: np.ndarray
    pair_correlation_stderr: np.ndarray

    def to_dataset(self) -> xr.Dataset:
        import xarray as xr

        return xr.Dataset(
            {"pair_correlation": ("r", self.pair_correlation),
             "pair_correlation_stderr": ("r", self.pair_correlation_stderr)},
            coords={"r": self.r},
        )


class PairCorrelationAccumulator:
    """g(r) from positions in memory (module docstring).

    r_max defaults to (and may not exceed) `pair_r_limit(supercell)`; raises ValueError beyond.
    """

    def __init__(self, supercell: Supercell, n_bins: int = 50, r_max: float | None = None):
        self.supercell = supercell
        limit = pair_r_limit(supercell)
        self.r_max = limit if r_max is None else float(r_max)
        if not 0 < self.r_max <= limit * (1 + 1e-12):
            raise ValueError(f"r_max must be in (0, {limit:.6g}] (half the shortest supercell vector), got {r_max}")
        self.n_bins = int(n_bins)
        edges = bin_edges(self.r_max, self.n_bins)
        self.r = 0.5 * (edges[1:] + edges[:-1])
        self._shell_area = np.pi * (edges[1:] ** 2 - edges[:-1] ** 2)
        self._reblocker = Reblocker()
        self._n_electrons: int | None = None

    def update(self, x) -> "PairCorrelationAccumulator":
        """Add positions (W, N, 2) or (T, W, N, 2) in a_M; raises ValueError for N < 2 or if N changes."""
        import jax.numpy as jnp

        xj = as_steps(x, jnp)
        t, w, n = xj.shape[:3]
        if n < 2:
            raise ValueError("g(r) needs at least two electrons")
        if self._n_electrons is None:
            self._n_electrons = n
        elif n != self._n_electrons:
            raise ValueError(f"number of electrons changed from {self._n_electrons} to {n}")
        dt = xj.dtype
        counts = np.asarray(pair_counts(xj, jnp.asarray(np.linalg.inv(self.supercell.lattice), dt),
                                        jnp.asarray(self.supercell.lattice, dt),
                                        jnp.asarray(image_shifts(self.supercell), dt), self.r_max, self.n_bins),
                            dtype=float)
        norm = self.supercell.area / (n * (n - 1)) * 2.0 / (w * self._shell_area)
        self._reblocker.update(counts * norm)
        return self

    def result(self, criterion: str = "wolff") -> PairCorrelationResult:
        """Reblocked g(r); raises ValueError before any update."""
        if self._n_electrons is None:
            raise ValueError("no samples: call update() first")
        r = self._reblocker.result(criterion=criterion)
        return PairCorrelationResult(self.r, np.asarray(r.mean), np.asarray(r.stderr))


@dataclasses.dataclass(frozen=True)
class PairCorrelation(ObservableBase):
    """The g(r) observable (module docstring).

    supercell; n_electrons: N; n_bins: r bins (0: not measured, but `attrs()` still records
    pair_r_max); r_max: the largest r (a_M), `pair_r_limit(supercell)` in an evaluation.
    """

    supercell: Supercell
    n_electrons: int
    n_bins: int
    r_max: float
    name: ClassVar[str] = "pair_correlation"
    phase_diagram: ClassVar = PhaseDiagramLayout(("r",), ("pair_correlation", "pair_correlation_stderr"), ("r",))

    @property
    def r(self) -> np.ndarray:
        """Bin centres (n_bins,), a_M."""
        edges = bin_edges(self.r_max, self.n_bins)
        return 0.5 * (edges[1:] + edges[:-1])

    @classmethod
    def from_config(cls, system, cfg) -> "PairCorrelation":
        """cfg.pair_correlation_bins bins up to `pair_r_limit` (no bins for a single electron)."""
        n_bins = cfg.pair_correlation_bins if system.n_electrons >= 2 else 0
        return cls(system.supercell, int(system.n_electrons), int(n_bins), pair_r_limit(system.supercell))

    @classmethod
    def from_evaluation(cls, ev: xr.Dataset) -> "PairCorrelation | None":
        """From the r coord and the pair_r_max attr (default: the last bin's upper edge);
        raises ValueError when the r grid does not match pair_r_max."""
        from qernel.observables.registry import supercell_of

        n_el = int(ev.attrs["n_electrons"])
        if "pair_correlation" not in ev or "r" not in ev.coords or n_el < 2:
            return None
        r = ev["r"].values
        r_max = float(ev.attrs.get("pair_r_max", r[-1] + 0.5 * (r[-1] - r[-2] if len(r) > 1 else r[-1])))
        supercell = supercell_of(ev)
        limit = pair_r_limit(supercell)
        if not 0 < r_max <= limit * (1 + 1e-12):
            raise ValueError(f"r_max must be in (0, {limit:.6g}] (half the shortest supercell vector), got {r_max}")
        out = cls(supercell, n_el, len(r), r_max)
        if not np.allclose(out.r, r):
            raise ValueError(f"the r grid does not match pair_r_max = {r_max}")
        return out

    def estimator(self, log_psi):  # noqa: ARG002 (a function of positions only)
        """(params, x (W, N, 2), cond) -> {pair_correlation (n_bins,)} (walker mean; {} without bins);
        walkers in chunks so that chunk × pairs × 9 images × 2 <= MAX_CHUNK_ELEMENTS."""
        import jax
        import jax.numpy as jnp

        from qernel import parallel

        if not self.n_bins:
            return lambda params, x, cond: {}
        sc, n_el, n_bins, r_max = self.supercell, self.n_electrons, self.n_bins, self.r_max
        edges = bin_edges(r_max, n_bins)
        shell_area = np.pi * (edges[1:] ** 2 - edges[:-1] ** 2)
        pair_norm = sc.area / (n_el * (n_el - 1)) * 2.0 / shell_area  # per walker
        inv_lattice, lattice, shifts = np.linalg.inv(sc.lattice), sc.lattice, image_shifts(sc)

        def estimate(params, x, cond):  # noqa: ARG001
            dt = x.dtype
            w = x.shape[0]
            n_pairs = n_el * (n_el - 1) // 2
            wc = parallel.largest_divisor_at_most(w, MAX_CHUNK_ELEMENTS // max(1, n_pairs * 9 * 2))
            xc = x.reshape(w // wc, wc, n_el, 2)
            counts = jax.lax.map(
                lambda xx: pair_counts(xx[None], jnp.asarray(inv_lattice, dt), jnp.asarray(lattice, dt),
                                       jnp.asarray(shifts, dt), r_max, n_bins)[0], xc)
            return {"pair_correlation": jnp.sum(counts, axis=0).astype(dt) * jnp.asarray(pair_norm, dt) / w}

        return estimate

    def series(self) -> dict[str, SeriesSpec]:
        if not self.n_bins:
            return {}
        return {"pair_correlation": SeriesSpec((self.n_bins,), ("r",), "1", "walker mean of the pair-correlation "
                                               "histogram estimator g(r), per step")}

    def coords(self) -> dict:
        return {"r": self.r} if self.n_bins else {}

    def attrs(self) -> dict:
        return {"pair_r_max": float(self.r_max)}

    def reduce(self, ev: xr.Dataset, criterion: str = "wolff") -> xr.Dataset:
        """observables.nc part: pair_correlation, pair_correlation_stderr (r), reblocked."""
        r = Reblocker().update(step_series(ev, "pair_correlation", ("r",))).result(criterion=criterion)
        return PairCorrelationResult(self.r, np.asarray(r.mean), np.asarray(r.stderr)).to_dataset()
