"""Mixture-of-experts MLP with top-k routing and a load-balancing loss.

Each token (electron) h_n is routed by a linear router (logits z_ne, probabilities
p_ne = softmax(z_n)) to its top_k experts; the output is Σ_e w_ne MLP_e(h_n) with

    w_ne = p_ne · s_ne,   s_ne ∈ [0, 1] nonzero only for the top_k experts of token n.

Hard top-k routing (s = the 0/1 top-k mask, router_margin = 0) makes the wavefunction
discontinuous wherever a token's k-th and (k+1)-th experts swap: the local energy then
misses the kinetic energy of those surfaces and VMC is no longer variational. By default
(router_margin > 0) s switches on and off smoothly (C², so the Laplacian is bounded):

    y_nef = S((z_ne − z_nf) / margin),  s_ne = S(e_{E−k}(y_ne·)),

with S the quintic smoothstep clipped to [0, 1] and e_m the elementary symmetric polynomial.
e_{E−k}(y_ne·) > 0 only if at least E − k experts lie strictly below e, i.e. e is in the top
k; it is ≥ 1 (so s = 1) once E − k of them lie at least `margin` below. Ties and near-ties
thus get weights that vanish smoothly, and s depends on the unordered set of logits only.

What the router reads (ModelConfig.router_input):
- "condition" (default): the logits are a small MLP of the (normalised) condition c, the same for
  every electron of a configuration. The experts then specialise by depth (one shared model, k of
  E experts active at each V), and the routing is constant in the positions, so ψ is as smooth in
  x as with one expert. Measured (λ = 0, 4 holes in 2×2, V = 5 and 10 E_M, tiny model, SR at
  η = 0.005): with electron routing the first SR step raised Var E_L from ~60 to ~2e4 E_M² and
  training never recovered; with one expert, or with condition routing, it stays ~1e2 and falls.
- "electron": token routing as in Switch/GShard, z_n = W h_n. The smooth gates below are C² in
  x, but over a logit margin of ~0.2 their Laplacian is large (∝ |∇z|²/margin²): the local energy
  is unbiased but its variance is huge near switching surfaces.

All experts are evaluated densely and masked (exact, jit/folx friendly at these sizes).

Load-balancing loss (Switch Transformer / GShard): L = E Σ_e f_e P_e with f_e the fraction
of the routing slots assigned to e (hard top-k mask, no gradient) and P_e the mean router
probability, both over all tokens of the batch (all walkers, all depths: with condition routing
the balance is over depths); L = 1 for uniform routing (uniform P or uniform f), larger when
unbalanced. `batch_load_balancing_loss` takes the per-configuration sums the module returns.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def smoothstep(t):
    """Quintic smoothstep 6t⁵ − 15t⁴ + 10t³ of t clipped to [0, 1]: C² with S(0)=0, S(1)=1."""
    t = jnp.clip(t, 0.0, 1.0)
    return t * t * t * (t * (6.0 * t - 15.0) + 10.0)


def elementary_symmetric(y, m: int):
    """e_m of the last axis of y (..., E): Σ over m-subsets of the product; (...)."""
    coeffs = [jnp.ones(y.shape[:-1], y.dtype)] + [jnp.zeros(y.shape[:-1], y.dtype)] * m
    for f in range(y.shape[-1]):  # static, over experts (not electrons)
        for j in range(m, 0, -1):
            coeffs[j] = coeffs[j] + y[..., f] * coeffs[j - 1]
    return coeffs[m]


def top_k_mask(logits, k: int):
    """0/1 mask (..., E) of the k largest logits per token (ties to the lower index); no gradient."""
    z = jax.lax.stop_gradient(logits)
    e = z.shape[-1]
    zi, zj = z[..., :, None], z[..., None, :]
    lower_index = jnp.arange(e)[None, :] < jnp.arange(e)[:, None]  # [e, f]: f < e
    rank = jnp.sum((zj > zi) | ((zj == zi) & lower_index), axis=-1)
    return (rank < k).astype(logits.dtype)


def routing_gates(logits, k: int, margin: float):
    """Top-k selection s (..., E) in [0, 1]: smooth (margin > 0) or the hard mask (margin = 0)."""
    e = logits.shape[-1]
    if k >= e:
        return jnp.ones_like(logits)
    if margin == 0:
        return top_k_mask(logits, k)
    y = smoothstep((logits[..., :, None] - logits[..., None, :]) / margin)  # (..., E, E), y_ee = 0
    return smoothstep(elementary_symmetric(y, e - k))


def load_balancing_loss(probs, mask, k: int):
    """E Σ_e f_e P_e over the tokens of probs, mask (..., N, E) → (...)."""
    n_experts = probs.shape[-1]
    f = jnp.mean(jax.lax.stop_gradient(mask), axis=-2) / k
    p = jnp.mean(probs, axis=-2)
    return n_experts * jnp.sum(f * p, axis=-1)


def batch_load_balancing_loss(counts, probs):
    """L = E Σ_e f_e P_e over a batch: counts (W, ..., E) tokens routed to each expert and probs
    (W, ..., E) the router probabilities summed over the tokens of each configuration → (...).

    f_e = Σ_w counts_we / Σ_we counts (the fraction of the N·W·k slots; no gradient) and
    P_e = Σ_w probs_we / Σ_we probs (= / N·W: the probabilities of a token sum to 1). Equals
    `load_balancing_loss` of all tokens of the batch taken together.
    """
    n_experts = counts.shape[-1]
    c = jax.lax.stop_gradient(counts)
    f = jnp.sum(c, axis=0) / jnp.sum(c, axis=(0, -1))[..., None]
    p = jnp.sum(probs, axis=0) / jax.lax.stop_gradient(jnp.sum(probs, axis=(0, -1)))[..., None]
    return n_experts * jnp.sum(f * p, axis=-1)


class MixtureOfExperts(nn.Module):
    """h (..., N, d) [, route (..., n_r)] → (out (..., N, d_out), aux).

    route: the router's input when routing on the condition (then the logits are
    MLP(route) (..., E), shared by the N tokens); None: each token is routed on its own h_n.
    aux = {"loss": (...) load-balancing loss of this configuration's tokens, "counts": (..., E)
    tokens per expert (hard top-k, float), "probs": (..., E) router probabilities summed over
    the tokens, "gates": (..., N, E) the routing weights w}.
    """

    n_experts: int
    top_k: int
    d_ff: int
    d_out: int
    router_margin: float = 0.2
    activation: str = "silu"
    router_hidden: int = 16

    @nn.compact
    def __call__(self, h, route=None):
        e, d = self.n_experts, h.shape[-1]
        if route is None:
            logits = nn.Dense(e, name="router")(h)
        else:
            # the output layer starts at zero weights and distinct biases −0, −1, −2, ...: at
            # initialisation every condition goes to experts 0..k−1 (fully, the biases being
            # spaced well beyond the margin), so the model starts as ONE wavefunction at every
            # depth (as FiLM's identity start does) and learns where the experts specialise.
            r = nn.silu(nn.Dense(self.router_hidden, name="router_hidden")(route))
            bias_init = lambda key, shape, dtype=jnp.float32: -jnp.arange(shape[-1], dtype=dtype) * max(1.0, 5 * self.router_margin)
            logits = nn.Dense(e, kernel_init=nn.initializers.zeros, bias_init=bias_init, name="router")(r)[..., None, :]
            logits = jnp.broadcast_to(logits, h.shape[:-1] + (e,))
        probs = jax.nn.softmax(logits, axis=-1)
        mask = top_k_mask(logits, self.top_k)
        gates = probs * routing_gates(logits, self.top_k, self.router_margin)

        init = nn.initializers.lecun_normal(batch_axis=(0,))
        w1 = self.param("w1", init, (e, d, self.d_ff))
        b1 = self.param("b1", nn.initializers.zeros, (e, self.d_ff))
        w2 = self.param("w2", init, (e, self.d_ff, self.d_out))
        b2 = self.param("b2", nn.initializers.zeros, (e, self.d_out))
        act = getattr(jax.nn, self.activation)
        hidden = act(jnp.einsum("...nd,edf->...nef", h, w1) + b1)
        y = jnp.einsum("...nef,efo->...neo", hidden, w2) + b2
        out = jnp.einsum("...ne,...neo->...no", gates, y)
        aux = {"loss": load_balancing_loss(probs, mask, self.top_k), "counts": jnp.sum(mask, axis=-2),
               "probs": jnp.sum(probs, axis=-2), "gates": gates}
        return out, aux
