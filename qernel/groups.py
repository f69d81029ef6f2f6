"""Reductions over the depth groups of a walker batch (DESIGN.md §3).

Walker w of a batch of W belongs to depth group group[w] in [0, G). Every per-depth mean in the
engine (acceptance per depth, energies and variances per depth, the centring of local energies
and of log-derivatives) goes through these functions, as one-hot matrix products (one fused
kernel on GPUs, and the same summation order everywhere). An empty group has mean 0.
"""

from __future__ import annotations

import jax.numpy as jnp


def one_hot(group, n_groups: int, dtype):
    """(W, G) indicator of each walker's group."""
    return (group[:, None] == jnp.arange(n_groups)[None, :]).astype(dtype)


def group_mean(values, group, n_groups: int):
    """Mean over each group of values (W, ...) along axis 0; (G, ...)."""
    oh = one_hot(group, n_groups, values.dtype)
    count = jnp.maximum(jnp.sum(oh, axis=0), 1)
    flat = values.reshape(values.shape[0], -1)
    return ((oh.T @ flat) / count[:, None]).reshape((n_groups,) + values.shape[1:])


def centre(values, group, n_groups: int):
    """values (W, ...) minus the mean of each walker's group."""
    return values - group_mean(values, group, n_groups)[group]


def group_stats(values, group, n_groups: int):
    """(mean, variance, count) of real values (W,) per group; each (G,).

    The variance is the population variance of the group's samples.
    """
    count = jnp.sum(one_hot(group, n_groups, values.dtype), axis=0)
    mean = group_mean(values, group, n_groups)
    return mean, group_mean((values - mean[group]) ** 2, group, n_groups), count


def group_median(values, group, n_groups: int):
    """Median of real values (W,) per group; (G,). Non-finite values sort last."""
    mask = group[None, :] == jnp.arange(n_groups)[:, None]  # (G, W)
    big = jnp.where(mask, values[None, :], jnp.inf)
    sorted_ = jnp.sort(big, axis=1)
    count = jnp.sum(mask, axis=1)
    lo = jnp.clip((count - 1) // 2, 0, values.shape[0] - 1)
    hi = jnp.clip(count // 2, 0, values.shape[0] - 1)
    rows = jnp.arange(n_groups)
    return 0.5 * (sorted_[rows, lo] + sorted_[rows, hi])
