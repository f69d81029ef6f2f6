"""FiLM: identity at initialisation, condition normalisation."""

import jax
import jax.numpy as jnp
import numpy as np

from qernel.model.film import FiLM, normalise_condition

from model_helpers import fast_jit


def test_normalise_condition_maps_range_to_unit_interval():
    rng = ((0.0, 10.0), (-1.0, 3.0))
    c = jnp.asarray([[0.0, -1.0], [10.0, 3.0], [5.0, 1.0]])
    np.testing.assert_allclose(normalise_condition(c, rng), [[-1, -1], [1, 1], [0, 0]], atol=1e-7)
    np.testing.assert_allclose(normalise_condition(jnp.asarray([2.5]), ((2.5, 2.5),)), [0.0])


def test_film_is_exactly_identity_at_init_and_conditions_after_perturbation():
    film = FiLM(n_layers=3, d_model=8, hidden=16)
    params = fast_jit(film.init)(jax.random.PRNGKey(0), jnp.zeros(1))
    apply = fast_jit(film.apply)
    for c in (-1.0, 0.3, 1.0):
        gamma, beta = apply(params, jnp.asarray([c]))
        assert gamma.shape == beta.shape == (3, 2, 8)
        assert bool(jnp.all(gamma == 1.0)) and bool(jnp.all(beta == 0.0))
    kernel = params["params"]["out"]["kernel"]
    params["params"]["out"]["kernel"] = 0.1 * jax.random.normal(jax.random.PRNGKey(1), kernel.shape)
    g1, b1 = apply(params, jnp.asarray([-0.5]))
    g2, b2 = apply(params, jnp.asarray([0.5]))
    assert float(jnp.max(jnp.abs(g1 - g2))) > 1e-3 and float(jnp.max(jnp.abs(b1 - b2))) > 1e-3
