"""Determinants without LAPACK custom calls on CPU.

`slogdet(a)` is jnp.linalg.slogdet with the same (sign, log|det a|) contract for a (..., n, n)
real or complex array. On GPU/TPU it is jnp.linalg.slogdet. On CPU it is a Gaussian
elimination with partial pivoting in plain jax.numpy, because jaxlib 0.10.2's CPU LAPACK kernels
(getrf, and the trsm of its derivative) split a batch over XLA's intra-op thread pool and
wait for it from inside that pool: when as many of them run at once as the pool has threads
(two on a 2-core machine) every thread waits and the program hangs for ever. Seen in training
at 288 walkers × 9 depths on 2 cores: two `lapack_ctrsm` thunks, each blocked in
ParallelBatchMap, and nothing left to run their tasks. Plain arithmetic cannot deadlock, is
differentiable to any order and goes through folx's forward Laplacian.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _abs2(z):
    """|z|² from real operations (folx's rule for abs of a complex value casts to real)."""
    return jnp.real(z) ** 2 + jnp.imag(z) ** 2


def lu_slogdet(a):
    """(sign, log|det a|) of one (n, n) matrix by LU with partial pivoting, unrolled over columns.

    sign has a's dtype (±1 real, a unit complex number otherwise; 0 with log|det| = -inf for a
    singular matrix), log|det| is real. Meant for n up to a few tens (the loop is unrolled).
    """
    n = a.shape[-1]
    sign = jnp.ones((), a.dtype)
    logabs = jnp.zeros((), jnp.real(a).dtype)
    rows = jnp.arange(n)
    for k in range(n):
        p = k + jax.lax.stop_gradient(jnp.argmax(_abs2(a[k:, k])))
        a = a[rows.at[k].set(p).at[p].set(k)]
        pivot = a[k, k]
        mag = jnp.sqrt(_abs2(pivot))
        swap = jnp.where(p != k, -1.0, 1.0).astype(a.dtype)
        sign = sign * swap * (pivot / jnp.where(mag > 0, mag, 1.0))
        logabs = logabs + jnp.log(mag)
        if k + 1 < n:
            factors = a[k + 1:, k] / pivot
            a = a.at[k + 1:, k:].add(-factors[:, None] * a[k, k:][None, :])
    return sign, logabs


_batched_lu_slogdet = jnp.vectorize(lu_slogdet, signature="(n,n)->(),()")


def slogdet(a):
    """(sign, log|det a|) over the last two axes of a (..., n, n); see the module docstring."""
    if jax.default_backend() == "cpu":
        return _batched_lu_slogdet(a)
    return jnp.linalg.slogdet(a)
