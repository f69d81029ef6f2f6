"""Periodic two-body Jastrow factor J, ψ ∝ e^J.

    J = Σ_{i<j} [ u_σσ'(f(r_ij), c) + cusp_σσ'(d_ij) ]

f(r) = [cos(G·r) for G in the first `shells` supercell shells, d(r)²/A] with d the smooth
periodic distance (features.periodic_distance) and A the cell area: smooth and even in r, so
every term is symmetric in i ↔ j, periodic in each electron, and u has zero slope at r = 0
(the cusp is the cusp term's alone, whatever u's parameters). u_σσ' is a small MLP with
separate parameters for parallel and antiparallel pairs; its last layer is zero-initialised.
With `conditioned`, u also reads the normalised condition c (the depth V, mapped to [−1, 1] as
for FiLM, qernel.model.film) beside the pair features, so the pair correlations of the liquid
and of the Wigner crystal can differ within one shared model (a single u serves every depth
otherwise); without it u does not see c.

cusp(d) = a α d / (α + d) has slope a at d = 0: the 2D Coulomb cusp of H = −½∇² + λ/r is
a = λ for antiparallel and a = λ/3 for parallel spins; α > 0 is learnable (per spin pairing).
λ is the system's `coupling`, or, when "coupling" is among `condition_names`, the condition
vector's (qernel.conditions): the cusp then follows the condition (and the cusp terms exist even
where the system's λ is 0).
Pairs are gathered with static index arrays (no loop over electrons, no i = j terms).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from qernel.conditions import COUPLING, DEPTH_ONLY, parameter
from qernel.lattice import Supercell
from qernel.model.features import half_space, pair_features, periodic_distance_squared, shells


def pair_indices(n_up: int, n_down: int):
    """Static (i, j) index arrays of parallel (i<j, same spin) and antiparallel (up i, down j) pairs."""
    up_i, up_j = np.triu_indices(n_up, 1)
    dn_i, dn_j = np.triu_indices(n_down, 1)
    parallel = (np.concatenate([up_i, dn_i + n_up]), np.concatenate([up_j, dn_j + n_up]))
    ai, aj = np.meshgrid(np.arange(n_up), np.arange(n_down) + n_up, indexing="ij")
    return parallel, (ai.ravel(), aj.ravel())


class _PairMLP(nn.Module):
    hidden: int

    @nn.compact
    def __call__(self, f):
        h = jnp.tanh(nn.Dense(self.hidden, name="hidden_0")(f))
        h = jnp.tanh(nn.Dense(self.hidden, name="hidden_1")(h))
        return nn.Dense(1, kernel_init=nn.initializers.zeros, name="out")(h)[..., 0]


class Jastrow(nn.Module):
    """(x (N, 2) in a_M, cond (n_cond,) or None, c_norm (n_cond,) or None) → J (real scalar).

    coupling: the system's λ (used when "coupling" is not among `condition_names`); cond: the
    condition vector named by `condition_names` (needed only when it carries the coupling);
    c_norm: the normalised condition that u reads when `conditioned`.
    Raises ValueError (when called) if the coupling is conditioned and cond is missing or not
    of length len(condition_names), or if `conditioned` and c_norm is missing.
    """

    supercell: Supercell
    n_up: int
    n_down: int
    coupling: float
    hidden: int = 16
    shells: int = 2
    cusp: bool = True
    condition_names: tuple[str, ...] = DEPTH_ONLY
    conditioned: bool = False

    @nn.compact
    def __call__(self, x, cond=None, c_norm=None):
        gvectors = half_space(shells(self.supercell.reciprocal, self.shells))
        parallel, anti = pair_indices(self.n_up, self.n_down)
        total = jnp.zeros((), x.dtype)
        if COUPLING in self.condition_names:
            if cond is None:
                raise ValueError("the Jastrow of a model conditioned on the coupling needs the condition vector")
            lam = parameter(cond, self.condition_names, COUPLING).astype(x.dtype)
            conditioned = True
        else:
            lam, conditioned = self.coupling, False
        if self.conditioned and c_norm is None:
            raise ValueError("a depth-conditioned Jastrow (jastrow_conditioned) needs the normalised condition")
        groups = (("parallel", parallel, lam / 3.0), ("antiparallel", anti, lam))
        for name, (ii, jj), slope in groups:
            if len(ii) == 0:
                continue
            r = x[ii] - x[jj]  # (P, 2)
            d2 = periodic_distance_squared(r, self.supercell)
            f = jnp.concatenate([pair_features(r, gvectors), d2[:, None] / self.supercell.area], axis=-1)
            if self.conditioned:
                f = jnp.concatenate([f, jnp.broadcast_to(c_norm.astype(x.dtype), (f.shape[0], c_norm.shape[-1]))], axis=-1)
            total = total + jnp.sum(_PairMLP(self.hidden, name=f"u_{name}")(f))
            if self.cusp and (conditioned or slope != 0.0):
                raw = self.param(f"cusp_range_{name}", nn.initializers.constant(np.log(np.expm1(0.5))), ())
                alpha = jax.nn.softplus(raw)
                d = jnp.sqrt(d2)
                total = total + jnp.sum(slope * alpha * d / (alpha + d))
        return total
