"""One-body density: normalisation to ν and agreement with the exact λ = 0 density."""

import numpy as np

from qernel.bands import exact_density, noninteracting_ground_state
from qernel.lattice import MOIRE_LATTICE, Supercell
from qernel.observables import MOIRE_CELL_AREA, DensityAccumulator, moire_fractional
from qernel.system import System


def uniform_positions(rng, supercell, shape):
    return supercell.to_cart(rng.random(shape + (2,)))


def test_density_integrates_to_filling():
    sc = Supercell.diagonal(3)
    rng = np.random.default_rng(0)
    acc = DensityAccumulator(sc, cell_bins=(10, 14))
    for _ in range(5):
        acc.update(uniform_positions(rng, sc, (80, 32, 6)))  # (T, W, N) batches
    res = acc.result()
    assert res.density.shape == (10, 14) and res.supercell_density.shape == (30, 42)
    np.testing.assert_allclose(res.density.mean() * np.sqrt(3) / 2, 6 / 9, rtol=1e-12)
    np.testing.assert_allclose(res.density.mean() * MOIRE_CELL_AREA, res.filling, rtol=1e-12)
    np.testing.assert_allclose(res.supercell_density.mean() * sc.area, 6, rtol=1e-12)
    np.testing.assert_allclose(res.x, (np.arange(10) + 0.5) / 10)
    assert res.n_steps == 400
    # uniform particles: a flat density ν/(√3/2), within the error bars
    z = (res.density - res.filling / MOIRE_CELL_AREA) / res.density_stderr
    assert np.max(np.abs(z)) < 5


def test_single_step_and_batched_updates_agree():
    sc = Supercell(((2, 1), (0, 2)))  # a non-diagonal supercell
    x = uniform_positions(np.random.default_rng(1), sc, (6, 4, 3))
    a = DensityAccumulator(sc, (8, 8)).update(x).result()
    b = DensityAccumulator(sc, (8, 8))
    for step in x:
        b.update(step)  # (W, N, 2)
    b = b.result()
    np.testing.assert_allclose(a.density, b.density, rtol=1e-12)
    np.testing.assert_allclose(a.supercell_density, b.supercell_density, rtol=1e-12)
    np.testing.assert_allclose(a.density.mean() * MOIRE_CELL_AREA, 3 / 4)


def test_folding_uses_moire_lattice():
    r = np.array([[0.25, 0.0], [1.25, 0.0], [0.75, np.sqrt(3) / 2], [-0.75, 0.0]])
    f = moire_fractional(r)
    np.testing.assert_allclose(f[:3], [[0.25, 0.0]] * 3, atol=1e-12)
    np.testing.assert_allclose(f[3], [0.25, 0.0], atol=1e-12)


def rejection_sample(rng, gs, supercell, n, rho_max, chunk=40_000):
    """n positions drawn independently from ρ(r)/N on the supercell (exact rejection sampling)."""
    out = []
    total = 0
    while total < n:
        r = supercell.to_cart(rng.random((chunk, 2)))
        rho = exact_density(gs, r)
        assert rho.max() < rho_max, "the rejection bound must dominate the density"
        keep = r[rng.random(chunk) * rho_max < rho]
        out.append(keep)
        total += len(keep)
    return np.concatenate(out)[:n]


def bin_average(gs, lattice, bins, order=8):
    """Exact average of ρ over each bin of the fractional grid of `lattice` (Gauss–Legendre)."""
    nodes, weights = np.polynomial.legendre.leggauss(order)
    nodes, weights = 0.5 * (nodes + 1), 0.5 * weights
    nx, ny = bins
    fx = (np.arange(nx)[:, None] + nodes[None, :]) / nx  # (nx, order)
    fy = (np.arange(ny)[:, None] + nodes[None, :]) / ny
    f = np.stack(np.broadcast_arrays(fx[:, None, :, None], fy[None, :, None, :]), axis=-1)
    rho = exact_density(gs, f @ lattice)  # (nx, ny, order, order)
    return np.einsum("ijab,a,b->ij", rho, weights, weights)


def test_histogram_matches_exact_noninteracting_density():
    """Positions with the one-body density of the exact λ = 0 ground state (6 holes in 3×3,
    ν = 2/3): the histogram equals the exact bin averages within its error bars.

    The density is a one-body observable, so sampling every electron independently from
    ρ(r)/N has the same expectation as sampling |ψ|² (only the correlations differ).
    """
    sc = Supercell.diagonal(3)
    system = System(sc, n_up=6, coupling=0.0, phase=np.pi / 4)
    gs = noninteracting_ground_state(system, depth=3.0, shells=3.0)
    fine = sc.to_cart(np.stack(np.meshgrid(*(2 * [np.linspace(0, 1, 121)]), indexing="ij"), -1))
    rho_max = 1.3 * exact_density(gs, fine).max()
    # sanity of the reference itself: ∫ρ = N and the density is moiré-periodic
    assert abs(bin_average(gs, sc.lattice, (12, 12)).mean() * sc.area - 6) < 1e-8
    probe = np.random.default_rng(9).random((50, 2)) @ sc.lattice
    np.testing.assert_allclose(exact_density(gs, probe + MOIRE_LATTICE[0] + 2 * MOIRE_LATTICE[1]),
                               exact_density(gs, probe), rtol=1e-9)

    t, w, n = 500, 64, 6
    rng = np.random.default_rng(2024)
    x = rejection_sample(rng, gs, sc, t * w * n, rho_max).reshape(t, w, n, 2)
    acc = DensityAccumulator(sc, cell_bins=(12, 12), supercell_bins=(18, 18))
    for i in range(0, t, 100):
        acc.update(x[i:i + 100])
    res = acc.result()

    np.testing.assert_allclose(res.density.mean() * np.sqrt(3) / 2, 2 / 3, rtol=1e-12)
    # mean z² over n bins scatters by ≈ √(2/n) (0.12 for 144 bins, 0.08 for 324) around 1
    for est, err, exact, band in [
        (res.density, res.density_stderr, bin_average(gs, MOIRE_LATTICE, (12, 12)), (0.6, 1.5)),
        (res.supercell_density, res.supercell_density_stderr, bin_average(gs, sc.lattice, (18, 18)), (0.75, 1.3)),
    ]:
        assert exact.max() / exact.min() > 5  # a strongly modulated density: a real test
        z = (est - exact) / err
        assert np.max(np.abs(z)) < 5.0
        assert band[0] < np.mean(z**2) < band[1]  # error bars neither too small nor too large
