"""Grouped-query self-attention over electrons.

n_heads query heads share n_kv_heads key/value heads (query head h reads key/value head
h // (n_heads // n_kv_heads)). With n_kv_heads == n_heads this is ordinary multi-head
attention, with the parameter layout of flax.linen.MultiHeadDotProductAttention
("query", "key", "value", "out" DenseGeneral kernels and biases). No positional encoding:
the layer is equivariant under permutations of the electrons.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class GroupedQueryAttention(nn.Module):
    """h (..., N, d_in) → (..., N, d_model).

    Raises ValueError (when called) unless n_heads divides d_model and n_kv_heads divides n_heads.
    """

    n_heads: int
    n_kv_heads: int
    d_model: int
    use_bias: bool = True

    @nn.compact
    def __call__(self, h):
        if self.d_model % self.n_heads or self.n_heads % self.n_kv_heads:
            raise ValueError("need d_model % n_heads == 0 and n_heads % n_kv_heads == 0")
        head_dim = self.d_model // self.n_heads
        group = self.n_heads // self.n_kv_heads
        dense = lambda heads, name: nn.DenseGeneral((heads, head_dim), use_bias=self.use_bias, name=name)
        q = dense(self.n_heads, "query")(h)  # (..., N, H, Dh)
        k = dense(self.n_kv_heads, "key")(h)  # (..., N, Hkv, Dh)
        v = dense(self.n_kv_heads, "value")(h)
        q = q.reshape(q.shape[:-2] + (self.n_kv_heads, group, head_dim)) / jnp.sqrt(head_dim).astype(q.dtype)
        logits = jnp.einsum("...ikgd,...jkd->...kgij", q, k)
        weights = jax.nn.softmax(logits, axis=-1)
        o = jnp.einsum("...kgij,...jkd->...ikgd", weights, v)
        o = o.reshape(o.shape[:-3] + (self.n_heads, head_dim))
        return nn.DenseGeneral(self.d_model, axis=(-2, -1), use_bias=self.use_bias, name="out")(o)
