"""One-body Jastrow of the moiré potential: its features are the potential, and the factor has
the symmetries a one-body term must keep (moiré periodicity, permutations), starts at zero and
follows the depth."""

import jax
import jax.numpy as jnp
import numpy as np

from qernel.lattice import MOIRE_LATTICE, Supercell
from qernel.model import make_wavefunction
from qernel.model.one_body_jastrow import OneBodyJastrow, potential_features
from qernel.system import System

from model_helpers import fast_jit

PHASE = np.deg2rad(45.0)


def test_the_shape_feature_is_the_moire_potential(x64):
    # Δ(r) = −2V Σ_j cos(g_j·r + φ) written out here with g_j = (4π/√3)(cos θ_j, sin θ_j),
    # θ_j = 90°, 210°, 330° (DESIGN.md §1: g1 along y, g2 = g1 rotated by 120°, g3 = −(g1 + g2)), not
    # through qernel.moire: p(r) = Δ(r) / (6V)
    r = np.random.default_rng(0).uniform(-3, 3, size=(50, 2))
    angles = np.deg2rad([90.0, 210.0, 330.0])
    g = 4 * np.pi / np.sqrt(3) * np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    depth = 7.0
    delta = -2 * depth * np.cos(r @ g.T + PHASE).sum(-1)
    p = np.asarray(potential_features(jnp.asarray(r), PHASE))[:, -1]
    np.testing.assert_allclose(6 * depth * p, delta, atol=1e-10)


def _random_module(key):
    mod = OneBodyJastrow(PHASE, hidden=8)
    x = jnp.zeros((5, 2))
    params = fast_jit(mod.init)(key, x, jnp.zeros(1))
    start = params
    params = jax.tree.map(lambda a: a + 0.5 * jax.random.normal(key, a.shape, a.dtype), params)
    return mod, start, params


def test_zero_at_the_start_then_periodic_symmetric_and_depth_dependent(x64):
    sc = Supercell(((2, 1), (-1, 2)))
    mod, start, params = _random_module(jax.random.PRNGKey(0))
    apply = fast_jit(mod.apply)
    x = jnp.asarray(sc.to_cart(np.random.default_rng(1).uniform(size=(5, 2))))
    c = jnp.array([0.3])
    assert float(apply(start, x, c)) == 0.0  # the model without it, at the start
    chi = apply(params, x, c)
    assert abs(float(chi)) > 1e-3
    # any electron moved by a moiré lattice vector (not only a supercell one): the same factor
    for a in MOIRE_LATTICE:
        np.testing.assert_allclose(apply(params, x.at[2].add(a), c), chi, rtol=1e-12)
        np.testing.assert_allclose(apply(params, x.at[0].add(-3 * a), c), chi, rtol=1e-12)
    np.testing.assert_allclose(apply(params, x[jnp.array([4, 2, 0, 1, 3])], c), chi, rtol=1e-12)
    # it depends on where an electron sits in the moiré cell, and on the depth
    assert abs(float(apply(params, x.at[1].add(jnp.array([0.21, 0.13])), c) - chi)) > 1e-4
    assert abs(float(apply(params, x, jnp.array([-0.8])) - chi)) > 1e-4


def test_the_wavefunction_with_it_starts_as_the_one_without():
    system = System(Supercell.diagonal(2), n_up=3, n_down=1, coupling=2.0, phase=PHASE)
    plain = make_wavefunction(system, {"preset": "tiny"}, ((0.0, 10.0),))
    with_chi = make_wavefunction(system, {"preset": "tiny", "one_body_jastrow": True}, ((0.0, 10.0),))
    key = jax.random.PRNGKey(0)
    p0, p1 = plain.init(key), with_chi.init(key)
    assert "one_body_jastrow" in p1["params"] and "one_body_jastrow" not in p0["params"]
    x = jax.random.uniform(jax.random.PRNGKey(1), (4, 2)) * 2.0
    for depth in (0.0, 4.0, 10.0):
        c = jnp.array([depth])
        np.testing.assert_allclose(with_chi.log_psi(p1, x, c), plain.log_psi(p0, x, c), rtol=1e-6)
