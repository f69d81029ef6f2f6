"""Adam (optax) on the unbiased VMC energy gradient, with the η/(1 + t/decay) schedule.

Source: Kingma & Ba 2015; the gradient is qernel.loss.make_energy_loss's (clipped local energies
centred per depth group, the ferminet custom-jvp form). The update's Euclidean norm is capped at
`max_update_norm` (optax.clip_by_global_norm).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import optax

from qernel.hamiltonian import LogPsi
from qernel.loss import make_energy_loss
from qernel.optim.base import Samples, learning_rate_schedule
from qernel.optim.defaults import defaults

#: η = 1e-3 (the usual Adam rate); the whole update's Euclidean norm <= 0.3 (qernel.optim.defaults).
DEFAULTS = defaults("adam")


def make_adam(learning_rate: float, decay_steps: float, max_update_norm: float = 0.0):
    """optax Adam with the η/(1 + t/decay) schedule; the update's Euclidean norm is capped at
    max_update_norm (> 0)."""
    parts = [optax.adam(learning_rate_schedule(learning_rate, decay_steps))]
    if max_update_norm and max_update_norm > 0:
        parts.append(optax.clip_by_global_norm(max_update_norm))
    return optax.chain(*parts)


@dataclasses.dataclass(frozen=True, eq=False)
class Adam:
    """The `Optimizer` interface around `make_adam` (see qernel.optim.base)."""

    log_psi: LogPsi
    n_groups: int
    learning_rate: float
    decay_steps: float
    max_update_norm: float = 0.0
    clip_mad: float = 5.0
    name: str = "adam"

    def __post_init__(self):
        object.__setattr__(self, "_tx", make_adam(self.learning_rate, self.decay_steps, self.max_update_norm))
        object.__setattr__(self, "_loss", make_energy_loss(self.log_psi, self.n_groups, self.clip_mad))
        object.__setattr__(self, "_schedule", learning_rate_schedule(self.learning_rate, self.decay_steps))

    def init(self, params) -> Any:
        return self._tx.init(params)

    def update(self, params, state, samples: Samples, step, extra_grad=None):
        grads = jax.grad(self._loss)(params, samples.x, samples.cond, samples.group, samples.e_loc)
        if extra_grad is not None:
            grads = jax.tree.map(lambda a, b: a + b, grads, extra_grad)
        updates, new_state = self._tx.update(grads, state, params)
        new_params = optax.apply_updates(params, updates)
        stats = {"learning_rate": self._schedule(step).astype(samples.x.dtype),
                 "update_norm": optax.global_norm(updates)}
        return new_params, new_state, stats


def from_config(cfg, log_psi: LogPsi, n_groups: int, is_complex: bool) -> Adam:
    """Adam from a TrainConfig-like `cfg` (attributes lr, lr_decay_steps, update_cap, clip_mad)."""
    del is_complex
    return Adam(log_psi, n_groups, cfg.lr, cfg.lr_decay_steps, cfg.update_cap, cfg.clip_mad)
