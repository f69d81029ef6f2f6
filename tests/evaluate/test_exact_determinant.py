"""The λ = 0 exact determinant: zero-variance energy and the exact one-body density.

`sample_observables` samples |ψ|² of `qernel.bands.slater_log_psi` (no checkpoint involved);
`compute_observables` reblocks the per-step series. The determinant is an exact eigenstate, so
every local energy equals Σ occupied Bloch levels, and its density is `qernel.bands.exact_density`.
"""

import jax
import numpy as np
import pytest

from qernel import io as qio
from qernel.bands import exact_density, noninteracting_ground_state, slater_log_psi
from qernel.evaluate import EvalConfig, sample_observables
from qernel.lattice import MOIRE_LATTICE
from qernel.observables import MOIRE_CELL_AREA, compute_observables

DEPTH = 3.0
BINS = 6
SUPER_BINS_PER_CELL = 3


def bin_average(gs, lattice, bins, order=6):
    """Exact mean of ρ over each bin of the fractional grid of `lattice` (Gauss–Legendre)."""
    nodes, weights = np.polynomial.legendre.leggauss(order)
    nodes, weights = 0.5 * (nodes + 1), 0.5 * weights
    nx, ny = bins
    fx = (np.arange(nx)[:, None] + nodes[None, :]) / nx
    fy = (np.arange(ny)[:, None] + nodes[None, :]) / ny
    f = np.stack(np.broadcast_arrays(fx[:, None, :, None], fy[None, :, None, :]), axis=-1)
    return np.einsum("ijab,a,b->ij", exact_density(gs, f @ lattice), weights, weights)


@pytest.fixture(scope="module")
def exact_run(holes_3x3, tmp_path_factory):
    system = holes_3x3
    gs = noninteracting_ground_state(system, DEPTH)
    cfg = EvalConfig.from_dict({"samples": 32 * 128, "batch_size": 32, "mcmc_steps": 10, "burn_in": 100,
                                "density_bins": BINS, "supercell_density_bins": 3 * SUPER_BINS_PER_CELL,
                                "structure_factor_shells": 1.0, "pair_correlation_bins": 8,
                                "dtype": "float64"})
    with jax.enable_x64(True):
        ds = sample_observables(system, slater_log_psi(gs, system.n_up), None, DEPTH, cfg, jax.random.PRNGKey(3))
    folder = tmp_path_factory.mktemp("exact")
    qio.write_netcdf(ds, folder / "evaluation.nc", qio.provenance_attrs({"test": "exact"}, "test"))
    obs = compute_observables(folder / "evaluation.nc", folder / "observables.nc")
    return system, gs, cfg, ds, obs


def test_energy_is_exact_with_zero_variance(exact_run):
    system, gs, cfg, ds, obs = exact_run
    e0 = gs.energy / system.n_electrons
    assert ds.sizes["step"] == cfg.n_steps == 128
    np.testing.assert_allclose(ds["energy"].values, e0, rtol=0, atol=1e-8)  # every step's walker mean
    assert np.max(ds["local_energy_variance"].values) < 1e-20  # every walker has the same E_L
    np.testing.assert_array_equal(ds["interaction_energy"].values, 0.0)
    # components add up to the total at every step; the parts themselves fluctuate
    parts = ds["kinetic_energy"] + ds["potential_energy"] + ds["interaction_energy"]
    np.testing.assert_allclose(parts.values, ds["energy"].values, rtol=0, atol=1e-12)
    assert np.std(ds["kinetic_energy"].values) > 1e-3
    assert abs(float(obs["energy"]) - e0) < 1e-8
    assert float(obs["energy_stderr"]) < 1e-12 and float(obs["variance"]) < 1e-20
    assert 0.3 < float(ds["acceptance"].mean()) < 0.7
    # the kinetic and moiré parts carry honest error bars that add to zero for the total
    assert float(obs["kinetic_energy_stderr"]) > 1e-4
    assert abs(float(obs["kinetic_energy"] + obs["potential_energy"]) - e0) < 5 * float(obs["kinetic_energy_stderr"])


def test_density_matches_exact_within_error_bars(exact_run):
    system, gs, cfg, ds, obs = exact_run
    sc = system.supercell
    n = sc.matrix[0][0]
    fine = bin_average(gs, sc.lattice, (BINS * n, BINS * n))
    # fold the supercell bins onto the moiré cell: bin (i + BINS a, j + BINS b) ↦ (i, j) for S = diag(n, n)
    exact_cell = fine.reshape(n, BINS, n, BINS).mean(axis=(0, 2))
    m = SUPER_BINS_PER_CELL * n
    exact_super = bin_average(gs, sc.lattice, (m, m))
    assert exact_cell.max() / exact_cell.min() > 3  # a strongly modulated density: the test has power
    dens, err = obs["density"].values, obs["density_stderr"].values
    np.testing.assert_allclose(dens.mean() * MOIRE_CELL_AREA, system.filling, rtol=1e-12)  # integrates to ν
    np.testing.assert_allclose(obs["supercell_density"].values.mean() * sc.area, system.n_electrons, rtol=1e-12)
    for est, sigma, exact in ((dens, err, exact_cell),
                              (obs["supercell_density"].values, obs["supercell_density_stderr"].values, exact_super)):
        z = (est - exact) / sigma
        assert np.max(np.abs(z)) < 5.0
        assert 0.4 < np.mean(z**2) < 2.0  # error bars neither too small nor too large
    # the coordinates follow the schema: bin centres along a1, a2 and their cartesian positions
    np.testing.assert_allclose(obs["x"].values, (np.arange(BINS) + 0.5) / BINS)
    cart = np.stack([obs["cart_x"].values, obs["cart_y"].values], -1)
    u, v = np.meshgrid(obs["x"].values, obs["y"].values, indexing="ij")
    np.testing.assert_allclose(cart, np.stack([u, v], -1) @ MOIRE_LATTICE)


def test_structure_factor_and_pair_correlation_are_sane(exact_run):
    system, gs, cfg, ds, obs = exact_run
    s = obs["structure_factor"].values
    assert np.all(np.isfinite(s)) and np.all(obs["structure_factor_stderr"].values > 0)
    # spin-polarised free fermions: S(k) <= 1 (Pauli), within errors; ⟨|ρ_k|²⟩/N >= S(k) within errors
    assert np.all(s < 1 + 5 * obs["structure_factor_stderr"].values)
    assert np.all(obs["structure_factor_uncorrected"].values - s > -5 * obs["structure_factor_stderr"].values)
    g = obs["pair_correlation"].values
    assert g[0] < 0.2  # the exchange hole of same-spin fermions
    assert obs["energy_tau"].values > 0 and obs["n_eff"].values > 0
