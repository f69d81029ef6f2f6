"""Mixture of experts: top-k routing, smooth gates, load-balancing loss, one expert = dense MLP."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qernel.model.moe import MixtureOfExperts, elementary_symmetric, load_balancing_loss, routing_gates, top_k_mask

from model_helpers import fast_jit


@pytest.mark.parametrize("margin", [0.0, 0.2])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_every_token_goes_to_exactly_top_k_experts(k, margin):
    moe = MixtureOfExperts(n_experts=5, top_k=k, d_ff=8, d_out=6, router_margin=margin)
    h = jax.random.normal(jax.random.PRNGKey(0), (11, 6))
    params = fast_jit(moe.init)(jax.random.PRNGKey(1), h)
    out, aux = fast_jit(moe.apply)(params, h)
    assert out.shape == (11, 6)
    logits = np.asarray(h @ params["params"]["router"]["kernel"] + params["params"]["router"]["bias"])
    expected = np.zeros_like(logits)
    np.put_along_axis(expected, np.argsort(-logits, axis=1)[:, :k], 1.0, axis=1)
    mask = np.asarray(top_k_mask(jnp.asarray(logits), k))
    np.testing.assert_array_equal(mask, expected)
    np.testing.assert_array_equal(aux["counts"], expected.sum(0))
    assert float(aux["counts"].sum()) == 11 * k
    gates = np.asarray(aux["gates"])
    assert np.all(gates[expected == 0] == 0)  # nothing outside the top k
    assert np.all((gates > 0).sum(1) <= k)
    if margin == 0:
        probs = np.asarray(jax.nn.softmax(logits, axis=1))
        np.testing.assert_allclose(gates, probs * expected, rtol=1e-6)


def test_top_k_mask_breaks_ties_deterministically():
    mask = top_k_mask(jnp.zeros((3, 4)), 2)
    np.testing.assert_array_equal(mask, [[1, 1, 0, 0]] * 3)


def test_elementary_symmetric_polynomials(x64):
    y = jnp.asarray([[0.5, 2.0, 3.0, -1.0]])
    vals = np.array([0.5, 2.0, 3.0, -1.0])
    from itertools import combinations
    for m in range(5):
        ref = sum(np.prod(c) for c in combinations(vals, m)) if m else 1.0
        np.testing.assert_allclose(elementary_symmetric(y, m), [ref], rtol=1e-12)


def test_smooth_gates_are_one_with_clear_margins_and_vanish_smoothly_at_ties(x64):
    margin = 0.2
    # clear winners: gates are exactly the top-k mask
    z = jnp.asarray([[3.0, 0.0, 2.0, -1.0]])
    np.testing.assert_array_equal(routing_gates(z, 2, margin), [[1, 0, 1, 0]])
    # sweep expert 1's logit through the k-th place (expert 2 at 2.0): continuous, C¹ gate
    t = jnp.linspace(1.5, 2.5, 2001)
    zs = jnp.stack([jnp.full_like(t, 3.0), t, jnp.full_like(t, 2.0), jnp.full_like(t, -1.0)], axis=1)
    gate = fast_jit(lambda z: routing_gates(z, 2, margin))
    g = gate(zs)
    assert float(jnp.max(jnp.abs(jnp.diff(g, axis=0)))) < 1e-2  # no jumps
    np.testing.assert_allclose(g[1000], [1, 0, 0, 0], atol=1e-12)  # exact tie: both tied gates are 0
    dgate = fast_jit(jax.vmap(jax.jacfwd(lambda z: routing_gates(z[None], 2, margin)[0])))
    dg = dgate(zs)  # a jump in the derivative would be O(1/margin) = O(5)
    assert float(jnp.max(jnp.abs(jnp.diff(dg, axis=0)))) < 0.5
    # at the tie itself the one-sided derivatives agree (both vanish)
    left = dgate(zs[1000:1001] + jnp.asarray([0, -1e-9, 0, 0]))
    right = dgate(zs[1000:1001] + jnp.asarray([0, 1e-9, 0, 0]))
    np.testing.assert_allclose(left, right, atol=1e-6)
    np.testing.assert_allclose(right, 0.0, atol=1e-6)
    # swapping ranks k+1 and k+2 (both unselected) changes nothing
    z1 = jnp.asarray([[3.0, 2.0, 0.5, 0.4]])
    z2 = jnp.asarray([[3.0, 2.0, 0.4, 0.5]])
    np.testing.assert_array_equal(routing_gates(z1, 2, margin), routing_gates(z2, 2, margin))


def test_load_balancing_loss_is_one_for_uniform_routing():
    n, e, k = 12, 4, 2
    uniform_p = jnp.full((n, e), 1.0 / e)
    balanced_mask = jnp.asarray(np.tile(np.eye(e)[[0, 1]].sum(0), (n, 1)))  # any mask with uniform probs
    np.testing.assert_allclose(load_balancing_loss(uniform_p, balanced_mask, k), 1.0, rtol=1e-6)
    # uniform assignment (each expert n·k/e slots) with arbitrary probabilities
    mask = jnp.asarray(np.roll(np.tile([1.0, 1.0, 0.0, 0.0], (n, 1)), 0, 1))
    mask = jnp.asarray([np.roll([1.0, 1.0, 0.0, 0.0], i) for i in range(n)])
    probs = jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(0), (n, e)))
    np.testing.assert_allclose(load_balancing_loss(probs, mask, k), 1.0, rtol=1e-6)
    # all tokens confidently routed to the same experts: loss above 1 (maximum e/k for k experts)
    logits = jnp.tile(jnp.asarray([5.0, 5.0, -5.0, -5.0]), (n, 1))
    assert float(load_balancing_loss(jax.nn.softmax(logits), top_k_mask(logits, k), k)) > 1.9
    # the MoE layer with a zero router routes uniformly in probability: loss exactly 1
    moe = MixtureOfExperts(n_experts=e, top_k=k, d_ff=8, d_out=6)
    h = jax.random.normal(jax.random.PRNGKey(1), (n, 6))
    params = fast_jit(moe.init)(jax.random.PRNGKey(2), h)
    params["params"]["router"]["kernel"] = jnp.zeros_like(params["params"]["router"]["kernel"])
    np.testing.assert_allclose(fast_jit(moe.apply)(params, h)[1]["loss"], 1.0, rtol=1e-6)


def test_one_expert_is_a_dense_mlp(x64):
    moe = MixtureOfExperts(n_experts=1, top_k=1, d_ff=10, d_out=5)
    h = jax.random.normal(jax.random.PRNGKey(3), (2, 7, 5))  # works with leading batch dims
    params = fast_jit(moe.init)(jax.random.PRNGKey(4), h)
    p = params["params"]
    out, aux = fast_jit(moe.apply)(params, h)
    dense = jax.nn.silu(h @ p["w1"][0] + p["b1"][0]) @ p["w2"][0] + p["b2"][0]
    np.testing.assert_allclose(out, dense, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(aux["loss"], 1.0)
    np.testing.assert_array_equal(aux["counts"], [[7.0], [7.0]])


def test_condition_routing_sends_every_electron_to_the_same_experts():
    """Routing on the condition: the gates of all tokens are equal and do not change when the tokens
    (electron features) change; the top-k of the router MLP's logits are the experts used."""
    moe = MixtureOfExperts(n_experts=5, top_k=2, d_ff=8, d_out=6)
    route = jnp.asarray([0.3])
    h1 = jax.random.normal(jax.random.PRNGKey(0), (7, 6))
    h2 = jax.random.normal(jax.random.PRNGKey(1), (7, 6))
    params = fast_jit(moe.init)(jax.random.PRNGKey(2), h1, route)
    # at initialisation every condition goes to experts 0 and 1 (the model starts depth-independent)
    for c in (-1.0, 0.3, 1.0):
        gates0 = np.asarray(fast_jit(moe.apply)(params, h1, jnp.asarray([c]))[1]["gates"])
        assert set(np.flatnonzero(gates0[0] > 0)) == {0, 1}
    router = params["params"]["router"]
    router["kernel"] = 3.0 * jax.random.normal(jax.random.PRNGKey(5), router["kernel"].shape)
    _, aux1 = fast_jit(moe.apply)(params, h1, route)
    _, aux2 = fast_jit(moe.apply)(params, h2, route)
    g1, g2 = np.asarray(aux1["gates"]), np.asarray(aux2["gates"])
    np.testing.assert_array_equal(g1, np.broadcast_to(g1[0], g1.shape))
    np.testing.assert_array_equal(g1, g2)
    assert np.count_nonzero(g1[0]) <= 2
    np.testing.assert_array_equal(aux1["counts"], aux2["counts"])
    counts = np.asarray(aux1["counts"])
    assert counts.sum() == 14 and set(np.unique(counts)) <= {0.0, 7.0}  # the 7 tokens go to the same 2 experts
    assert set(np.flatnonzero(g1[0] > 0)) <= set(np.flatnonzero(counts))
    # a different condition may route elsewhere, so the gates depend on it
    _, aux3 = fast_jit(moe.apply)(params, h1, jnp.asarray([-0.9]))
    assert not np.allclose(np.asarray(aux3["probs"]), np.asarray(aux1["probs"]))


def test_batch_loss_equals_the_loss_of_all_tokens_together():
    from qernel.model.moe import batch_load_balancing_loss
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(3, 5, 4)))  # 3 configurations × 5 tokens × 4 experts
    probs, mask = jax.nn.softmax(logits), top_k_mask(logits, 2)
    expected = load_balancing_loss(probs.reshape(15, 4), mask.reshape(15, 4), 2)
    got = batch_load_balancing_loss(mask.sum(axis=1), probs.sum(axis=1))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # not the mean of the per-configuration losses in general
    per = jnp.mean(jax.vmap(lambda p, m: load_balancing_loss(p, m, 2))(probs, mask))
    assert abs(float(per) - float(expected)) > 1e-4
