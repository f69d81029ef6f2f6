"""Structure factor and pair correlation: random particles and perfect crystals (analytic values)."""

import numpy as np
import pytest

from qernel.lattice import MOIRE_LATTICE, MOIRE_RECIPROCAL, Supercell
from qernel.observables import (K_POINT_NORM, PairCorrelationAccumulator, StructureFactorAccumulator,
                                default_kvectors, ordering_vector_mask, rho_k)

SC3 = Supercell.diagonal(3)


def moire_sites(supercell):
    """Moiré lattice sites in the supercell (n_cells, 2) and their integer coordinates (n1, n2)."""
    t = supercell.moire_translations
    n = np.rint(t @ MOIRE_RECIPROCAL.T / (2 * np.pi)).astype(int)
    return t, n


def on_lattice(k, basis):
    """True where k·A ∈ 2πZ for both rows A of `basis` (k in the reciprocal lattice of `basis`)."""
    f = k @ np.asarray(basis).T / (2 * np.pi)
    return np.all(np.abs(f - np.rint(f)) < 1e-8, axis=-1)


def crystal_walkers(sites, offset, t=3, w=4):
    """(t, w, N, 2): every walker at the same crystal configuration."""
    x = sites + offset
    return np.broadcast_to(x, (t, w) + x.shape).copy()


def test_default_kvectors_and_ordering_vectors():
    k = default_kvectors(SC3)
    assert len(k) > 100 and not np.any(np.all(k == 0, axis=-1))
    assert np.max(np.linalg.norm(k, axis=-1)) <= 2 * 4 * np.pi / np.sqrt(3) + 1e-9
    mask = ordering_vector_mask(k)
    assert mask.sum() == 6
    np.testing.assert_allclose(np.linalg.norm(k[mask], axis=-1), K_POINT_NORM)
    assert ordering_vector_mask(default_kvectors(Supercell.diagonal(2))).sum() == 0
    assert ordering_vector_mask(default_kvectors(Supercell.diagonal(6))).sum() == 6


def test_rho_k_definition():
    x = np.random.default_rng(0).random((4, 3, 2))
    k = default_kvectors(SC3)[:7]
    direct = np.exp(-1j * np.einsum("...nd,kd->...nk", x, k)).sum(-2)
    np.testing.assert_allclose(np.asarray(rho_k(x, k)), direct, atol=1e-5)


def test_uniform_random_particles_give_one():
    """Uncorrelated uniform particles: S(k) = 1 for every k ≠ 0 (in particular at large |k|)."""
    rng = np.random.default_rng(7)
    acc = StructureFactorAccumulator(SC3)
    for _ in range(4):
        acc.update(SC3.to_cart(rng.random((100, 32, 6, 2))))
    res = acc.result()
    for s, err in [(res.structure_factor, res.structure_factor_stderr),
                   (res.structure_factor_uncorrected, res.structure_factor_uncorrected_stderr)]:
        z = (s - 1.0) / err
        assert np.max(np.abs(z)) < 5
        # S(k) = S(−k): ~60 independent values, so mean z² scatters by ≈ 0.2-0.25 around 1
        assert 0.5 < np.mean(z**2) < 1.8
    large = np.linalg.norm(res.kvectors, axis=-1) > 1.5 * 4 * np.pi / np.sqrt(3)
    assert large.sum() > 30
    assert abs(np.mean(res.structure_factor[large]) - 1.0) < 0.05


def test_triangular_wigner_lattice():
    """One electron per moiré cell: (1/N)|ρ_k|² = N at the moiré reciprocal vectors, 0 elsewhere;
    the connected S(k) vanishes for a pinned crystal."""
    sites, _ = moire_sites(SC3)
    acc = StructureFactorAccumulator(SC3).update(crystal_walkers(sites, np.array([0.13, 0.27])))
    res = acc.result()
    n = len(sites)
    bragg = on_lattice(res.kvectors, MOIRE_LATTICE)
    assert bragg.sum() >= 18  # the first three moiré shells
    expected = np.where(bragg, n, 0.0)
    np.testing.assert_allclose(res.structure_factor_uncorrected, expected, atol=1e-4)
    np.testing.assert_allclose(res.structure_factor, 0.0, atol=1e-4)
    np.testing.assert_allclose(np.abs(res.rho_mean), expected, atol=1e-4)


