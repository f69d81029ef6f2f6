"""Periodic input features: smooth functions of positions that respect the supercell.

One-electron features are sin(G·r) and cos(G·r) for a set of supercell reciprocal vectors G
(one of each ±G pair); every G·L is a multiple of 2π for a supercell lattice vector L, so the
features are periodic and smooth everywhere (no minimum image). Pair features use cos(G·r_ij)
(even in r_ij, so symmetric under i ↔ j) and a smooth periodic distance.

Positions in a_M, wave vectors in 1/a_M.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from qernel.lattice import MOIRE_RECIPROCAL, Supercell, lattice_points

_TOL = 1e-8


def shells(basis: np.ndarray, n_shells: int) -> np.ndarray:
    """Nonzero lattice vectors of the first `n_shells` shells (by length) of the lattice with rows `basis`; (M, 2)."""
    if n_shells <= 0:
        return np.zeros((0, 2))
    shortest = min(np.linalg.norm(basis, axis=-1))
    cutoff = shortest * (n_shells + 1)
    while True:
        pts = lattice_points(basis, cutoff, include_origin=False)
        norms = np.round(np.linalg.norm(pts, axis=-1) / shortest, 8)
        levels = np.unique(norms)
        if len(levels) > n_shells:  # the cutoff shell may be incomplete: only take complete ones below it
            return pts[norms <= levels[n_shells - 1]]
        cutoff *= 1.5


def half_space(vectors: np.ndarray) -> np.ndarray:
    """One of each ±G pair (G_y > 0, or G_y = 0 and G_x > 0), duplicates and 0 removed; (M', 2)."""
    vectors = np.asarray(vectors, dtype=float).reshape(-1, 2)
    scale = max(1.0, float(np.abs(vectors).max(initial=0.0)))
    keep = (vectors[:, 1] > _TOL * scale) | ((np.abs(vectors[:, 1]) <= _TOL * scale) & (vectors[:, 0] > _TOL * scale))
    out = []
    for v in vectors[keep]:
        if not any(np.allclose(v, w, atol=_TOL * scale) for w in out):
            out.append(v)
    out = np.array(out).reshape(-1, 2)
    order = np.lexsort((out[:, 0], out[:, 1], np.round(np.linalg.norm(out, axis=-1), 9)))
    return out[order]


def moire_k_points() -> np.ndarray:
    """The six corners K, K' of the moiré Brillouin zone, |K| = 4π/3 (1/a_M); (6, 2)."""
    angles = np.pi / 3.0 * np.arange(6)
    return 4.0 * np.pi / 3.0 * np.stack([np.cos(angles), np.sin(angles)], axis=-1)


def is_supercell_reciprocal(supercell: Supercell, vectors: np.ndarray) -> np.ndarray:
    """Per row k of `vectors` (M, 2): whether k·L ∈ 2πℤ for every supercell lattice vector L; (M,) bool."""
    n = np.asarray(vectors).reshape(-1, 2) @ supercell.lattice.T / (2.0 * np.pi)
    return np.all(np.abs(n - np.round(n)) < 1e-8, axis=-1)


def feature_vectors(supercell: Supercell, supercell_shells: int, moire_shells: int,
                    k_points: bool = True) -> np.ndarray:
    """The G set of the one-electron features; (F, 2), all supercell reciprocal vectors.

    The first `supercell_shells` shells of the supercell reciprocal lattice (long wavelengths),
    the first `moire_shells` shells of the moiré reciprocal lattice (the potential's own
    periodicity) and, with `k_points`, the moiré Brillouin-zone corners K when the supercell
    allows them (the ordering vectors of the √3×√3 / honeycomb Wigner crystals); one of each ±G pair.
    """
    g = [shells(supercell.reciprocal, supercell_shells), shells(MOIRE_RECIPROCAL, moire_shells)]
    if k_points:
        corners = moire_k_points()
        g.append(corners[is_supercell_reciprocal(supercell, corners)])
    g = np.concatenate(g)
    g = half_space(g)
    check_supercell_periodic(supercell, g)
    return g


def check_supercell_periodic(supercell: Supercell, vectors: np.ndarray) -> None:
    """Raise AssertionError if some vector k (rows) has k·L ∉ 2πℤ for a supercell lattice vector L."""
    if not np.all(is_supercell_reciprocal(supercell, vectors)):
        raise AssertionError("vectors are not supercell reciprocal lattice vectors")


def one_electron_features(x, gvectors: np.ndarray):
    """[sin(G·r), cos(G·r)] for positions x (..., 2) and G (F, 2); (..., 2F)."""
    phase = x @ jnp.asarray(gvectors.T, dtype=x.dtype)
    return jnp.concatenate([jnp.sin(phase), jnp.cos(phase)], axis=-1)


def pair_features(r, gvectors: np.ndarray):
    """Even periodic pair features cos(G·r) of pair differences r (..., 2); (..., F)."""
    return jnp.cos(r @ jnp.asarray(gvectors.T, dtype=r.dtype))


def periodic_distance_squared(r, supercell: Supercell):
    """Smooth periodic |r|² of differences r (..., 2) in a_M² (Cassella et al., PRL 130, 036401).

    With ω_i = B_i·r: |r|² = (1/4π²) Σ_ij (L_i·L_j) [sin ω_i sin ω_j + (1−cos ω_i)(1−cos ω_j)],
    which equals |r|² + O(|r|⁴) near 0, is periodic and smooth, and vanishes only on the lattice.
    """
    metric = supercell.lattice @ supercell.lattice.T / (4.0 * np.pi**2)
    omega = r @ jnp.asarray(supercell.reciprocal.T, dtype=r.dtype)
    s, c = jnp.sin(omega), 1.0 - jnp.cos(omega)
    m = jnp.asarray(metric, dtype=r.dtype)
    return jnp.einsum("...i,ij,...j->...", s, m, s) + jnp.einsum("...i,ij,...j->...", c, m, c)


def periodic_distance(r, supercell: Supercell):
    """sqrt of `periodic_distance_squared`; ≈ |r| near 0 (keeps the cusp), nonsmooth only at r ∈ lattice."""
    return jnp.sqrt(periodic_distance_squared(r, supercell))
