"""Grouped-query attention against plain multi-head attention."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qernel.model.attention import GroupedQueryAttention

from model_helpers import fast_jit


def _n(tree):
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


def _hand_mha(p, h, n_heads):
    """Multi-head attention written out head by head (independent reference)."""
    out = p["out"]["bias"]
    outs = []
    for a in range(n_heads):
        q = h @ p["query"]["kernel"][:, a, :] + p["query"]["bias"][a]
        k = h @ p["key"]["kernel"][:, a, :] + p["key"]["bias"][a]
        v = h @ p["value"]["kernel"][:, a, :] + p["value"]["bias"][a]
        w = jax.nn.softmax(q @ k.T / np.sqrt(q.shape[-1]), axis=-1)
        outs.append((w @ v) @ p["out"]["kernel"][a])
    return sum(outs) + out


def test_gqa_with_all_kv_heads_is_multi_head_attention(x64):
    d, heads = 16, 4
    h = jax.random.normal(jax.random.PRNGKey(0), (7, d))
    gqa = GroupedQueryAttention(heads, heads, d)
    params = fast_jit(gqa.init)(jax.random.PRNGKey(1), h)
    mha = nn.MultiHeadDotProductAttention(num_heads=heads, qkv_features=d, out_features=d)
    ref_params = fast_jit(mha.init)(jax.random.PRNGKey(2), h, h)
    assert jax.tree.structure(ref_params) == jax.tree.structure(params)
    out = fast_jit(gqa.apply)(params, h)
    np.testing.assert_allclose(out, fast_jit(mha.apply)(params, h, h), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out, _hand_mha(params["params"], h, heads), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_gqa_equals_mha_with_shared_kv_heads_and_fewer_params(kv_heads, x64):
    d, heads = 16, 4
    h = jax.random.normal(jax.random.PRNGKey(3), (5, d))
    gqa = GroupedQueryAttention(heads, kv_heads, d)
    params = fast_jit(gqa.init)(jax.random.PRNGKey(4), h)
    p = params["params"]
    group = heads // kv_heads
    expanded = dict(p)
    for name in ("key", "value"):
        expanded[name] = {"kernel": jnp.repeat(p[name]["kernel"], group, axis=1),
                          "bias": jnp.repeat(p[name]["bias"], group, axis=0)}
    np.testing.assert_allclose(fast_jit(gqa.apply)(params, h), _hand_mha(expanded, h, heads), rtol=1e-12, atol=1e-12)
    full = GroupedQueryAttention(heads, heads, d).init(jax.random.PRNGKey(4), h)["params"]
    kv = _n([p["key"], p["value"]])
    assert kv * heads == _n([full["key"], full["value"]]) * kv_heads
    assert _n([p["query"], p["out"]]) == _n([full["query"], full["out"]])


def test_attention_is_permutation_equivariant():
    h = jax.random.normal(jax.random.PRNGKey(5), (6, 8))
    gqa = GroupedQueryAttention(4, 2, 8)
    params = fast_jit(gqa.init)(jax.random.PRNGKey(6), h)
    perm = np.array([3, 1, 5, 0, 2, 4])
    apply = fast_jit(gqa.apply)
    np.testing.assert_allclose(apply(params, h[perm]), apply(params, h)[perm], rtol=1e-5, atol=1e-6)
