"""Exact sampling of a Slater determinant (qernel.determinant_sampling), against the definition.

On M discrete points the probability that a draw occupies the set S (|S| = n) is, by the
Cauchy–Binet formula, |det Φ_S|² / det(Φ†Φ): computed here by brute force over every S and
compared with the frequencies of many draws (a chi-square test that fails for a wrong
conditioning step, which would e.g. allow double occupancy or weight the sets wrongly).
"""

from __future__ import annotations

import itertools

import jax
import numpy as np
import pytest
from scipy import stats

from qernel.bands import noninteracting_ground_state
from qernel.determinant_sampling import determinant_positions, grid_points, plane_wave_orbitals, sample_determinant
from qernel.lattice import MOIRE_LATTICE, Supercell
from qernel.system import System


def test_set_frequencies_follow_the_squared_determinant():
    rng = np.random.default_rng(3)
    m, n, draws = 7, 3, 6000
    phi = rng.normal(size=(m, n)) + 1j * rng.normal(size=(m, n))  # not orthonormal: the sampler must not care
    points = np.stack([np.arange(m, dtype=float), np.zeros(m)], axis=1)
    pos = sample_determinant(jax.random.PRNGKey(0), phi, points, np.zeros((2, 2)), draws)
    idx = np.sort(pos[..., 0].round().astype(int), axis=1)
    assert np.all(np.diff(idx, axis=1) > 0), "two electrons drawn on one point: the determinant vanishes there"
    subsets = list(itertools.combinations(range(m), n))
    norm = np.linalg.det(phi.conj().T @ phi).real
    exact = np.array([abs(np.linalg.det(phi[list(s)])) ** 2 for s in subsets]) / norm
    assert exact.sum() == pytest.approx(1.0, abs=1e-12)  # Cauchy–Binet
    code = {s: i for i, s in enumerate(subsets)}
    counts = np.bincount([code[tuple(r)] for r in idx], minlength=len(subsets))
    chi2 = np.sum((counts - draws * exact) ** 2 / (draws * exact))
    assert stats.chi2.sf(chi2, len(subsets) - 1) > 1e-3, f"chi2 = {chi2:.1f} over {len(subsets) - 1} dof"


def test_deep_potential_walkers_start_one_per_minimum():
    """λ = 0, V = 10 E_M, 4 holes in 2×2 (one per moiré cell): the filled lowest band is a band
    insulator that puts one hole in each potential minimum up to the Wannier functions' tails
    (measured: 0.92 of the draws); a uniform start does so with probability 4!/4⁴ ≈ 0.09."""
    system = System(Supercell.diagonal(2), n_up=4, n_down=0, coupling=0.0, phase=np.deg2rad(45.0))
    gs = noninteracting_ground_state(system, 10.0)
    c = np.stack([gs.bands.coefficients[ik, :, ib] for ik, ib in gs.occupied_up], axis=1)
    k = gs.bands.kpoints[[ik for ik, _ in gs.occupied_up]]

    def orbitals(points, depth):
        return plane_wave_orbitals(points, gs.bands.gvectors, k, c), np.zeros((len(points), 0))

    pos = determinant_positions(jax.random.PRNGKey(1), system, orbitals, np.full(200, 10.0))
    assert pos.shape == (200, 4, 2)
    points, _ = grid_points(system.supercell)
    density = np.abs(orbitals(points, 10.0)[0]) ** 2
    minima = points[np.argsort(density.sum(1))[-1:]]  # the density maximum: a potential minimum
    # the four minima are that point's images under the moiré lattice translations
    sites = system.supercell.wrap(minima + np.array([[0, 0], [1, 0], [0, 1], [1, 1]]) @ MOIRE_LATTICE)
    shifts = np.array([[i, j] for i in (-1, 0, 1) for j in (-1, 0, 1)]) @ system.supercell.lattice
    diff = pos[:, :, None, None, :] - sites[None, None, :, None, :] - shifts[None, None, None]
    d = np.linalg.norm(diff, axis=-1).min(axis=-1)  # (W, N, sites): Cartesian minimum-image distances
    nearest = np.argmin(d, axis=-1)
    one_per_site = np.all(np.sort(nearest, axis=1) == np.arange(4), axis=1)
    assert one_per_site.mean() > 0.8, f"only {one_per_site.mean():.2f} of the walkers have one hole per minimum"


def test_training_start_draws_each_walker_at_its_own_depth():
    """qernel.train.start_walkers on a grid of (V, λ) points: walker w (group w mod D) is drawn from
    the determinant at its group's depth (here two one-orbital 'determinants' on disjoint halves of
    the cell, one per depth), from the targets when given, else from the model's prior; a model
    without a prior keeps its walkers."""
    import types

    import jax.numpy as jnp

    from qernel.conditions import ConditionGrid
    from qernel.mcmc import init_walkers
    from qernel.train import TrainState, start_walkers

    system = System(Supercell.diagonal(2), n_up=1, n_down=0, coupling=1.0, phase=np.deg2rad(45.0))
    grid = ConditionGrid(("depth", "coupling"), np.array([[1.0, 1.0], [4.0, 1.0]]), ("a", "b"))
    group = np.arange(8) % 2
    mcmc = init_walkers(jax.random.PRNGKey(0), system, jnp.asarray(grid.values[group]), group, 2)
    state = TrainState(None, None, mcmc, jnp.zeros((), jnp.int32), jnp.zeros(2))

    def half(points, depth):  # an orbital living on one half of the cell (fractional x < 1/2 at V = 1)
        frac = points @ np.linalg.inv(system.supercell.lattice)
        left = frac[:, 0] < 0.5
        return (np.where(left if depth == 1.0 else ~left, 1.0, 0.0)[:, None].astype(complex),
                np.zeros((len(points), 0)))

    def side(s):
        return (np.asarray(s.mcmc.positions)[:, 0] @ np.linalg.inv(system.supercell.lattice))[:, 0] < 0.5

    prior = types.SimpleNamespace(start_orbitals=half)
    drawn = start_walkers(state, system, prior, None, grid, jax.random.PRNGKey(1), log=lambda m: None)
    np.testing.assert_array_equal(side(drawn), group == 0)
    targets = types.SimpleNamespace(orbital_values=lambda p, v: half(p, 5.0 - v))  # the other halves
    drawn = start_walkers(state, system, prior, targets, grid, jax.random.PRNGKey(1), log=lambda m: None)
    np.testing.assert_array_equal(side(drawn), group == 1)
    bare = types.SimpleNamespace(start_orbitals=None)
    kept = start_walkers(state, system, bare, None, grid, jax.random.PRNGKey(1), log=lambda m: None)
    np.testing.assert_array_equal(np.asarray(kept.mcmc.positions), np.asarray(mcmc.positions))
