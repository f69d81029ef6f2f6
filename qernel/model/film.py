"""FiLM conditioning: the condition vector c → a per-layer scale γ(c) and shift β(c).

The condition (cond[..., 0] = V in E_M, later φ and λ) is first mapped linearly from its
configured range to [-1, 1]; a small MLP then gives, for every transformer layer and each of
its two sublayers (attention, mixture of experts), h ← γ ⊙ h + β with γ, β of width d_model.
The last layer is zero-initialised, so γ = 1 and β = 0 exactly at initialisation.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


def normalise_condition(cond, cond_range: Sequence[tuple[float, float]]):
    """Map cond (..., n_cond) from [lo, hi] per entry to [-1, 1] (a zero-width range maps lo → 0).

    Raises ValueError when n_cond differs from len(cond_range).
    """
    if cond.shape[-1] != len(cond_range):
        raise ValueError(f"cond has {cond.shape[-1]} entries but cond_range has {len(cond_range)}")
    lo = jnp.asarray([float(a) for a, _ in cond_range], dtype=cond.dtype)
    hi = jnp.asarray([float(b) for _, b in cond_range], dtype=cond.dtype)
    mid, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
    return (cond - mid) / jnp.where(half > 0, half, 1.0)


class FiLM(nn.Module):
    """c_norm (..., n_cond) → (γ, β), each (..., n_layers, n_sublayers, d_model)."""

    n_layers: int
    d_model: int
    hidden: int
    n_sublayers: int = 2

    @nn.compact
    def __call__(self, c_norm):
        h = nn.silu(nn.Dense(self.hidden, name="hidden_0")(c_norm))
        h = nn.silu(nn.Dense(self.hidden, name="hidden_1")(h))
        out = nn.Dense(2 * self.n_layers * self.n_sublayers * self.d_model, name="out",
                       kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros)(h)
        out = out.reshape(out.shape[:-1] + (2, self.n_layers, self.n_sublayers, self.d_model))
        return 1.0 + out[..., 0, :, :, :], out[..., 1, :, :, :]
