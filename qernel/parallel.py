"""Data parallelism over all local devices with jax.sharding (no pmap).

A 1-D mesh with axis "batch" spans the devices. Walker arrays (leading axis W) are sharded
along it; parameters, optimiser state and per-group scalars are replicated. Jitted functions
are written for the global batch; XLA inserts the collectives (the per-group means, the
SR kernel O Oᵀ), so the code is the same on one device and on many.
"""

from __future__ import annotations

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


def to_host(tree):
    """Gather a (possibly sharded) pytree to numpy arrays on the host."""
    return jax.tree.map(lambda a: np.asarray(jax.device_get(a)), tree)
