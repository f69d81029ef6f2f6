"""Metropolis–Hastings: the sampled one-body density of a known wavefunction is the exact one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qernel.bands import exact_density
from qernel.lattice import MOIRE_LATTICE
from qernel.mcmc import init_walkers, make_mcmc_step
from qernel.pretrain import _ground_state, make_targets

DEPTHS = (1.0, 3.0)
N_BINS = 6
SHELLS = 4.0  # plane-wave cutoff of the test wavefunction (its exact density uses the same)


def _exact_bin_fractions(system, depth, n_sub=8):
    """Fraction of the electrons in each (N_BINS × N_BINS) bin of the moiré cell (fractional coords)."""
    gs = _ground_state(system, depth, SHELLS)
    u = (np.arange(N_BINS * n_sub) + 0.5) / (N_BINS * n_sub)
    f = np.stack(np.meshgrid(u, u, indexing="ij"), axis=-1).reshape(-1, 2)
    r = f @ MOIRE_LATTICE
    trans = system.supercell.moire_translations
    rho = np.mean([exact_density(gs, r + t) for t in trans], axis=0) * len(trans)  # folded density
    cell_area = abs(np.linalg.det(MOIRE_LATTICE))
    mass = rho.reshape(N_BINS, n_sub, N_BINS, n_sub).sum(axis=(1, 3)) * cell_area / (N_BINS * n_sub) ** 2
    return mass.ravel() / system.n_electrons


def _sample_histograms(system, log_psi, n_walkers=512, n_blocks=40, seed=0):
    group = np.arange(n_walkers) % len(DEPTHS)
    cond = jnp.asarray(np.asarray(DEPTHS)[group][:, None])
    state = init_walkers(jax.random.PRNGKey(seed), system, cond, group, len(DEPTHS), width=0.3)
    step = jax.jit(make_mcmc_step(log_psi, system, n_steps=10, target_acceptance=0.5))
    inv = np.linalg.inv(MOIRE_LATTICE)

    @jax.jit
    def histogram(x):
        f = x @ jnp.asarray(inv)
        f = f - jnp.floor(f)
        idx = jnp.clip((f * N_BINS).astype(jnp.int32), 0, N_BINS - 1)
        flat = idx[..., 0] * N_BINS + idx[..., 1]  # (W, N)
        return jax.nn.one_hot(flat, N_BINS * N_BINS).mean(axis=1)  # (W, bins): fraction per walker

    for i in range(20):  # burn-in, widths adapt
        state = step(None, state, jax.random.PRNGKey(1000 + i))
    hist = np.zeros((n_walkers, N_BINS * N_BINS))
    for i in range(n_blocks):
        state = step(None, state, jax.random.PRNGKey(i))
        hist += np.asarray(histogram(state.positions))
    return state, group, hist / n_blocks


def test_sampled_density_matches_exact_density(band_system, x64):
    targets = make_targets(band_system, DEPTHS, shells=SHELLS)
    assert targets.closed_shell.all()
    state, group, hist = _sample_histograms(band_system, targets.log_psi)
    # walkers stay in the supercell, acceptance is adapted per depth, deeper potential → smaller steps
    frac = np.asarray(state.positions) @ np.linalg.inv(band_system.supercell.lattice)
    assert frac.min() >= 0.0 and frac.max() < 1.0
    np.testing.assert_allclose(state.acceptance, 0.5, atol=0.1)
    assert state.width[1] < state.width[0]
    for d, depth in enumerate(DEPTHS):
        h = hist[group == d]  # independent walkers: per-walker time averages
        mean, err = h.mean(axis=0), h.std(axis=0, ddof=1) / np.sqrt(len(h))
        exact = _exact_bin_fractions(band_system, depth)
        z = (mean - exact) / err
        chi2 = float(np.sum(z**2)) / (len(z) - 1)
        print(f"V={depth}: chi2/dof = {chi2:.2f}, max |z| = {np.abs(z).max():.2f}")
        assert chi2 < 2.0 and np.abs(z).max() < 5.0
        # the check has power: the density is far from uniform at these depths
        assert np.sum(((1.0 / len(z) - exact) / err) ** 2) / (len(z) - 1) > 50


def test_sampling_the_wrong_distribution_is_detected(band_system, x64):
    """Negative control: sampling |ψ| instead of |ψ|² fails the same check."""
    targets = make_targets(band_system, DEPTHS, shells=SHELLS)
    half = lambda params, x, cond: 0.5 * targets.log_psi(params, x, cond)
    _, group, hist = _sample_histograms(band_system, half, n_walkers=256, n_blocks=20, seed=1)
    h = hist[group == 1]
    z = (h.mean(axis=0) - _exact_bin_fractions(band_system, DEPTHS[1])) / (h.std(axis=0, ddof=1) / np.sqrt(len(h)))
    assert float(np.sum(z**2)) / (len(z) - 1) > 5.0


def test_site_hops_weight_separated_minima_by_psi_squared():
    """One electron, |ψ|² four narrow Gaussians on the moiré sites of a 2×2 supercell with weights
    0.1 … 0.4 (their overlap is e^-75): every walker starts on the first site. The Gaussian moves
    alone never leave it; with site hops the fraction of walkers on each site is the exact weight."""
    from qernel.lattice import Supercell
    from qernel.mcmc import HOP_VECTORS
    from qernel.model.features import periodic_distance_squared
    from qernel.system import System

    system = System(Supercell.diagonal(2), n_up=1, n_down=0, coupling=0.0, phase=0.0)
    sites = jnp.asarray([[0.0, 0.0], MOIRE_LATTICE[0], MOIRE_LATTICE[1], MOIRE_LATTICE[0] + MOIRE_LATTICE[1]])
    weights = np.array([0.1, 0.2, 0.3, 0.4])
    width = 0.06

    def log_psi(params, x, cond):
        d2 = periodic_distance_squared(x[0][None, :] - sites, system.supercell)  # (4,)
        return 0.5 * jnp.log(jnp.sum(jnp.asarray(weights) * jnp.exp(-d2 / (2 * width**2))))

    h = HOP_VECTORS
    assert np.allclose(np.hypot(*h.T), 1.0) and np.allclose(np.sort(h, axis=0), np.sort(-h, axis=0))  # ±, shortest
    n = 1024
    fractions = {}
    for hops in (0, 2):
        state = init_walkers(jax.random.PRNGKey(0), system, jnp.zeros((n, 1)), width=0.05)
        state = state._replace(positions=jnp.zeros((n, 1, 2)) + 1e-3)
        step = jax.jit(make_mcmc_step(log_psi, system, n_steps=5, target_acceptance=0.5, hop_moves=hops))
        for i in range(40):
            state = step(None, state, jax.random.PRNGKey(i))
        d2 = jax.vmap(lambda x: periodic_distance_squared(x[0][None, :] - sites, system.supercell))(state.positions)
        fractions[hops] = np.bincount(np.asarray(jnp.argmin(d2, axis=1)), minlength=4) / n
    assert fractions[0][0] == 1.0  # stuck: the barrier is never crossed by the Gaussian moves
    tol = 4 * np.sqrt(weights * (1 - weights) / n)
    assert np.all(np.abs(fractions[2] - weights) < tol), (fractions[2], weights)
