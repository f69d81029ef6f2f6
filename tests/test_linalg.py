"""qernel.linalg.slogdet against LAPACK (numpy) and against determinants known in closed form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qernel.linalg import lu_slogdet, slogdet


@pytest.mark.parametrize("n", [1, 2, 5])
def test_matches_numpy_for_real_and_complex_batches(x64, n):
    rng = np.random.default_rng(n)
    for a in (rng.normal(size=(4, 3, n, n)), rng.normal(size=(4, 3, n, n)) + 1j * rng.normal(size=(4, 3, n, n))):
        s, l = slogdet(jnp.asarray(a))
        s0, l0 = np.linalg.slogdet(a)
        assert s.shape == l.shape == (4, 3)
        np.testing.assert_allclose(s, s0, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(l, l0, rtol=1e-12, atol=1e-12)


def test_closed_form_determinants(x64):
    # a permutation matrix: |det| = 1, sign = parity; the first pivot needs a row swap
    perm = np.eye(4)[[1, 0, 3, 2]]  # two swaps: even
    assert lu_slogdet(jnp.asarray(perm)) == pytest.approx((1.0, 0.0))
    assert lu_slogdet(jnp.asarray(np.eye(3)[[1, 0, 2]]))[0] == -1.0
    # Vandermonde: det = Π_{i<j} (x_j − x_i)
    x = np.array([0.5, -1.0, 2.0, 3.5])
    det = np.prod([x[j] - x[i] for i in range(4) for j in range(i + 1, 4)])
    s, l = lu_slogdet(jnp.asarray(np.vander(x, increasing=True)))
    assert s == np.sign(det) and l == pytest.approx(np.log(abs(det)), rel=1e-13)
    # a unitary (discrete Fourier) matrix: |det| = 1
    n = 5
    f = np.exp(-2j * np.pi * np.outer(range(n), range(n)) / n) / np.sqrt(n)
    assert lu_slogdet(jnp.asarray(f))[1] == pytest.approx(0.0, abs=1e-13)
    # singular: sign 0, log|det| = −inf, like LAPACK
    s, l = lu_slogdet(jnp.asarray([[1.0, 2.0], [2.0, 4.0]]))
    assert s == 0.0 and l == -np.inf


def test_derivatives_match_lapack(x64):
    rng = np.random.default_rng(5)
    for n in (1, 2, 5):
        b = jnp.asarray(rng.normal(size=(n, n)))
        f = lambda t: lu_slogdet(b + t * jnp.eye(n))[1]
        g = lambda t: jnp.linalg.slogdet(b + t * jnp.eye(n))[1]
        np.testing.assert_allclose(jax.jit(jax.grad(f))(0.3), jax.jit(jax.grad(g))(0.3), rtol=1e-10)
        np.testing.assert_allclose(jax.jit(jax.hessian(f))(0.3), jax.jit(jax.hessian(g))(0.3), rtol=1e-8)
    # d log|det A| / dA = A^{-T}
    a = jnp.asarray(rng.normal(size=(4, 4)))
    np.testing.assert_allclose(jax.grad(lambda m: lu_slogdet(m)[1])(a), np.linalg.inv(a).T, rtol=1e-10)


def test_forward_laplacian_through_lu(x64):
    from folx import forward_laplacian

    rng = np.random.default_rng(2)
    w = jnp.asarray(rng.normal(size=(3, 3, 3)))

    def f(x):  # log|det M(x)| with M_ij = Σ_k w_ijk x_k + δ_ij
        return lu_slogdet(jnp.einsum("ijk,k->ij", w, x) + jnp.eye(3))[1]

    x = jnp.asarray(rng.normal(size=3))
    out = forward_laplacian(f)(x)
    hess = jax.hessian(lambda y: jnp.linalg.slogdet(jnp.einsum("ijk,k->ij", w, y) + jnp.eye(3))[1])(x)
    np.testing.assert_allclose(out.laplacian, jnp.trace(hess), rtol=1e-9)
