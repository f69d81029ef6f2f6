"""2D Ewald sum of 1/r over a periodic supercell with a neutralising background.

Lengths in a_M; the results multiply λ to give energies in E_M (DESIGN.md §1):

    v_E(r) = Σ_L erfc(κ|r+L|)/|r+L| + (2π/A) Σ_{G≠0} cos(G·r) erfc(|G|/2κ)/|G| − 2√π/(κA)
    ξ_M   = Σ_{L≠0} erfc(κ|L|)/|L| + (2π/A) Σ_{G≠0} erfc(|G|/2κ)/|G| − 2κ/√π − 2√π/(κA)

The lattice tables are built once per `Ewald` object (numpy, float64) and reused by every
call; the jax functions are jit-able and vectorised over leading (walker) axes.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import erfc as np_erfc

from qernel.lattice import Supercell

#: erfc(x) < 2e-17 for x > _ERFC_RANGE: truncation error below float64 round-off.
_ERFC_RANGE = 6.0


class Ewald:
    """Precomputed Ewald tables for one supercell.

    kappa: the splitting parameter κ in 1/a_M (default √(π/A), which balances the two sums).
    Raises ValueError for κ <= 0.
    """

    def __init__(self, supercell: Supercell, kappa: float | None = None):
        self.supercell = supercell
        self.area = supercell.area
        self.kappa = float(math.sqrt(math.pi / self.area) if kappa is None else kappa)
        if not self.kappa > 0:
            raise ValueError(f"Ewald kappa must be > 0, got {kappa!r}")
        k, a = self.kappa, self.area
        lat = supercell.lattice
        # displacements are wrapped into the centred cell, so |r| <= half the longest diagonal
        self._max_disp = 0.5 * max(np.linalg.norm(lat[0] + lat[1]), np.linalg.norm(lat[0] - lat[1]))
        self.real_vectors = supercell.lattice_vectors(_ERFC_RANGE / k + self._max_disp)
        self.recip_vectors = supercell.reciprocal_vectors(2.0 * k * _ERFC_RANGE)
        gnorm = np.linalg.norm(self.recip_vectors, axis=-1)
        #: (2π/A) erfc(|G|/2κ)/|G| for each G ≠ 0.
        self.recip_weights = 2.0 * np.pi / a * np_erfc(gnorm / (2.0 * k)) / gnorm
        #: the G = 0 (background) constant −2√π/(κA).
        self.background = -2.0 * math.sqrt(math.pi) / (k * a)
        lnorm = np.linalg.norm(supercell.lattice_vectors(_ERFC_RANGE / k, include_origin=False), axis=-1)
        self.madelung = float(
            np.sum(np_erfc(k * lnorm) / lnorm)
            + np.sum(self.recip_weights)
            - 2.0 * k / math.sqrt(math.pi)
            + self.background
        )
        self._inv_lattice = np.linalg.inv(lat)

    # -- pair potential -------------------------------------------------------------------
    def _centred(self, r):
        f = r @ jnp.asarray(self._inv_lattice, dtype=r.dtype)
        f = f - jnp.round(f)
        return f @ jnp.asarray(self.supercell.lattice, dtype=r.dtype)

    def _real_sum(self, r):
        """Σ_L erfc(κ|r+L|)/|r+L| for centred displacements r (..., 2)."""
        d = r[..., None, :] + jnp.asarray(self.real_vectors, dtype=r.dtype)
        dist = jnp.sqrt(jnp.sum(d * d, axis=-1))
        return jnp.sum(jax.scipy.special.erfc(self.kappa * dist) / dist, axis=-1)

    def pair_potential(self, r):
        """v_E(r) for displacements r (..., 2) in a_M (not a multiple of a lattice vector)."""
        r = self._centred(jnp.asarray(r))
        g = jnp.asarray(self.recip_vectors, dtype=r.dtype)
        w = jnp.asarray(self.recip_weights, dtype=r.dtype)
        recip = jnp.cos(r @ g.T) @ w
        return self._real_sum(r) + recip + self.background

    # -- total electrostatic energy ---------------------------------------------------------
    def energy(self, positions):
        """Σ_{i<j} v_E(r_i − r_j) + (N/2) ξ_M for positions (..., N, 2); shape (...).

        Multiply by λ for the interaction energy in E_M. The reciprocal-space part uses the
        structure factor, Σ_{i<j} cos(G·r_ij) = (|ρ_G|² − N)/2, so it costs O(N·n_G).
        """
        x = jnp.asarray(positions)
        n = x.shape[-2]
        iu, ju = np.triu_indices(n, k=1)
        disp = self._centred(x[..., iu, :] - x[..., ju, :])  # (..., P, 2)
        real = jnp.sum(self._real_sum(disp), axis=-1)
        g = jnp.asarray(self.recip_vectors, dtype=x.dtype)
        w = jnp.asarray(self.recip_weights, dtype=x.dtype)
        phase = x @ g.T  # (..., N, n_G)
        rho2 = jnp.sum(jnp.cos(phase), axis=-2) ** 2 + jnp.sum(jnp.sin(phase), axis=-2) ** 2
        recip = 0.5 * jnp.sum(w * (rho2 - n), axis=-1)
        return real + recip + self.background * n * (n - 1) / 2 + 0.5 * n * self.madelung
