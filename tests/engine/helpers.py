"""Shared helpers of the engine tests: an independent energy estimate with fixed parameters."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from qernel.hamiltonian import make_complex_local_energy
from qernel.mcmc import MCMCState, init_walkers, make_mcmc_step


@functools.lru_cache(maxsize=16)
def _compiled(system, log_psi, mcmc_steps, laplacian, hop_moves):
    step = jax.jit(make_mcmc_step(log_psi, system, mcmc_steps, hop_moves=hop_moves))
    energy = jax.jit(jax.vmap(make_complex_local_energy(system, log_psi, laplacian), in_axes=(None, 0, 0)))
    return step, energy


def sample_energy(system, log_psi, params, depths, n_per_depth=256, n_blocks=20, mcmc_steps=10, burn_blocks=10,
                  seed=0, start: MCMCState | None = None, laplacian="folx", hop_moves=2, _variance=False):
    """Energy per electron (D,) and its standard error (D,) at fixed params, E_M.

    Independent walkers (n_per_depth per depth): each walker's average over n_blocks blocks is an
    independent sample, so the standard error across walkers is honest (no autocorrelation bias).
    `start`: walkers to start from (e.g. TrainResult.mcmc); their depth assignment is replaced.
    hop_moves: site hops per block (qernel.mcmc), as the engine makes them by default: walkers
    moved to another depth keep their arrangement over the minima only without them.
    """
    depths = np.asarray(depths, float)
    d = len(depths)
    group = np.arange(n_per_depth * d) % d
    dtype = jnp.asarray(jax.tree.leaves(params)[0]).dtype if jax.tree.leaves(params) else jnp.float32
    cond = jnp.asarray(depths[group][:, None], dtype)
    state = init_walkers(jax.random.PRNGKey(seed), system, cond, group, d, width=0.1, dtype=dtype)
    if start is not None and start.positions.shape[0] >= len(group):
        state = state._replace(positions=jnp.asarray(start.positions[: len(group)], dtype))
    step, energy = _compiled(system, log_psi, mcmc_steps, laplacian, hop_moves)
    key = jax.random.PRNGKey(seed + 1)
    for i in range(burn_blocks):
        state = step(params, state, jax.random.fold_in(key, i))
    total = np.zeros(len(group))
    samples = []
    for i in range(n_blocks):
        state = step(params, state, jax.random.fold_in(key, 10_000 + i))
        e = np.asarray(energy(params, state.positions, state.cond).real)
        total += e
        samples.append(e)
    if _variance:
        samples = np.stack(samples)  # (blocks, W)
        return np.array([samples[:, group == g].var() for g in range(d)])
    per_walker = total / n_blocks / system.n_electrons
    mean = np.array([per_walker[group == g].mean() for g in range(d)])
    err = np.array([per_walker[group == g].std(ddof=1) / np.sqrt(np.sum(group == g)) for g in range(d)])
    return mean, err


def sample_variance(system, log_psi, params, depths, **kw):
    """Local-energy variance (total E_L, E_M²) per depth at fixed params (same sampling as sample_energy)."""
    return sample_energy(system, log_psi, params, depths, _variance=True, **kw)
