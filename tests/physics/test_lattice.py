"""Lattice geometry against its definitions."""

import numpy as np
import pytest

from qernel.lattice import MOIRE_LATTICE, MOIRE_RECIPROCAL, Supercell, first_shell_vectors


def test_reciprocal_duality():
    np.testing.assert_allclose(MOIRE_LATTICE @ MOIRE_RECIPROCAL.T, 2 * np.pi * np.eye(2), atol=1e-12)
    sc = Supercell(((2, 1), (-1, 3)))
    np.testing.assert_allclose(sc.lattice @ sc.reciprocal.T, 2 * np.pi * np.eye(2), atol=1e-12)


def test_first_shell_are_reciprocal_vectors_at_120_degrees():
    g = first_shell_vectors()
    np.testing.assert_allclose(np.linalg.norm(g, axis=1), 4 * np.pi / np.sqrt(3))
    # Tolerances relative to the size of the terms summed: an entry of g @ aᵀ is a sum of products
    # of size up to |g||a| (7.3 here); float64 rounding (any BLAS summation order, FMA or not, and
    # the ulp errors of cos/sin in g2) is a few eps × |g||a| ~ 1e-15, so 1e-12 × |g||a| holds on
    # every machine while an absolute 1e-12 did not hold on every one (numpy 2.5, issue 14).
    scale = np.abs(g).max() * np.abs(MOIRE_LATTICE).max()
    np.testing.assert_allclose(g.sum(axis=0), 0, atol=1e-12 * scale)
    ints = g @ MOIRE_LATTICE.T / (2 * np.pi)  # integer coordinates in the b basis
    np.testing.assert_allclose(ints, np.round(ints), rtol=0, atol=1e-12 * scale / (2 * np.pi))
    cos = g[0] @ g[1] / np.linalg.norm(g[0]) ** 2
    assert cos == pytest.approx(-0.5)
    assert np.cross(g[0], g[1]) > 0  # g2 is g1 rotated by +120°


@pytest.mark.parametrize("matrix", [((1, 0), (0, 1)), ((3, 0), (0, 3)), ((2, 1), (-1, 3)), ((2, 0), (0, 3))])
def test_kpoints_are_distinct_allowed_momenta_in_the_bz(matrix):
    sc = Supercell(matrix)
    k = sc.kpoints
    assert k.shape == (sc.n_cells, 2)
    # allowed by periodic boundary conditions: exp(i k·L) = 1 for supercell vectors L
    np.testing.assert_allclose(np.exp(1j * k @ sc.lattice.T), 1.0, atol=1e-10)
    # distinct modulo the moiré reciprocal lattice
    f = k @ MOIRE_LATTICE.T / (2 * np.pi)
    keys = {tuple(np.round(np.mod(fi + 1e-9, 1.0), 6)) for fi in f}
    assert len(keys) == sc.n_cells
    # inside the first Brillouin zone: no moiré reciprocal vector gives a shorter image
    shifts = np.array([(i, j) for i in range(-2, 3) for j in range(-2, 3)]) @ MOIRE_RECIPROCAL
    for ki in k:
        assert np.linalg.norm(ki) <= np.linalg.norm(ki + shifts, axis=1).min() + 1e-9
    np.testing.assert_allclose(k[0], 0.0)


def test_3x3_kpoints_contain_the_k_points():
    k = Supercell.diagonal(3).kpoints
    norms = np.sort(np.linalg.norm(k, axis=1))
    # Γ, six M-direction points at |b|/3, and the two corners K, K' at 4π/3
    assert np.sum(np.isclose(norms, 4 * np.pi / 3)) == 2


def test_area_translations_and_wrap():
    sc = Supercell(((2, 1), (-1, 3)))
    assert sc.n_cells == 7
    assert sc.area == pytest.approx(7 * np.sqrt(3) / 2)
    assert len(sc.moire_translations) == 7
    rng = np.random.default_rng(0)
    r = rng.normal(scale=10, size=(50, 2))
    w = sc.wrap(r)
    f = sc.to_frac(w)
    assert np.all((f >= 0) & (f < 1))
    # wrapping moves by supercell lattice vectors only
    shift = sc.to_frac(r - w)
    np.testing.assert_allclose(shift, np.round(shift), atol=1e-9)
    np.testing.assert_allclose(sc.to_cart(sc.to_frac(r)), r, atol=1e-12)


def test_bad_matrix_is_rejected():
    with pytest.raises(ValueError, match="singular"):
        Supercell(((1, 2), (2, 4)))
    with pytest.raises(ValueError, match="integer"):
        Supercell(((1.5, 0), (0, 1)))
