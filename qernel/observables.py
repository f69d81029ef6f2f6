"""Per-sample estimators of the observables, accumulated over a Monte Carlo chain in batches.

Positions x are in a_M with shape (W, N, 2) (one Monte Carlo step of W walkers) or
(T, W, N, 2) (T consecutive steps); energies in E_M. Every accumulator has `update(x)` and
`result()`; memory does not grow with the chain length. Each step's walker average is one
sample of a time series whose error bar comes from online reblocking (`qernel.stats`), so
the error bars account for the autocorrelation along the chain (walkers are independent
chains and are averaged first).

* `EnergyAccumulator`: total, kinetic, moiré-potential and interaction energies per electron
  (E_M) with reblocked standard errors; the variance of the local energy.
* `DensityAccumulator`: the one-body density in electrons per a_M²,
  - folded onto the moiré unit cell: positions reduced to fractional coordinates (u, v)
    w.r.t. a1, a2 modulo 1 and histogrammed on an (n_x, n_y) grid of equal bins (bin centres
    u = (i + ½)/n_x, v = (j + ½)/n_y). Averaged over the supercell's n_cells moiré cells, so
    that mean(density) · (√3/2) = ν (it integrates to the filling over the moiré cell);
  - on the supercell: fractional supercell coordinates on an (m_x, m_y) grid; it integrates
    to N over the supercell (mean(density) · A = N).
* `StructureFactorAccumulator`: ρ_k = Σ_i e^{−ik·r_i} at supercell reciprocal vectors k ≠ 0,
  S(k) = (1/N)⟨|ρ_k|²⟩ − (1/N)|⟨ρ_k⟩|² (the connected structure factor) and the
  uncorrected (1/N)⟨|ρ_k|²⟩ (which keeps Bragg peaks: for a pinned crystal it is N at its
  reciprocal vectors). |⟨ρ_k⟩|² is corrected for the O(1/n_eff) bias of the squared mean,
  and the error of S(k) is the reblocked error of its linearisation (delta method) plus the
  second-order term of the squared mean.
* `PairCorrelationAccumulator`: g(r) of all pairs (minimum image), normalised to 1 for
  uncorrelated particles, for r below half the shortest supercell lattice vector.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from qernel.lattice import MOIRE_LATTICE, MOIRE_RECIPROCAL, Supercell
from qernel.stats import Reblocker

#: Area of the moiré unit cell, √3/2 a_M².
MOIRE_CELL_AREA = float(abs(np.linalg.det(MOIRE_LATTICE)))
#: Default grid of the folded density on the moiré unit cell.
DEFAULT_CELL_BINS = (24, 24)
#: Default structure-factor cutoff in units of |b| = 4π/√3: |k| <= 2|b| keeps the first three
#: shells of the moiré reciprocal lattice (|b|, √3|b|, 2|b|) and every supercell k inside.
DEFAULT_K_SHELLS = 2.0
#: |K|, the moiré Brillouin-zone corner (the ordering vector of the √3×√3 / honeycomb crystals).
K_POINT_NORM = 4.0 * math.pi / 3.0


def _as_steps(x, xp=np):
    """Positions (W, N, 2) or (T, W, N, 2) → array (T, W, N, 2) of namespace xp (np or jnp)."""
    x = xp.asarray(x)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 2:
        raise ValueError(f"positions must have shape (W, N, 2) or (T, W, N, 2), got {x.shape}")
    return x


def moire_fractional(x):
    """Fractional coordinates (u, v) of positions (..., 2) w.r.t. a1, a2, reduced to [0, 1)."""
    f = np.asarray(x) @ (MOIRE_RECIPROCAL.T / (2.0 * np.pi))
    return f - np.floor(f)


def supercell_fractional(supercell: Supercell, x):
    """Fractional supercell coordinates of positions (..., 2), reduced to [0, 1)."""
    f = supercell.to_frac(x)
    return f - np.floor(f)


def bin_centres(n: int) -> np.ndarray:
    """Centres (n,) of n equal bins of [0, 1)."""
    return (np.arange(n) + 0.5) / n


def _histogram_steps(frac: np.ndarray, bins: tuple[int, int]) -> np.ndarray:
    """Counts per step: frac (T, P, 2) in [0, 1) → (T, n_x, n_y) (float)."""
    nx, ny = bins
    ix = np.minimum((frac[..., 0] * nx).astype(np.int64), nx - 1)
    iy = np.minimum((frac[..., 1] * ny).astype(np.int64), ny - 1)
    t = frac.shape[0]
    flat = (np.arange(t)[:, None] * (nx * ny) + ix * ny + iy).ravel()
    return np.bincount(flat, minlength=t * nx * ny).reshape(t, nx, ny).astype(float)


# -- energies --------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class EnergyResult:
    """Energies per electron in E_M (means and reblocked standard errors).

    variance: the variance of the total local energy E_L of one sample (E_M², not per
    electron); n_eff: effective number of independent samples of E_L, variance/(N² stderr²)
    (= T·W for uncorrelated samples); n_samples: T·W; block_size: reblocking block (steps).
    """

    n_electrons: int
    energy: float
    energy_stderr: float
    kinetic_energy: float
    kinetic_energy_stderr: float
    potential_energy: float
    potential_energy_stderr: float
    interaction_energy: float
    interaction_energy_stderr: float
    variance: float
    n_eff: float
    n_samples: int
    block_size: int
    converged: bool

    def to_dataset(self) -> xr.Dataset:
        names = ("energy", "kinetic_energy", "potential_energy", "interaction_energy")
        data = {}
        for name in names:
            data[name] = ((), getattr(self, name))
            data[f"{name}_stderr"] = ((), getattr(self, f"{name}_stderr"))
        data["variance"] = ((), self.variance)
        data["n_eff"] = ((), self.n_eff)
        data["n_samples"] = ((), self.n_samples)
        ds = xr.Dataset(data)
        ds["energy_stderr"].attrs["reblocking_block_size"] = int(self.block_size)
        ds["energy_stderr"].attrs["reblocking_converged"] = int(self.converged)
        return ds


class EnergyAccumulator:
    """Accumulates the energy components of a chain, per electron, with reblocked errors.

    update(components): `components` is a `qernel.hamiltonian.EnergyComponents` (or any
    (kinetic, potential, interaction) triple) of per-configuration totals in E_M, each of
    shape (W,) for one step or (T, W) for T steps. The total is their sum, sample by sample.
    """

    def __init__(self, n_electrons: int):
        self.n_electrons = int(n_electrons)
        self._reblocker = Reblocker()
        self._n = 0
        self._shift = None
        self._s1 = 0.0
        self._s2 = 0.0

    def update(self, components) -> "EnergyAccumulator":
        kin, pot, inter = (np.asarray(c, dtype=float) for c in components)
        kin, pot, inter = np.broadcast_arrays(kin, pot, inter)
        if kin.ndim == 1:
            kin, pot, inter = kin[None], pot[None], inter[None]
        if kin.ndim != 2:
            raise ValueError(f"energy components must have shape (W,) or (T, W), got {kin.shape}")
        total = kin + pot + inter  # (T, W): components sum to the total for every sample
        per_step = np.stack([total, kin, pot, inter], axis=-1).mean(axis=1) / self.n_electrons  # (T, 4)
        self._reblocker.update(per_step)
        if self._shift is None:
            self._shift = float(total.ravel()[0])
        d = total - self._shift
        self._n += total.size
        self._s1 += float(d.sum())
        self._s2 += float((d * d).sum())
        return self

    def result(self, criterion: str = "wolff") -> EnergyResult:
        r = self._reblocker.result(criterion=criterion)
        n = self._n
        m = self._s1 / n
        variance = (self._s2 / n - m * m) * n / (n - 1) if n > 1 else float("nan")
        stderr_total = float(r.stderr[0])
        if not np.isfinite(stderr_total):  # a single step: no error estimate
            n_eff = float("nan")
        else:
            n_eff = variance / (self.n_electrons**2 * stderr_total**2) if stderr_total > 0 else float(n)
        return EnergyResult(
            self.n_electrons,
            float(r.mean[0]), stderr_total,
            float(r.mean[1]), float(r.stderr[1]),
            float(r.mean[2]), float(r.stderr[2]),
            float(r.mean[3]), float(r.stderr[3]),
            float(variance), float(n_eff), int(n), int(r.block_size[0]), bool(r.converged[0]),
        )


# -- one-body density -------------------------------------------------------------------------
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
    """Histogram estimator of the one-body density (see the module docstring for the grids).

    cell_bins: (n_x, n_y) of the folded moiré-cell grid. supercell_bins: (m_x, m_y) of the
    supercell grid; default n_x · |S_1|, n_y · |S_2| rounded (for S = diag(n1, n2) its bins
    coincide with the folded grid's, repeated over the cells).
    """

    def __init__(self, supercell: Supercell, cell_bins=DEFAULT_CELL_BINS, supercell_bins=None):
        self.supercell = supercell
        self.cell_bins = (int(cell_bins[0]), int(cell_bins[1]))
        if supercell_bins is None:
            reps = [max(1, int(round(np.linalg.norm(supercell.lattice[i])))) for i in range(2)]
            supercell_bins = (self.cell_bins[0] * reps[0], self.cell_bins[1] * reps[1])
        self.supercell_bins = (int(supercell_bins[0]), int(supercell_bins[1]))
        self._cell = Reblocker()
        self._super = Reblocker()
        self._n_electrons: int | None = None

    def update(self, x) -> "DensityAccumulator":
        x = _as_steps(x)
        t, w, n = x.shape[:3]
        if self._n_electrons is None:
            self._n_electrons = n
        elif n != self._n_electrons:
            raise ValueError(f"number of electrons changed from {self._n_electrons} to {n}")
        pts = x.reshape(t, w * n, 2)
        cell_bin_area = MOIRE_CELL_AREA / (self.cell_bins[0] * self.cell_bins[1])
        counts = _histogram_steps(moire_fractional(pts), self.cell_bins)
        self._cell.update(counts / (w * self.supercell.n_cells * cell_bin_area))
        super_bin_area = self.supercell.area / (self.supercell_bins[0] * self.supercell_bins[1])
        counts = _histogram_steps(supercell_fractional(self.supercell, pts), self.supercell_bins)
        self._super.update(counts / (w * super_bin_area))
        return self

    def result(self, criterion: str = "wolff") -> DensityResult:
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


# -- structure factor -------------------------------------------------------------------------
def default_kvectors(supercell: Supercell, shells: float = DEFAULT_K_SHELLS) -> np.ndarray:
    """Supercell reciprocal vectors k ≠ 0 with |k| <= shells · 4π/√3, sorted by |k|; (K, 2)."""
    bnorm = float(np.linalg.norm(MOIRE_RECIPROCAL[0]))
    return supercell.reciprocal_vectors(shells * bnorm)


def ordering_vector_mask(kvectors, tol: float = 1e-6) -> np.ndarray:
    """True for the k (K, 2) at the six moiré Brillouin-zone corners K, K' (|k| = 4π/3).

    These are the ordering vectors of the √3×√3 and honeycomb generalised Wigner crystals;
    they are supercell reciprocal vectors only when the supercell is commensurate (e.g. 3n×3n).
    """
    k = np.asarray(kvectors, dtype=float).reshape(-1, 2)
    f = k @ MOIRE_LATTICE.T / (2.0 * np.pi)  # coordinates in the b1, b2 basis
    f = f - np.floor(f + tol)
    corner = np.zeros(len(k), bool)
    for target in ((1 / 3, 2 / 3), (2 / 3, 1 / 3)):
        corner |= np.all(np.abs(f - np.array(target)) < tol, axis=-1)
    return corner & (np.abs(np.linalg.norm(k, axis=-1) - K_POINT_NORM) < tol * K_POINT_NORM)


def rho_k(x, kvectors):
    """ρ_k = Σ_i e^{−ik·r_i} for positions x (..., N, 2) at k (K, 2); complex (..., K)."""
    x = jnp.asarray(x)
    phase = x @ jnp.asarray(kvectors, dtype=x.dtype).T  # (..., N, K)
    return jnp.sum(jnp.cos(phase), axis=-2) - 1j * jnp.sum(jnp.sin(phase), axis=-2)


@jax.jit
def _sk_moments(x, kvectors):
    """Walker sums per step of (|ρ_k|²/N, Re ρ_k, Im ρ_k): x (T, W, N, 2) → (T, K, 3)."""
    n = x.shape[-2]
    phase = x @ kvectors.T  # (T, W, N, K)
    re = jnp.sum(jnp.cos(phase), axis=-2)
    im = -jnp.sum(jnp.sin(phase), axis=-2)
    return jnp.stack([jnp.sum(re * re + im * im, axis=1) / n, jnp.sum(re, axis=1), jnp.sum(im, axis=1)], axis=-1)


@dataclasses.dataclass(frozen=True)
class StructureFactorResult:
    """S(k) at k (K, 2) in 1/a_M, with reblocked standard errors (delta method).

    structure_factor: (1/N)⟨|ρ_k|²⟩ − (1/N)|⟨ρ_k⟩|² (bias-corrected); structure_factor_uncorrected:
    (1/N)⟨|ρ_k|²⟩; rho_mean: ⟨ρ_k⟩ (complex); all (K,).
    """

    kvectors: np.ndarray
    structure_factor: np.ndarray
    structure_factor_stderr: np.ndarray
    structure_factor_uncorrected: np.ndarray
    structure_factor_uncorrected_stderr: np.ndarray
    rho_mean: np.ndarray
    rho_mean_stderr: np.ndarray
    n_electrons: int
    n_steps: int

    def to_dataset(self) -> xr.Dataset:
        k = self.kvectors
        return xr.Dataset(
            {
                "structure_factor": ("k", self.structure_factor),
                "structure_factor_stderr": ("k", self.structure_factor_stderr),
                "structure_factor_uncorrected": ("k", self.structure_factor_uncorrected),
                "structure_factor_uncorrected_stderr": ("k", self.structure_factor_uncorrected_stderr),
                "rho_k_real": ("k", self.rho_mean.real),
                "rho_k_imag": ("k", self.rho_mean.imag),
                "rho_k_stderr": ("k", self.rho_mean_stderr),
            },
            coords={"kx": ("k", k[:, 0]), "ky": ("k", k[:, 1]), "k_norm": ("k", np.linalg.norm(k, axis=-1))},
        )


class StructureFactorAccumulator:
    """Accumulates ρ_k of a chain for S(k).

    kvectors: (K, 2) supercell reciprocal vectors (default `default_kvectors(supercell)`).
    max_elements: bound on T·W·N·K per jitted call (walkers are processed in chunks).
    """

    def __init__(self, supercell: Supercell, kvectors=None, max_elements: int = 2**24):
        self.supercell = supercell
        self.kvectors = default_kvectors(supercell) if kvectors is None else np.asarray(kvectors, float).reshape(-1, 2)
        self.max_elements = int(max_elements)
        self._reblocker = Reblocker(joint=True)
        self._n_electrons: int | None = None

    def update(self, x) -> "StructureFactorAccumulator":
        xj = _as_steps(x, jnp)  # stays on the device that holds it
        t, w, n = xj.shape[:3]
        if self._n_electrons is None:
            self._n_electrons = n
        elif n != self._n_electrons:
            raise ValueError(f"number of electrons changed from {self._n_electrons} to {n}")
        chunk = max(1, self.max_elements // max(1, t * n * len(self.kvectors)))
        k = jnp.asarray(self.kvectors, dtype=xj.dtype)
        sums = sum(np.asarray(_sk_moments(xj[:, i:i + chunk], k), dtype=float) for i in range(0, w, chunk))
        self._reblocker.update(sums / w)  # (T, K, 3): per-step walker means
        return self

    def result(self, criterion: str = "wolff") -> StructureFactorResult:
        if self._n_electrons is None:
            raise ValueError("no samples: call update() first")
        n = self._n_electrons
        rb = self._reblocker
        a = rb.component_result(0, criterion=criterion)
        re = rb.component_result(1, criterion=criterion)
        im = rb.component_result(2, criterion=criterion)
        rm, imm = np.asarray(re.mean), np.asarray(im.mean)
        # E|ρ̄|² = |⟨ρ⟩|² + Var(Re ρ̄) + Var(Im ρ̄): remove the bias of the squared mean
        disconnected = (rm**2 + imm**2 - re.stderr**2 - im.stderr**2) / n
        s = np.asarray(a.mean) - disconnected
        # delta method: S is linear in (A, Re ρ, Im ρ) with gradient (1, −2Re⟨ρ⟩/N, −2Im⟨ρ⟩/N);
        # plus the second-order term Var(X̄²) ⊃ 2σ⁴ that dominates where ⟨ρ_k⟩ ≈ 0
        grad = np.stack([np.ones_like(rm), -2.0 * rm / n, -2.0 * imm / n], axis=-1)
        linear = rb.result(grad, criterion=criterion).stderr
        s_err = np.sqrt(linear**2 + 2.0 * (re.stderr**4 + im.stderr**4) / n**2)
        return StructureFactorResult(
            self.kvectors, s, np.asarray(s_err), np.asarray(a.mean), np.asarray(a.stderr),
            rm + 1j * imm, np.sqrt(re.stderr**2 + im.stderr**2), n, int(a.n_samples),
        )


# -- pair correlation -------------------------------------------------------------------------
def _image_shifts(supercell: Supercell) -> np.ndarray:
    """The 9 lattice vectors n1 L1 + n2 L2, n_i ∈ {−1, 0, 1}; (9, 2)."""
    n = np.array([(i, j) for i in (-1, 0, 1) for j in (-1, 0, 1)], dtype=float)
    return n @ supercell.lattice


@functools.partial(jax.jit, static_argnames=("n_bins",))
def _pair_counts(x, inv_lattice, lattice, shifts, r_max, n_bins: int):
    """Histogram per step of minimum-image pair distances (i < j): x (T, W, N, 2) → (T, n_bins)."""
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
        return xr.Dataset(
            {"pair_correlation": ("r", self.pair_correlation),
             "pair_correlation_stderr": ("r", self.pair_correlation_stderr)},
            coords={"r": self.r},
        )


class PairCorrelationAccumulator:
    """g(r) = A/(N(N−1)) ⟨Σ_{i≠j} δ(r − |r_ij|)⟩ / (2πr), all spins, minimum-image distances.

    r_max defaults to (and may not exceed) half the shortest supercell lattice vector, where
    the minimum image is unique and the circle of radius r fits in the cell.
    """

    def __init__(self, supercell: Supercell, n_bins: int = 50, r_max: float | None = None):
        self.supercell = supercell
        limit = 0.5 * float(np.min(np.linalg.norm(supercell.lattice_vectors(
            2.0 * np.max(np.linalg.norm(supercell.lattice, axis=-1)), include_origin=False), axis=-1)))
        self.r_max = limit if r_max is None else float(r_max)
        if not 0 < self.r_max <= limit * (1 + 1e-12):
            raise ValueError(f"r_max must be in (0, {limit:.6g}] (half the shortest supercell vector), got {r_max}")
        self.n_bins = int(n_bins)
        edges = np.linspace(0.0, self.r_max, self.n_bins + 1)
        self.r = 0.5 * (edges[1:] + edges[:-1])
        self._shell_area = np.pi * (edges[1:] ** 2 - edges[:-1] ** 2)
        self._reblocker = Reblocker()
        self._n_electrons: int | None = None

    def update(self, x) -> "PairCorrelationAccumulator":
        xj = _as_steps(x, jnp)
        t, w, n = xj.shape[:3]
        if n < 2:
            raise ValueError("g(r) needs at least two electrons")
        if self._n_electrons is None:
            self._n_electrons = n
        elif n != self._n_electrons:
            raise ValueError(f"number of electrons changed from {self._n_electrons} to {n}")
        dt = xj.dtype
        counts = np.asarray(_pair_counts(xj, jnp.asarray(np.linalg.inv(self.supercell.lattice), dt),
                                         jnp.asarray(self.supercell.lattice, dt),
                                         jnp.asarray(_image_shifts(self.supercell), dt), self.r_max, self.n_bins),
                            dtype=float)
        norm = self.supercell.area / (n * (n - 1)) * 2.0 / (w * self._shell_area)
        self._reblocker.update(counts * norm)
        return self

    def result(self, criterion: str = "wolff") -> PairCorrelationResult:
        if self._n_electrons is None:
            raise ValueError("no samples: call update() first")
        r = self._reblocker.result(criterion=criterion)
        return PairCorrelationResult(self.r, np.asarray(r.mean), np.asarray(r.stderr))


# -- the per-depth dataset ----------------------------------------------------------------------
def observables_dataset(depth: float, energy: EnergyResult | None = None, density: DensityResult | None = None,
                        structure_factor: StructureFactorResult | None = None,
                        pair_correlation: PairCorrelationResult | None = None,
                        energy_unit_meV: float | None = None, attrs: dict | None = None) -> xr.Dataset:
    """The per-depth observables dataset (the `observables.nc` schema of `qernel.aggregate`).

    depth: V in E_M; energy_unit_meV: E_M in meV when known (gives `depth_meV`). Variable
    attrs (units, long_name) are added by `qernel.io.write_netcdf`.
    """
    parts = [r.to_dataset() for r in (energy, density, structure_factor, pair_correlation) if r is not None]
    ds = xr.merge(parts, combine_attrs="drop_conflicts") if parts else xr.Dataset()
    e_m = float("nan") if energy_unit_meV is None else float(energy_unit_meV)
    ds.attrs.update(attrs or {})
    ds.attrs["depth"] = float(depth)
    ds.attrs["depth_meV"] = float(depth) * e_m
    ds.attrs["energy_unit_meV"] = e_m
    if energy is not None:
        ds.attrs["n_electrons"] = int(energy.n_electrons)
    if density is not None:
        ds.attrs["filling"] = float(density.filling)
    return ds


# -- evaluation.nc → observables.nc -------------------------------------------------------------
#: Series of `evaluation.nc` (written by `qernel.evaluate`) that `compute_observables` needs.
_EVALUATION_REQUIRED = ("energy", "kinetic_energy", "potential_energy", "interaction_energy", "local_energy_variance",
                        "density", "supercell_density")
#: Attrs of evaluation.nc that describe one run, not the observables (not carried over).
_EVALUATION_RUN_ATTRS = ("date_created", "supercell", "pair_r_max")


def _series(ds: xr.Dataset, name: str, dims: tuple = ()) -> np.ndarray:
    """The per-step (or per-block) series of `name` as float64 (T, *dims), time axis first."""
    var = ds[name]
    tdim = var.dims[0]
    return np.asarray(var.transpose(tdim, *dims).values, dtype=float)


def _energy_from_series(ds: xr.Dataset, n_electrons: int, n_walkers: int, criterion: str) -> EnergyResult:
    """EnergyAccumulator.result() of the per-step walker means and walker variances in `ds`."""
    acc = EnergyAccumulator(n_electrons)
    per_step = np.stack([_series(ds, n) for n in ("energy", "kinetic_energy", "potential_energy",
                                                     "interaction_energy")], axis=-1)  # (T, 4) per electron
    acc._reblocker.update(per_step)
    # the moments of the total local energy over all T·W samples, from the walker means m_t and
    # the walker variances v_t (ddof 0) of each step: Σ (E − s)² = Σ_t W [v_t + (m_t − s)²]
    mean_t = per_step[:, 0] * n_electrons
    var_t = _series(ds, "local_energy_variance")
    acc._shift = float(mean_t[0])
    d = mean_t - acc._shift
    acc._n = int(len(mean_t) * n_walkers)
    acc._s1 = float(n_walkers * d.sum())
    acc._s2 = float(n_walkers * (var_t + d * d).sum())
    return acc.result(criterion=criterion)


def compute_observables(evaluation_path, out_path, attrs: dict | None = None, criterion: str = "wolff") -> xr.Dataset:
    """Observables of one depth from its `evaluation.nc`; writes `observables.nc` atomically.

    Every per-step series of the evaluation (walker means, see `qernel.evaluate`) is reblocked
    (`qernel.stats`, `criterion`) exactly as the accumulators above do it online: energies per
    electron with their errors, n_eff and the variance of the local energy; the folded and
    supercell densities; S(k) (connected, bias-corrected, delta-method errors) and the
    uncorrected ⟨|ρ_k|²⟩/N; g(r) when recorded. The output follows the observables.nc schema of
    `qernel.aggregate`, plus `acceptance` and reblocking diagnostics. attrs: global attrs
    (provenance; they win over those carried from the evaluation file). Returns the dataset as
    written.
    """
    import json
    import warnings
    from pathlib import Path

    from qernel import io as qio
    from qernel.stats import reblock

    evaluation_path = Path(evaluation_path)
    if not evaluation_path.is_file():
        raise FileNotFoundError(f"evaluation file {str(evaluation_path)!r} does not exist")
    ev = qio.read_netcdf(evaluation_path)
    missing = [n for n in _EVALUATION_REQUIRED if n not in ev]
    missing += [a for a in ("depth", "n_electrons", "n_walkers", "supercell") if a not in ev.attrs]
    if missing:
        raise ValueError(f"{evaluation_path}: not an evaluation file of qernel.evaluate (missing {missing})")

    n_el = int(ev.attrs["n_electrons"])
    n_walkers = int(ev.attrs["n_walkers"])
    supercell = Supercell(tuple(tuple(int(v) for v in row) for row in json.loads(ev.attrs["supercell"])))
    n_steps = int(ev.sizes[ev["energy"].dims[0]])
    if n_steps < 2:
        raise ValueError(f"{evaluation_path}: {n_steps} measurement step(s); error bars need at least 2")

    energy = _energy_from_series(ev, n_el, n_walkers, criterion)
    if not energy.converged:
        warnings.warn(f"{evaluation_path}: the energy reblocking found no plateau in {n_steps} steps: its error "
                      "bar is a lower bound (sample longer)", RuntimeWarning, stacklevel=2)

    dens = DensityAccumulator(supercell, cell_bins=(ev.sizes["x"], ev.sizes["y"]),
                              supercell_bins=(ev.sizes["sx"], ev.sizes["sy"]))
    dens._cell.update(_series(ev, "density", ("x", "y")))
    dens._super.update(_series(ev, "supercell_density", ("sx", "sy")))
    dens._n_electrons = n_el
    density = dens.result(criterion=criterion)
    density = dataclasses.replace(density, n_steps=n_steps)

    structure = None
    if all(n in ev for n in ("rho_k_abs2", "rho_k_real", "rho_k_imag")) and ev.sizes.get("k", 0) > 0:
        kvectors = np.stack([ev["kx"].values, ev["ky"].values], axis=-1)
        sf = StructureFactorAccumulator(supercell, kvectors)
        parts = [_series(ev, n, ("k",)) for n in ("rho_k_abs2", "rho_k_real", "rho_k_imag")]
        if len({p.shape for p in parts}) != 1:
            raise ValueError(f"{evaluation_path}: rho_k series of different lengths")
        sf._reblocker.update(np.stack(parts, axis=-1))  # (T, K, 3), as the accumulator's per-step means
        sf._n_electrons = n_el
        structure = sf.result(criterion=criterion)

    pair = None
    if "pair_correlation" in ev and "r" in ev.coords and n_el >= 2:
        r = ev["r"].values
        r_max = float(ev.attrs.get("pair_r_max", r[-1] + 0.5 * (r[-1] - r[-2] if len(r) > 1 else r[-1])))
        pc = PairCorrelationAccumulator(supercell, n_bins=len(r), r_max=r_max)
        if not np.allclose(pc.r, r):
            raise ValueError(f"{evaluation_path}: the r grid does not match pair_r_max = {r_max}")
        pc._reblocker.update(_series(ev, "pair_correlation", ("r",)))
        pc._n_electrons = n_el
        pair = pc.result(criterion=criterion)

    e_m = ev.attrs.get("energy_unit_meV", float("nan"))
    if attrs and attrs.get("energy_unit_meV") is not None:
        e_m = attrs["energy_unit_meV"]
    carried = {k: v for k, v in ev.attrs.items() if k not in _EVALUATION_RUN_ATTRS}
    out = observables_dataset(float(ev.attrs["depth"]), energy, density, structure, pair,
                              energy_unit_meV=float(e_m), attrs=carried)
    if "acceptance" in ev:
        out["acceptance"] = ((), float(np.mean(_series(ev, "acceptance"))))
    e_res = reblock(_series(ev, "energy"), criterion=criterion, warn=False)
    out["energy_tau"] = ((), float(e_res.tau), {"units": "1", "long_name": "integrated autocorrelation time of "
                                                   "the per-step mean energy, in measurement steps (from reblocking)"})
    out["energy_stderr"].attrs["naive_stderr"] = float(e_res.naive_stderr)
    out["energy_stderr"].attrs["reblocking_criterion"] = criterion
    out.attrs.update({"n_walkers": n_walkers, "n_steps": n_steps, "evaluation_file": str(evaluation_path),
                      "supercell": ev.attrs["supercell"]})
    qio.write_netcdf(out, out_path, attrs)
    return qio.read_netcdf(out_path)
