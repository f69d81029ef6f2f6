"""Static structure factor S(k) at supercell reciprocal vectors k ≠ 0 (dimensionless).

ρ_k = Σ_i e^{−ik·r_i}. Per step (`StructureFactor.estimator`): the walker means of |ρ_k|²/N,
Re ρ_k and Im ρ_k. Over the chain: S(k) = (1/N)⟨|ρ_k|²⟩ − (1/N)|⟨ρ_k⟩|² (the connected
structure factor) and the uncorrected (1/N)⟨|ρ_k|²⟩ (which keeps Bragg peaks: for a pinned
crystal it is N at its reciprocal vectors). |⟨ρ_k⟩|² is corrected for the O(1/n_eff) bias of
the squared mean, and the error of S(k) is the reblocked error of its linearisation (delta
method) plus the second-order term of the squared mean.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from qernel.lattice import MOIRE_LATTICE, MOIRE_RECIPROCAL, Supercell
from qernel.observables.base import (MAX_CHUNK_ELEMENTS, ObservableBase, PhaseDiagramLayout, SeriesSpec, as_steps,
                                     step_series)
from qernel.stats import Reblocker

if TYPE_CHECKING:
    import xarray as xr

#: Default structure-factor cutoff in units of |b| = 4π/√3: |k| <= 2|b| keeps the first three
#: shells of the moiré reciprocal lattice (|b|, √3|b|, 2|b|) and every supercell k inside.
DEFAULT_K_SHELLS = 2.0
#: |K|, the moiré Brillouin-zone corner (the ordering vector of the √3×√3 / honeycomb crystals).
K_POINT_NORM = 4.0 * math.pi / 3.0
#: The three series of evaluation.nc, in the order of the estimator's last axis.
RHO_K_SERIES = ("rho_k_abs2", "rho_k_real", "rho_k_imag")


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
    import jax.numpy as jnp

    x = jnp.asarray(x)
    phase = x @ jnp.asarray(kvectors, dtype=x.dtype).T  # (..., N, K)
    return jnp.sum(jnp.cos(phase), axis=-2) - 1j * jnp.sum(jnp.sin(phase), axis=-2)


def sk_moments(x, kvectors):
    """Walker sums per step of (|ρ_k|²/N, Re ρ_k, Im ρ_k): x (T, W, N, 2), k (K, 2) → (T, K, 3).

    Jitted (compiled once per shape; JAX is imported on the first call)."""
    return _jitted_sk_moments()(x, kvectors)


@functools.cache
def _jitted_sk_moments():
    import jax

    return jax.jit(_sk_moments)


def _sk_moments(x, kvectors):
    import jax.numpy as jnp

    n = x.shape[-2]
    phase = x @ kvectors.T  # (T, W, N, K)
    re = jnp.sum(jnp.cos(phase), axis=-2)
    im = -jnp.sum(jnp.sin(phase), axis=-2)
    return jnp.stack([jnp.sum(re * re + im * im, axis=1) / n, jnp.sum(re, axis=1), jnp.sum(im, axis=1)], axis=-1)


def k_coords(kvectors) -> dict:
    """Coords kx, ky, k_norm (k) in 1/a_M of k-vectors (K, 2)."""
    k = np.asarray(kvectors, dtype=float).reshape(-1, 2)
    return {"kx": ("k", k[:, 0]), "ky": ("k", k[:, 1]), "k_norm": ("k", np.linalg.norm(k, axis=-1))}


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
        import xarray as xr

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
            coords=k_coords(self.kvectors),
        )


def structure_factor_result(reblocker: Reblocker, kvectors, n_electrons: int,
                            criterion: str = "wolff") -> StructureFactorResult:
    """S(k) from a joint `Reblocker` fed per-step walker means (T, K, 3) [|ρ_k|²/N, Re ρ_k, Im ρ_k]."""
    n = n_electrons
    rb = reblocker
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
        np.asarray(kvectors), s, np.asarray(s_err), np.asarray(a.mean), np.asarray(a.stderr),
        rm + 1j * imm, np.sqrt(re.stderr**2 + im.stderr**2), n, int(a.n_samples),
    )


class StructureFactorAccumulator:
    """Accumulates ρ_k of a chain (positions in memory) for S(k).

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
        """Add positions (W, N, 2) or (T, W, N, 2) in a_M; raises ValueError if N changes."""
        import jax.numpy as jnp

        xj = as_steps(x, jnp)  # stays on the device that holds it
        t, w, n = xj.shape[:3]
        if self._n_electrons is None:
            self._n_electrons = n
        elif n != self._n_electrons:
            raise ValueError(f"number of electrons changed from {self._n_electrons} to {n}")
        chunk = max(1, self.max_elements // max(1, t * n * len(self.kvectors)))
        k = jnp.asarray(self.kvectors, dtype=xj.dtype)
        sums = sum(np.asarray(sk_moments(xj[:, i:i + chunk], k), dtype=float) for i in range(0, w, chunk))
        self._reblocker.update(sums / w)  # (T, K, 3): per-step walker means
        return self

    def result(self, criterion: str = "wolff") -> StructureFactorResult:
        """S(k) with errors (`structure_factor_result`); raises ValueError before any update."""
        if self._n_electrons is None:
            raise ValueError("no samples: call update() first")
        return structure_factor_result(self._reblocker, self.kvectors, self._n_electrons, criterion)


@dataclasses.dataclass(frozen=True)
class StructureFactor(ObservableBase):
    """The structure-factor observable (module docstring).

    kvectors: ((kx, ky), ...) supercell reciprocal vectors (1/a_M; a tuple: hashable);
    n_electrons: N.
    """

    kvectors: tuple
    n_electrons: int
    name: ClassVar[str] = "structure_factor"
    phase_diagram: ClassVar = PhaseDiagramLayout(
        ("k",), ("structure_factor", "structure_factor_stderr", "structure_factor_uncorrected",
                 "structure_factor_uncorrected_stderr", "rho_k_real", "rho_k_imag", "rho_k_stderr"),
        ("kx", "ky"), ("k_norm",))

    @property
    def k_array(self) -> np.ndarray:
        """The k-vectors as a float array (K, 2)."""
        return np.asarray(self.kvectors, dtype=float).reshape(-1, 2)

    @classmethod
    def from_config(cls, system, cfg) -> "StructureFactor | None":
        """k = `default_kvectors(supercell, cfg.structure_factor_shells)`; None if there is none."""
        k = default_kvectors(system.supercell, cfg.structure_factor_shells)
        if not len(k):
            return None
        return cls(tuple(map(tuple, k.tolist())), int(system.n_electrons))

    @classmethod
    def from_evaluation(cls, ev: xr.Dataset) -> "StructureFactor | None":
        if not all(n in ev for n in RHO_K_SERIES) or ev.sizes.get("k", 0) == 0:
            return None
        k = np.stack([ev["kx"].values, ev["ky"].values], axis=-1)
        return cls(tuple(map(tuple, k.tolist())), int(ev.attrs["n_electrons"]))

    def estimator(self, log_psi):  # noqa: ARG002 (a function of positions only)
        """(params, x (W, N, 2), cond) -> {rho_k (K, 3)}: walker means of [|ρ_k|²/N, Re ρ_k, Im ρ_k]
        (k in chunks of at most MAX_CHUNK_ELEMENTS / (W N) vectors)."""
        import jax
        import jax.numpy as jnp

        kvec = self.k_array
        n_k, n_el = len(kvec), self.n_electrons

        def estimate(params, x, cond):  # noqa: ARG001
            dt = x.dtype
            w = x.shape[0]
            kc = max(1, min(n_k, MAX_CHUNK_ELEMENTS // max(1, w * n_el)))
            n_chunks = -(-n_k // kc)
            kpad = np.zeros((n_chunks * kc, 2))
            kpad[:n_k] = kvec
            kchunks = jnp.asarray(kpad.reshape(n_chunks, kc, 2), dt)
            sums = jax.lax.map(lambda kk: sk_moments(x[None], kk)[0], kchunks)  # (chunks, kc, 3)
            return {"rho_k": sums.reshape(-1, 3)[:n_k] / w}

        return estimate

    def series(self) -> dict[str, SeriesSpec]:
        n_k = (len(self.kvectors),)
        return {
            "rho_k_abs2": SeriesSpec(n_k, ("k",), "1", "walker mean of |rho_k|^2 / N, per step"),
            "rho_k_real": SeriesSpec(n_k, ("k",), "1",
                                     "walker mean of Re rho_k, rho_k = sum_i exp(-i k.r_i), per step"),
            "rho_k_imag": SeriesSpec(n_k, ("k",), "1", "walker mean of Im rho_k, per step"),
        }

    def split(self, stats: dict) -> dict[str, np.ndarray]:
        return {name: np.asarray(stats["rho_k"][..., i], dtype=np.float64) for i, name in enumerate(RHO_K_SERIES)}

    def coords(self) -> dict:
        return k_coords(self.k_array)

    def result(self, ev: xr.Dataset, criterion: str = "wolff") -> StructureFactorResult:
        """S(k) of the rho_k series in evaluation.nc `ev`; raises ValueError if their lengths differ."""
        parts = [step_series(ev, n, ("k",)) for n in RHO_K_SERIES]
        if len({p.shape for p in parts}) != 1:
            raise ValueError("rho_k series of different lengths")
        rb = Reblocker(joint=True).update(np.stack(parts, axis=-1))  # (T, K, 3) per-step walker means
        return structure_factor_result(rb, self.k_array, self.n_electrons, criterion)

    def reduce(self, ev: xr.Dataset, criterion: str = "wolff") -> xr.Dataset:
        """observables.nc part: `StructureFactorResult.to_dataset()`."""
        return self.result(ev, criterion).to_dataset()
