"""Periodic two-body Jastrow: symmetry, periodicity, Coulomb cusps."""

import jax
import jax.numpy as jnp
import numpy as np

from qernel.lattice import Supercell
from qernel.model.jastrow import Jastrow, pair_indices

from model_helpers import fast_jit


def test_pair_indices():
    (pi, pj), (ai, aj) = pair_indices(3, 2)
    assert sorted(zip(pi.tolist(), pj.tolist())) == [(0, 1), (0, 2), (1, 2), (3, 4)]
    assert sorted(zip(ai.tolist(), aj.tolist())) == [(0, 3), (0, 4), (1, 3), (1, 4), (2, 3), (2, 4)]
    (pi, _), (ai, _) = pair_indices(4, 0)
    assert len(pi) == 6 and len(ai) == 0


def _random_jastrow(sc, n_up, n_down, coupling, key):
    jas = Jastrow(sc, n_up, n_down, coupling, hidden=8, shells=2)
    x = jnp.asarray(sc.to_cart(np.random.default_rng(0).uniform(size=(n_up + n_down, 2))))
    params = fast_jit(jas.init)(key, x)
    # make the MLP part nonzero (its last layer starts at zero)
    params = jax.tree.map(lambda a: a + 0.3 * jax.random.normal(key, a.shape, a.dtype), params)
    return jas, params


def test_symmetric_and_periodic(x64):
    sc = Supercell(((2, 1), (-1, 2)))
    jas, params = _random_jastrow(sc, 3, 2, 2.0, jax.random.PRNGKey(0))
    x = jnp.asarray(sc.to_cart(np.random.default_rng(1).uniform(size=(5, 2))))
    apply = fast_jit(jas.apply)
    j0 = apply(params, x)
    np.testing.assert_allclose(apply(params, x[jnp.array([2, 0, 1, 4, 3])]), j0, rtol=1e-12)
    for shift in sc.lattice:
        np.testing.assert_allclose(apply(params, x.at[1].add(shift)), j0, rtol=1e-12)
        np.testing.assert_allclose(apply(params, x.at[4].add(-2 * shift)), j0, rtol=1e-12)


def test_coulomb_cusps(x64):
    # d J / d r at coalescence, in any direction and for any parameters: λ for an antiparallel
    # pair, λ/3 for a parallel pair (2D cusp conditions of -½∇² + λ/r)
    sc = Supercell.diagonal(3)
    lam = 2.5
    for n_up, n_down, slope in ((1, 1, lam), (2, 0, lam / 3.0)):
        jas, params = _random_jastrow(sc, n_up, n_down, lam, jax.random.PRNGKey(n_up))
        apply = fast_jit(jas.apply)
        x0 = jnp.asarray([[0.4, 0.7], [0.4, 0.7]])
        for angle in (0.3, 2.0, 4.5):
            direction = jnp.asarray([np.cos(angle), np.sin(angle)])
            j = lambda t: apply(params, x0.at[1].add(t * direction))
            eps = 1e-7
            np.testing.assert_allclose((j(eps) - j(0.0)) / eps, slope, rtol=1e-5)


def test_conditioned_pair_term_follows_the_condition_and_keeps_symmetry_and_cusps(x64):
    """jastrow_conditioned: u also reads the normalised condition. J changes with it (different
    depths get different pair correlations) and stays symmetric, periodic and at the exact cusp
    for every condition; unconditioned, the condition is ignored."""
    sc = Supercell(((2, 1), (-1, 2)))
    lam = 2.0
    x = jnp.asarray(sc.to_cart(np.random.default_rng(1).uniform(size=(5, 2))))
    key = jax.random.PRNGKey(3)
    for conditioned in (False, True):
        jas = Jastrow(sc, 3, 2, lam, hidden=8, shells=2, conditioned=conditioned)
        c0 = jnp.asarray([-0.5])
        params = fast_jit(jas.init)(key, x, None, c0)
        params = jax.tree.map(lambda a: a + 0.3 * jax.random.normal(key, a.shape, a.dtype), params)
        apply = fast_jit(jas.apply)
        values = [float(apply(params, x, None, jnp.asarray([c]))) for c in (-1.0, 0.0, 1.0)]
        if conditioned:
            assert np.ptp(values) > 1e-3, values
        else:
            np.testing.assert_allclose(values, values[0], rtol=1e-14)
        for c in (-1.0, 1.0):
            cond = jnp.asarray([c])
            j0 = apply(params, x, None, cond)
            np.testing.assert_allclose(apply(params, x[jnp.array([2, 0, 1, 4, 3])], None, cond), j0, rtol=1e-12)
            np.testing.assert_allclose(apply(params, x.at[1].add(sc.lattice[0]), None, cond), j0, rtol=1e-12)
            x0 = x.at[3].set(x[0])  # an antiparallel pair (0 up, 3 down) at coalescence
            direction = jnp.asarray([np.cos(0.7), np.sin(0.7)])
            j = lambda t: apply(params, x0.at[3].add(t * direction), None, cond)
            eps = 1e-7
            # one-sided slopes across the coalescence: the smooth part's slope cancels in their
            # difference, the cusp a·|d| leaves 2a with a = λ for an antiparallel pair
            np.testing.assert_allclose((j(eps) - j(0.0)) / eps - (j(0.0) - j(-eps)) / eps, 2 * lam, rtol=1e-4)
