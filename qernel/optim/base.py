"""The optimiser interface of the training step, and the learning-rate schedule shared by all.

An optimiser is an object with two pure functions (jit-able, no Python branching on data):

    state = opt.init(params)
    new_params, new_state, stats = opt.update(params, state, samples, step, extra_grad)

`samples` (`Samples`) is what one MCMC block and the local energies give the step: the walkers,
their depth groups and their local energies (raw and clipped/centred). `extra_grad` is the
gradient of any further loss term (the mixture-of-experts load balancing; a params pytree or
None), which each optimiser adds in its own way. `stats` holds at least "learning_rate" and
"update_norm" (scalars). The training step (qernel.train.make_train_step) calls these two
functions and never looks at the optimiser's name; a new optimiser is one module with a factory
registered in qernel.optim (see `make_optimizer`).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Protocol

import jax
import jax.numpy as jnp


class Samples(NamedTuple):
    """One step's samples (W walkers, N electrons, G depth groups).

    x: (W, N, 2) positions (a_M); cond: (W, n_cond) conditions (depths, E_M); group: (W,) int
    depth group in [0, G); e_loc: (W,) local energies (E_M; complex when ψ is complex), raw;
    eps: (W,) local energies clipped and centred per group (qernel.loss.centred_local_energies).
    """

    x: jax.Array
    cond: jax.Array
    group: jax.Array
    e_loc: jax.Array
    eps: jax.Array


class Optimizer(Protocol):
    """init(params) -> state; update(params, state, samples, step, extra_grad) -> (params, state, stats)."""

    name: str

    def init(self, params) -> Any: ...

    def update(self, params, state, samples: Samples, step: jax.Array,
               extra_grad: Any | None = None) -> tuple[Any, Any, dict]: ...


def learning_rate_schedule(learning_rate: float, decay_steps: float) -> Callable:
    """step -> η / (1 + step / decay_steps); constant when decay_steps <= 0."""

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        if decay_steps and decay_steps > 0:
            return learning_rate / (1.0 + step / decay_steps)
        return learning_rate + 0.0 * step

    return schedule
