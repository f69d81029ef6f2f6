"""SR in kernel form (MinSR / SPRING) against the parameter-space formulas; schedule; norm constraint."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qernel.optim import fisher_norm_scale, learning_rate_schedule, spring_direction, sr_matrices


@pytest.mark.parametrize("m,p", [(12, 40), (40, 12)])
def test_minsr_equals_parameter_space_sr(m, p, x64):
    rng = np.random.default_rng(0)
    o = jnp.asarray(rng.normal(size=(m, p)))
    eps = jnp.asarray(rng.normal(size=m))
    lam = 1e-2
    phi = spring_direction(o, eps, jnp.zeros(p), lam, 0.0)
    # the same step from the P×P matrix: (OᵀO + λ)⁻¹ Oᵀ ε (push-through identity)
    expected = np.linalg.solve(o.T @ o + lam * np.eye(p), o.T @ eps)
    np.testing.assert_allclose(phi, expected, rtol=1e-9, atol=1e-12)


def test_spring_momentum_solves_the_regularised_problem(x64):
    # φ = argmin ‖Oφ − ε‖² + λ‖φ − μ φ_prev‖² = (OᵀO + λ)⁻¹ (Oᵀε + λ μ φ_prev)
    rng = np.random.default_rng(1)
    m, p, lam, mu = 10, 30, 3e-2, 0.9
    o, eps, prev = (jnp.asarray(rng.normal(size=s)) for s in ((m, p), (m,), (p,)))
    phi = spring_direction(o, eps, prev, lam, mu)
    expected = np.linalg.solve(o.T @ o + lam * np.eye(p), o.T @ eps + lam * mu * prev)
    np.testing.assert_allclose(phi, expected, rtol=1e-9, atol=1e-12)


def test_sr_matrices_centre_per_group_and_stack_complex_parts(x64):
    rng = np.random.default_rng(2)
    w, p = 8, 5
    jac = rng.normal(size=(w, 2, p))  # rows Re, Im of ∂ log ψ
    eps = rng.normal(size=w) + 1j * rng.normal(size=w)
    group = np.array([0, 1, 0, 1, 1, 0, 1, 1])
    o, e = sr_matrices(jnp.asarray(jac), jnp.asarray(eps), jnp.asarray(group), 2, True)
    assert o.shape == (2 * w, p) and e.shape == (2 * w,)
    d = jac[:, 0] + 1j * jac[:, 1]
    centred = d.copy()
    for g in (0, 1):
        centred[group == g] -= d[group == g].mean(axis=0)
    # Oᵀε = (1/W) Re Σ_w ε_w^* (∂log ψ_w − mean_g): half the unbiased energy gradient
    np.testing.assert_allclose(o.T @ e, np.real(np.conj(eps) @ centred) / w, rtol=1e-12)
    # OᵀO = Re S, S = (1/W) Σ (∂log ψ − mean)^† (∂log ψ − mean)
    np.testing.assert_allclose(o.T @ o, np.real(centred.conj().T @ centred) / w, rtol=1e-12)
    o_real, _ = sr_matrices(jnp.asarray(jac), jnp.asarray(eps.real), jnp.asarray(group), 2, False)
    assert o_real.shape == (w, p)


def test_learning_rate_schedule():
    sched = learning_rate_schedule(0.1, 100.0)
    np.testing.assert_allclose([sched(0), sched(100), sched(300)], [0.1, 0.05, 0.025], rtol=1e-6)
    np.testing.assert_allclose(learning_rate_schedule(0.1, 0)(1000), 0.1)


def test_fisher_norm_constraint():
    o = jnp.eye(3)
    delta = jnp.asarray([3.0, 4.0, 0.0])  # ‖Oδ‖ = 5
    assert float(fisher_norm_scale(o, delta, 1.0)) == pytest.approx(0.2)
    assert float(fisher_norm_scale(o, delta, 10.0)) == 1.0
    assert float(fisher_norm_scale(o, delta, 0.0)) == 1.0