def test_sliding_wigner_lattice_connected_peak():
    """A crystal translated at random in every sample (no pinning): ⟨ρ_G⟩ = 0, so the connected
    S(G) = N too, within its error bar; S = 0 off the Bragg vectors."""
    sites, _ = moire_sites(SC3)
    rng = np.random.default_rng(3)
    x = sites + SC3.to_cart(rng.random((400, 32, 1, 2)))
    res = StructureFactorAccumulator(SC3).update(x).result()
    bragg = on_lattice(res.kvectors, MOIRE_LATTICE)
    n = len(sites)
    z = (res.structure_factor[bragg] - n) / res.structure_factor_stderr[bragg]
    assert np.max(np.abs(z)) < 5
    np.testing.assert_allclose(res.structure_factor[bragg], n, rtol=0.01)
    np.testing.assert_allclose(res.structure_factor[~bragg], 0.0, atol=1e-4)


@pytest.mark.parametrize("pattern", ["sqrt3", "honeycomb"])
def test_generalised_wigner_crystals(pattern):
    """√3×√3 (ν = 1/3) and honeycomb (ν = 2/3) crystals in the 3×3 cell, closed forms:
    √3×√3: S = N = 3 at its reciprocal lattice (moiré G and the K points), 0 elsewhere;
    honeycomb = triangular − √3×√3: S = N = 6 at moiré G, |−3|²/6 = 3/2 at K, 0 elsewhere."""
    sites, n12 = moire_sites(SC3)
    sub = (n12[:, 0] - n12[:, 1]) % 3 == 0
    chosen = sites[sub] if pattern == "sqrt3" else sites[~sub]
    res = StructureFactorAccumulator(SC3).update(crystal_walkers(chosen, np.array([0.31, -0.05]))).result()
    k = res.kvectors
    moire_g = on_lattice(k, MOIRE_LATTICE)
    sqrt3_lattice = np.array([MOIRE_LATTICE[0] + MOIRE_LATTICE[1], 2 * MOIRE_LATTICE[0] - MOIRE_LATTICE[1]])
    sqrt3_g = on_lattice(k, sqrt3_lattice)
    kpts = ordering_vector_mask(k)
    assert np.all(sqrt3_g[kpts]) and kpts.sum() == 6
    if pattern == "sqrt3":
        expected = np.where(sqrt3_g, 3.0, 0.0)
    else:
        expected = np.where(moire_g, 6.0, np.where(sqrt3_g, 1.5, 0.0))
    np.testing.assert_allclose(res.structure_factor_uncorrected, expected, atol=1e-4)
    np.testing.assert_allclose(res.structure_factor_uncorrected[kpts], 3.0 if pattern == "sqrt3" else 1.5, atol=1e-4)


def test_chunking_and_batching_do_not_change_results():
    rng = np.random.default_rng(1)
    x = SC3.to_cart(rng.random((20, 10, 6, 2)))
    a = StructureFactorAccumulator(SC3).update(x).result()
    b = StructureFactorAccumulator(SC3, max_elements=5000)
    for i in range(0, 20, 3):
        b.update(x[i:i + 3])
    b = b.result()
    np.testing.assert_allclose(b.structure_factor, a.structure_factor, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b.structure_factor_stderr, a.structure_factor_stderr, rtol=1e-4, atol=1e-7)


def test_pair_correlation_uniform_and_lattice():
    rng = np.random.default_rng(5)
    acc = PairCorrelationAccumulator(SC3, n_bins=10)
    assert acc.r_max == pytest.approx(1.5)
    res = acc.update(SC3.to_cart(rng.random((400, 16, 6, 2)))).result()
    z = (res.pair_correlation - 1.0) / res.pair_correlation_stderr
    assert np.max(np.abs(z)) < 5 and np.mean(z**2) < 3.0  # 10 bins: mean z² = 1 ± 0.45

    sites, _ = moire_sites(SC3)  # 9 electrons: 6 neighbours at r = 1, the rest beyond r_max
    lat = PairCorrelationAccumulator(SC3, n_bins=10).update(crystal_walkers(sites, np.array([0.2, 0.1]))).result()
    edges = np.linspace(0, 1.5, 11)
    b = np.searchsorted(edges, 1.0) - 1
    n = len(sites)
    expected = np.zeros(10)
    expected[b] = SC3.area / (n * (n - 1)) * 6 * n / (np.pi * (edges[b + 1] ** 2 - edges[b] ** 2))
    np.testing.assert_allclose(lat.pair_correlation, expected, rtol=1e-5)
    with pytest.raises(ValueError):
        PairCorrelationAccumulator(SC3, r_max=2.0)
