"""Periodic input features and the smooth periodic distance."""

import jax
import jax.numpy as jnp
import numpy as np

from qernel.lattice import MOIRE_RECIPROCAL, Supercell
from qernel.model.features import (feature_vectors, half_space, one_electron_features, periodic_distance,
                                   periodic_distance_squared, shells)


def test_shells_of_the_triangular_lattice():
    # the triangular lattice has shells of 6, 6, 6, 12 points at |b|·(1, √3, 2, √7)
    g = shells(MOIRE_RECIPROCAL, 4)
    norms = np.linalg.norm(g, axis=1) / np.linalg.norm(MOIRE_RECIPROCAL[0])
    assert len(g) == 30
    np.testing.assert_allclose(np.unique(np.round(norms, 8)), [1, np.sqrt(3), 2, np.sqrt(7)], rtol=1e-8)


def test_feature_vectors_are_supercell_reciprocal_half_space():
    sc = Supercell(((3, 1), (-1, 2)))
    g = feature_vectors(sc, 2, 1)
    n = g @ sc.lattice.T / (2 * np.pi)
    np.testing.assert_allclose(n, np.round(n), atol=1e-9)
    # no ±G duplicates, and the moiré first shell is represented (by one of each pair)
    for i in range(len(g)):
        for j in range(len(g)):
            assert not np.allclose(g[i], -g[j])
    for b in shells(MOIRE_RECIPROCAL, 1):
        assert any(np.allclose(b, v) or np.allclose(-b, v) for v in g)
    assert len(half_space(np.concatenate([g, -g]))) == len(g)


def test_k_point_features_where_the_supercell_allows_them():
    k = 4 * np.pi / 3 * np.array([1.0, 0.0])  # a moiré zone corner K
    has_k = lambda g: any(np.allclose(k, v) or np.allclose(-k, v) for v in g)
    # 6×6 supercell: K is a supercell reciprocal vector (outside the first 2 shells)
    assert has_k(feature_vectors(Supercell.diagonal(6), 2, 1))
    assert not has_k(feature_vectors(Supercell.diagonal(6), 2, 1, k_points=False))
    # 2×2 supercell: K is not (thirds are needed), so it is left out
    assert not has_k(feature_vectors(Supercell.diagonal(2), 2, 1))


def test_features_are_periodic_and_smooth(x64):
    sc = Supercell.diagonal(3)
    g = feature_vectors(sc, 2, 1)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 2)))
    for shift in sc.lattice:
        np.testing.assert_allclose(one_electron_features(x + shift, g), one_electron_features(x, g), atol=1e-12)


def test_periodic_distance(x64):
    sc = Supercell(((2, 1), (0, 3)))
    rng = np.random.default_rng(1)
    # ≈ |r| near zero
    r = jnp.asarray(1e-3 * rng.normal(size=(10, 2)))
    np.testing.assert_allclose(periodic_distance(r, sc), np.linalg.norm(r, axis=1), rtol=1e-5)
    # periodic, symmetric, zero exactly on the lattice, positive elsewhere
    r = jnp.asarray(rng.normal(size=(10, 2)))
    for shift in sc.lattice:
        np.testing.assert_allclose(periodic_distance_squared(r + shift, sc), periodic_distance_squared(r, sc),
                                   rtol=1e-12)
    np.testing.assert_allclose(periodic_distance_squared(-r, sc), periodic_distance_squared(r, sc), rtol=1e-12)
    lat = jnp.asarray(np.array([[1, 0], [0, 1], [2, -1]]) @ sc.lattice)
    np.testing.assert_allclose(periodic_distance_squared(lat, sc), 0.0, atol=1e-12)
    assert float(jnp.min(periodic_distance_squared(r, sc))) > 0
    # smooth: the gradient of d² is continuous across the cell boundary (no minimum-image kink)
    grad = jax.vmap(jax.grad(lambda v: periodic_distance_squared(v, sc)))
    edge = 0.5 * sc.lattice[0]
    step = 1e-7 * sc.lattice[0]
    np.testing.assert_allclose(grad(jnp.asarray([edge - step])), grad(jnp.asarray([edge + step])), atol=1e-5)
