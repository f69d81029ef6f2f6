"""Data parallelism over all local devices with jax.sharding (no pmap).

A 1-D mesh with axis "batch" spans the devices. Walker arrays (leading axis W) are sharded
along it; parameters, optimiser state and per-group scalars are replicated. Jitted functions
are written for the global batch; XLA inserts the collectives (the per-group means, the
SR kernel O Oᵀ), so the code is the same on one device and on many. `map_walkers` bounds the
memory of a per-walker function by taking the walkers in chunks.
"""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

BATCH_AXIS = "batch"


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh over `devices` (default: all local devices)."""
    devices = jax.local_devices() if devices is None else list(devices)
    return Mesh(np.array(devices), (BATCH_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Shard the leading (walker) axis across the mesh."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def device_summary() -> tuple[int, str]:
    """(count, "kind (platform)") of the local JAX devices."""
    devices = jax.local_devices()
    kinds = ", ".join(sorted({getattr(d, "device_kind", "?") for d in devices}))
    return len(devices), f"{kinds} ({devices[0].platform})"


def check_batch_size(batch_size: int, n_devices: int, n_groups: int = 1, key: str = "batch_size") -> None:
    """Raise ValueError (naming `key`) unless batch_size is a positive multiple of n_devices × n_groups."""
    unit = n_devices * n_groups
    if batch_size <= 0 or batch_size % unit:
        raise ValueError(
            f"{key} = {batch_size} must be a positive multiple of (devices {n_devices}) × (depths {n_groups}) = {unit}"
        )


def shard_batch(tree, mesh: Mesh):
    """Place every array of `tree` (leading axis: walkers) sharded along the batch axis."""
    sharding = batch_sharding(mesh)
    return jax.tree.map(lambda a: jax.device_put(a, sharding), tree)


def replicate(tree, mesh: Mesh):
    """Place every array of `tree` replicated on all devices of the mesh."""
    sharding = replicated(mesh)
    return jax.tree.map(lambda a: jax.device_put(a, sharding), tree)


def shardings(tree, mesh: Mesh, walker_axes):
    """One sharding per leaf of `tree`: sharded along the batch axis where `walker_axes` is True,
    replicated where it is False.

    walker_axes: a pytree prefix of `tree` with a bool at each node (e.g.
    `qernel.mcmc.WALKER_AXES` for an MCMCState: positions, cond, log_psi and group have a walker
    axis; width and acceptance are per group). A plain True or False applies to the whole tree.
    """
    bat, rep = batch_sharding(mesh), replicated(mesh)
    return jax.tree.map(lambda flag, sub: jax.tree.map(lambda _: bat if flag else rep, sub), walker_axes, tree)


def place(tree, mesh: Mesh, walker_axes):
    """Put a (host or device) pytree on the mesh: the leaves with a walker axis (`walker_axes`, see
    `shardings`) sharded along it, everything else replicated. The one placement of the engine's
    states (training and sampling)."""
    return jax.tree.map(lambda a, s: jax.device_put(a, s), tree, shardings(tree, mesh, walker_axes))


def to_host(tree):
    """Gather a (possibly sharded) pytree to numpy arrays on the host."""
    return jax.tree.map(lambda a: np.asarray(jax.device_get(a)), tree)


def largest_divisor_at_most(n: int, limit: int) -> int:
    """The largest divisor of n that is <= limit (at least 1)."""
    limit = max(1, min(n, limit))
    for d in range(limit, 0, -1):
        if n % d == 0:
            return d
    return 1


def map_walkers(f: Callable, max_batch_size: int = 0) -> Callable:
    """f(params, x, cond) for one configuration → g(params, x (W, N, 2), cond (W, n_cond)) over walkers.

    max_batch_size <= 0 (or >= W): one jax.vmap over all W walkers. Otherwise the walkers go
    through in W/b chunks of b walkers, b the largest divisor of W that is <= max_batch_size
    (a jax.lax.map over chunks, a vmap inside each), which bounds the memory of the
    intermediates (the forward Laplacian carries 2N tangents per activation) at the price of
    less parallel work per kernel. Chunk i holds walkers i, i + W/b, i + 2W/b, …, so with the
    walkers sharded in contiguous blocks over devices every chunk is spread over all of them.
    Same results as the vmap (up to the summation order inside a kernel).
    """
    vmapped = jax.vmap(f, in_axes=(None, 0, 0))
    if max_batch_size <= 0:
        return vmapped

    def g(params, x, cond):
        w = x.shape[0]
        b = largest_divisor_at_most(w, max_batch_size)
        if b == w:
            return vmapped(params, x, cond)
        n = w // b

        def chunks(a):  # (W, ...) -> (n, b, ...): chunk i = walkers i, i + n, ...
            return a.reshape((b, n) + a.shape[1:]).swapaxes(0, 1)

        out = jax.lax.map(lambda xc: vmapped(params, *xc), (chunks(x), chunks(cond)))
        return jax.tree.map(lambda a: a.swapaxes(0, 1).reshape((w,) + a.shape[2:]), out)

    return g
