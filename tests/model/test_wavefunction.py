"""The assembled wavefunction in float32: API, shapes, antisymmetry, periodicity, conditioning.

Exact limits and the folx Laplacian (float64) are in test_wavefunction_float64.py."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qernel.lattice import Supercell
from qernel.model import ModelConfig, Wavefunction, make_wavefunction
from qernel.system import System

from model_helpers import fast_jit

#: A small but complete model (every layer type) for fast tests.
SMALL = ModelConfig(d_model=16, n_layers=1, n_heads=4, n_kv_heads=2, n_experts=3, top_k=2, d_ff=16,
                    film_hidden=8, n_determinants=2, jastrow_hidden=8, orbital_init_scale=1.0)
RANGE = ((0.0, 10.0),)


def _positions(system, n_conf, seed):
    frac = np.random.default_rng(seed).uniform(size=(n_conf, system.n_electrons, 2))
    return system.supercell.to_cart(frac)


def _perturbed(params, key, scale=0.1):
    """Random perturbation of every parameter (zero-initialised layers included); host-side, no compile."""
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())
    return jax.tree.map(lambda a: np.asarray(a + scale * rng.normal(size=a.shape).astype(a.dtype)), params)


@pytest.fixture(scope="module")
def spinful():
    system = System(Supercell.diagonal(2), n_up=3, n_down=2, coupling=3.0, phase=math.radians(45))
    wf = make_wavefunction(system, SMALL, RANGE)
    return system, wf, fast_jit(jax.vmap(wf.apply, in_axes=(None, 0, 0)))


def test_public_api_and_shapes(spinful):
    system, wf, apply = spinful
    assert isinstance(wf, Wavefunction) and wf.is_complex
    params = wf.init(jax.random.PRNGKey(0))
    x = jnp.asarray(_positions(system, 4, 0), jnp.float32)
    cond = jnp.linspace(0.0, 10.0, 4)[:, None]
    phase, logabs, aux = apply(params, x, cond)
    assert phase.shape == logabs.shape == (4,) and logabs.dtype == jnp.float32
    assert aux["moe_loss"].shape == (4,) and aux["expert_counts"].shape == (4, SMALL.n_layers, SMALL.n_experts)
    np.testing.assert_array_equal(aux["expert_counts"].sum(-1), system.n_electrons * SMALL.top_k)
    lp = jax.eval_shape(wf.log_psi, params, x[0], cond[0])  # values: test_wavefunction_float64.py
    assert lp.shape == () and lp.dtype == jnp.complex64
    up, down = jax.eval_shape(wf.orbitals, params, x[0], cond[0])
    assert up.shape == (2, 3, 3) and down.shape == (2, 2, 2) and up.dtype == jnp.complex64
    assert wf.n_params(params) == sum(a.size for a in jax.tree.leaves(params)) > 1000
    text = wf.summary(params)
    assert "total" in text and f"{wf.n_params(params):,d}" in text


@pytest.mark.parametrize("n_up,n_down", [(4, 0), (1, 3), (2, 1), (0, 2)])
def test_spin_block_shapes(n_up, n_down):
    # shapes only (abstract evaluation): values for these spin cases are checked in the tests below
    system = System(Supercell.diagonal(2), n_up=n_up, n_down=n_down, coupling=1.0)
    wf = make_wavefunction(system, SMALL, RANGE)
    params = jax.eval_shape(wf.init, jax.random.PRNGKey(1))
    x = jax.ShapeDtypeStruct((n_up + n_down, 2), jnp.float32)
    cond = jax.ShapeDtypeStruct((1,), jnp.float32)
    up, down = jax.eval_shape(wf.orbitals, params, x, cond)
    assert up.shape == (2, n_up, n_up) and down.shape == (2, n_down, n_down)
    phase, logabs, aux = jax.eval_shape(wf.apply, params, x, cond)
    assert phase.shape == logabs.shape == () and aux["expert_counts"].shape == (1, 3)


def test_antisymmetry_under_same_spin_swaps(spinful):
    system, wf, apply = spinful
    n = 6
    x = jnp.asarray(_positions(system, n, 2), jnp.float32)
    cond = jnp.asarray(np.random.default_rng(3).uniform(0, 10, size=(n, 1)), jnp.float32)
    for seed in range(3):
        params = _perturbed(wf.init(jax.random.PRNGKey(seed)), jax.random.PRNGKey(10 + seed))
        phase, logabs, _ = apply(params, x, cond)
        for i, j in ((0, 1), (0, 2), (3, 4)):  # up-up and down-down swaps
            perm = np.arange(system.n_electrons)
            perm[[i, j]] = perm[[j, i]]
            phase_s, logabs_s, _ = apply(params, x[:, perm], cond)
            np.testing.assert_allclose(logabs_s, logabs, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(np.exp(1j * (phase_s - phase)), -1.0, atol=1e-4)
        # an up-down swap is not a symmetry: the value changes
        perm = np.array([3, 1, 2, 0, 4])
        assert float(jnp.max(jnp.abs(apply(params, x[:, perm], cond)[1] - logabs))) > 1e-3


def test_periodic_under_supercell_translations_float32(spinful):
    system, wf, apply = spinful
    params = _perturbed(wf.init(jax.random.PRNGKey(4)), jax.random.PRNGKey(5))
    x = jnp.asarray(_positions(system, 4, 6), jnp.float32)
    cond = jnp.asarray([[0.5], [3.0], [7.0], [9.5]], jnp.float32)
    phase, logabs, _ = apply(params, x, cond)
    lat = system.supercell.lattice
    for e, shift in ((0, lat[0]), (2, lat[1]), (4, lat[0] - 2 * lat[1]), (1, -lat[1])):
        phase_s, logabs_s, _ = apply(params, x.at[:, e].add(jnp.asarray(shift, jnp.float32)), cond)
        np.testing.assert_allclose(logabs_s, logabs, atol=1e-5)
        np.testing.assert_allclose(np.angle(np.exp(1j * (phase_s - phase))), 0.0, atol=1e-5)


def test_film_identity_at_init_and_conditioning_matters(spinful):
    system, wf, apply = spinful
    params = wf.init(jax.random.PRNGKey(11))
    x = jnp.asarray(np.repeat(_positions(system, 1, 12), 3, axis=0), jnp.float32)
    cond = jnp.asarray([[0.0], [5.0], [10.0]], jnp.float32)
    # FiLM is exactly the identity at init: the output does not depend on the condition at all
    # (bit for bit, comparing the same batch slots with the conditions replaced)
    phase, logabs, _ = apply(params, x, cond)
    for c in (0.0, 10.0, 3.7):
        phase_c, logabs_c, _ = apply(params, x, jnp.full_like(cond, c))
        np.testing.assert_array_equal(logabs_c, logabs)
        np.testing.assert_array_equal(phase_c, phase)
    film = params["params"]["film"]["out"]
    film["kernel"] = 0.3 * jax.random.normal(jax.random.PRNGKey(13), film["kernel"].shape)
    phase, logabs, _ = apply(params, x, cond)
    assert abs(float(logabs[0] - logabs[2])) > 1e-3 and abs(float(logabs[1] - logabs[2])) > 1e-3
