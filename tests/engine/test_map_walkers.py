"""qernel.parallel.map_walkers: chunked local energies equal the plain vmap and use less memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qernel.hamiltonian import make_local_energy
from qernel.parallel import largest_divisor_at_most, map_walkers

from .standin import StandInWavefunction


def _per_walker(params, x, cond):
    """A per-configuration function with a pytree output that names its walker."""
    return {"sum": jnp.sum(x) * params, "cond": cond[0], "outer": jnp.outer(x[:, 0], x[:, 1])}


@pytest.mark.parametrize("max_batch, expected_chunk", [(0, 12), (12, 12), (50, 12), (5, 4), (4, 4), (1, 1), (7, 6)])
def test_chunks_reproduce_the_vmap_walker_by_walker(max_batch, expected_chunk):
    w = 12
    x = jax.random.normal(jax.random.PRNGKey(0), (w, 3, 2))
    cond = jnp.arange(w, dtype=x.dtype)[:, None] + 100.0  # walker w carries 100 + w
    ref = jax.vmap(_per_walker, in_axes=(None, 0, 0))(2.0, x, cond)
    out = jax.jit(map_walkers(_per_walker, max_batch))(2.0, x, cond)
    np.testing.assert_array_equal(np.asarray(out["cond"]), 100.0 + np.arange(w))  # walker order kept
    for key in ref:
        np.testing.assert_allclose(np.asarray(out[key]), np.asarray(ref[key]), rtol=1e-6)
    if max_batch > 0:
        assert largest_divisor_at_most(w, max_batch) == expected_chunk
    if expected_chunk < w:  # the compiled program loops over W / chunk chunks
        text = jax.jit(map_walkers(_per_walker, max_batch)).lower(2.0, x, cond).as_text()
        assert "while" in text


def test_chunked_local_energy_equals_vmap_and_needs_less_memory(pair_system):
    wf = StandInWavefunction(pair_system, ((0.5, 1.5),), shells=1.0, n_stars=1, init_scale=0.1)
    params = wf.init(jax.random.PRNGKey(0))
    w = 64
    x = jax.random.uniform(jax.random.PRNGKey(1), (w, pair_system.n_electrons, 2)) * 2.0
    cond = jnp.full((w, 1), 1.0)
    f = make_local_energy(pair_system, wf.log_psi, "folx")
    full, chunked = jax.jit(map_walkers(f, 0)), jax.jit(map_walkers(f, 8))
    a, b = full(params, x, cond), chunked(params, x, cond)
    for u, v in zip(a, b):
        np.testing.assert_allclose(np.asarray(v), np.asarray(u), rtol=1e-5, atol=1e-5)
    temp = [fn.lower(params, x, cond).compile().memory_analysis().temp_size_in_bytes for fn in (full, chunked)]
    assert temp[1] < temp[0], temp
