"""Fractional coordinates, bin centres and histograms of the density grids (positions in a_M)."""

from __future__ import annotations

import numpy as np

from qernel.lattice import MOIRE_LATTICE, MOIRE_RECIPROCAL, Supercell

#: Area of the moiré unit cell, √3/2 a_M².
MOIRE_CELL_AREA = float(abs(np.linalg.det(MOIRE_LATTICE)))


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


def histogram(frac, bins: tuple[int, int]):
    """Counts (n_x, n_y) of fractional coordinates frac (P, 2) in [0, 1) (jit-able)."""
    import jax.numpy as jnp

    nx, ny = bins
    ix = jnp.clip(jnp.floor(frac[:, 0] * nx).astype(jnp.int32), 0, nx - 1)
    iy = jnp.clip(jnp.floor(frac[:, 1] * ny).astype(jnp.int32), 0, ny - 1)
    return jnp.bincount(ix * ny + iy, length=nx * ny).reshape(nx, ny)


def histogram_steps(frac: np.ndarray, bins: tuple[int, int]) -> np.ndarray:
    """Counts per step (NumPy): frac (T, P, 2) in [0, 1) → (T, n_x, n_y) (float)."""
    nx, ny = bins
    ix = np.minimum((frac[..., 0] * nx).astype(np.int64), nx - 1)
    iy = np.minimum((frac[..., 1] * ny).astype(np.int64), ny - 1)
    t = frac.shape[0]
    flat = (np.arange(t)[:, None] * (nx * ny) + ix * ny + iy).ravel()
    return np.bincount(flat, minlength=t * nx * ny).reshape(t, nx, ny).astype(float)


def bins_from_coords(ev, xdim: str, ydim: str) -> tuple[int, int] | None:
    """(n_x, n_y) of a density grid in an evaluation dataset, or None if it has no such dims."""
    if xdim not in ev.sizes or ydim not in ev.sizes:
        return None
    return int(ev.sizes[xdim]), int(ev.sizes[ydim])
