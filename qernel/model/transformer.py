"""Pre-LN transformer layers over electrons, conditioned by FiLM.

Each layer (γ, β from `film.FiLM`, index 0 for attention, 1 for the mixture of experts):

    h ← h + Attention(γ₀ ⊙ LN(h) + β₀)
    h ← h + MoE(γ₁ ⊙ LN(h) + β₁)

LN has no affine parameters of its own: FiLM supplies them (a condition-independent part
through its output bias). A final LN closes the stack. Shapes: h (..., N, d_model).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from qernel.model.attention import GroupedQueryAttention
from qernel.model.config import ModelConfig
from qernel.model.moe import MixtureOfExperts


def _layer_norm(name):
    return nn.LayerNorm(epsilon=1e-6, use_bias=False, use_scale=False, name=name)


class TransformerLayer(nn.Module):
    """h (..., N, d), gamma/beta (..., 2, d) [, route (..., n_cond)] → (h, moe aux).

    route: the normalised condition, the experts' router input when cfg.router_input is
    "condition" (qernel.model.moe); ignored for "electron".
    """

    cfg: ModelConfig

    @nn.compact
    def __call__(self, h, gamma, beta, route=None):
        cfg = self.cfg
        a = gamma[..., None, 0, :] * _layer_norm("ln_attention")(h) + beta[..., None, 0, :]
        h = h + GroupedQueryAttention(cfg.n_heads, cfg.n_kv_heads, cfg.d_model, name="attention")(a)
        m = gamma[..., None, 1, :] * _layer_norm("ln_moe")(h) + beta[..., None, 1, :]
        route = route if cfg.router_input == "condition" else None
        y, aux = MixtureOfExperts(cfg.n_experts, cfg.top_k, cfg.d_ff, cfg.d_model, cfg.router_margin,
                                  router_hidden=cfg.film_hidden, name="moe")(m, route)
        return h + y, aux


class Transformer(nn.Module):
    """h (..., N, d), gamma/beta (..., n_layers, 2, d) [, route (..., n_cond)] → (h, aux).

    aux = {"moe_loss": (...) mean over layers (this configuration's tokens), "expert_counts":
    (..., n_layers, E), "router_probs": (..., n_layers, E) router probabilities summed over the
    tokens (with expert_counts: the batch's loss, qernel.model.moe.batch_load_balancing_loss)}.
    """

    cfg: ModelConfig

    @nn.compact
    def __call__(self, h, gamma, beta, route=None):
        losses, counts, probs = [], [], []
        for i in range(self.cfg.n_layers):  # static, over layers
            h, aux = TransformerLayer(self.cfg, name=f"layer_{i}")(h, gamma[..., i, :, :], beta[..., i, :, :], route)
            losses.append(aux["loss"])
            counts.append(aux["counts"])
            probs.append(aux["probs"])
        h = _layer_norm("ln_final")(h)
        return h, {"moe_loss": jnp.mean(jnp.stack(losses, axis=-1), axis=-1),
                   "expert_counts": jnp.stack(counts, axis=-2), "router_probs": jnp.stack(probs, axis=-2)}
