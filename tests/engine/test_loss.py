"""Local energies, per-group statistics and clipping, and the unbiased gradient."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qernel.bands import noninteracting_ground_state, slater_log_psi
from qernel.hamiltonian import make_complex_local_energy, make_local_energy
from qernel.lattice import Supercell
from qernel.groups import centre, group_mean, group_median, group_stats
from qernel.loss import centred_local_energies, clip_values, make_energy_loss
from qernel.system import System


def test_group_statistics_match_numpy(x64):
    rng = np.random.default_rng(0)
    values = rng.normal(size=23)
    group = rng.integers(0, 3, size=23)
    mean, var, count = group_stats(jnp.asarray(values), jnp.asarray(group), 3)
    med = group_median(jnp.asarray(values), jnp.asarray(group), 3)
    for g in range(3):
        v = values[group == g]
        assert count[g] == len(v)
        np.testing.assert_allclose([mean[g], var[g], med[g]], [v.mean(), v.var(), np.median(v)], rtol=1e-12)


def test_group_mean_and_centre_over_trailing_axes(x64):
    rng = np.random.default_rng(2)
    values = rng.normal(size=(17, 2, 5))
    group = rng.integers(0, 3, size=17)
    group[group == 2] = 3  # group 2 of 4 stays empty
    mean = np.asarray(group_mean(jnp.asarray(values), jnp.asarray(group), 4))
    assert mean.shape == (4, 2, 5)
    for g in (0, 1, 3):
        np.testing.assert_allclose(mean[g], values[group == g].mean(axis=0), rtol=1e-12)
    np.testing.assert_array_equal(mean[2], 0.0)
    centred = np.asarray(centre(jnp.asarray(values), jnp.asarray(group), 4))
    np.testing.assert_allclose(centred, values - mean[group], rtol=1e-12)


def test_clipping_is_per_group(x64):
    rng = np.random.default_rng(1)
    a = rng.normal(size=50)
    b = 100.0 + 10.0 * rng.normal(size=50)
    a[3] = 40.0  # an outlier in group 0, well inside group 1's spread
    values = jnp.asarray(np.concatenate([a, b]))
    group = jnp.asarray(np.repeat([0, 1], 50))
    clipped = np.asarray(clip_values(values, group, 2, 5.0))
    med, mad = np.median(a), np.mean(np.abs(a - np.median(a)))
    assert clipped[3] == pytest.approx(med + 5 * mad)
    np.testing.assert_array_equal(np.delete(clipped[:50], 3), np.delete(a, 3))
    np.testing.assert_array_equal(clipped[50:], b)  # group 1 untouched
    eps = centred_local_energies(values, group, 2, 5.0)
    np.testing.assert_allclose(group_stats(eps, group, 2)[0], 0.0, atol=1e-12)


def test_local_energy_matches_hamiltonian_module(x64):
    system = System(Supercell.diagonal(2), n_up=2, n_down=1, coupling=2.0, phase=0.4)
    gs = noninteracting_ground_state(system, 1.5, shells=3.0)
    log_psi = slater_log_psi(gs, 2)

    def perturbed(params, x, cond):  # not an eigenstate: nonzero Im E_L
        return log_psi(params, x, cond) + 0.3j * jnp.sum(jnp.sin(x[:, 0])) + 0.1 * jnp.sum(jnp.cos(x))

    x = jnp.asarray(system.supercell.to_cart(np.random.default_rng(2).uniform(size=(3, 2))))
    cond = jnp.asarray([1.5])
    ours = jax.jit(make_complex_local_energy(system, perturbed))(None, x, cond)
    ref = jax.jit(make_local_energy(system, perturbed))(None, x, cond)
    for a, b in zip(ours.components, ref):
        assert float(a) == pytest.approx(float(b), rel=1e-12)
    assert abs(float(ours.imag)) > 1e-3


def _phase_model():
    """One electron in the 1×1 cell, V = 0, λ = 0: ψ = exp(i θ c sin(G·r)), c = cond[0].

    |ψ|² = 1, so uniform positions are exact samples. E(θ; c) = ¼ θ² c² |G|², dE/dθ = ½ θ c² |G|².
    The whole gradient comes from Im E_L · Im ∂log ψ.
    """
    system = System(Supercell.diagonal(1), n_up=1, coupling=0.0)
    g = jnp.asarray(system.supercell.reciprocal[0])

    def log_psi(params, x, cond):
        return 1j * params["theta"] * cond[0] * jnp.sin(x[0] @ g)

    return system, log_psi, float(g @ g)


def test_gradient_of_a_phase_parameter_known_answer(x64):
    system, log_psi, g2 = _phase_model()
    n = 20000
    x = jnp.asarray(system.supercell.to_cart(np.random.default_rng(3).uniform(size=(n, 1, 2))))
    group = jnp.asarray(np.repeat([0, 1], n // 2))
    cond = jnp.where(group[:, None] == 0, 1.0, 2.0)
    params = {"theta": jnp.asarray(0.7)}
    le = jax.vmap(make_complex_local_energy(system, log_psi), in_axes=(None, 0, 0))(params, x, cond)
    # E per group: ¼ θ² c² |G|²
    mean = group_stats(le.real, group, 2)[0]
    np.testing.assert_allclose(mean, [0.25 * 0.49 * g2, 0.25 * 0.49 * 4 * g2], rtol=0.03)
    loss = make_energy_loss(log_psi, 2, clip_mad=0.0)
    grad = jax.grad(loss)(params, x, cond, group, le.complex)["theta"]
    exact = 0.5 * (0.5 * 0.7 * 1 * g2) + 0.5 * (0.5 * 0.7 * 4 * g2)  # Σ_g (n_g/W) dE_g/dθ
    per_sample = 2 * np.asarray(le.imag) * np.asarray(jnp.sin(x[:, 0] @ jnp.asarray(system.supercell.reciprocal[0]))) * np.asarray(cond[:, 0])
    stderr = per_sample.std() / math.sqrt(n)
    assert abs(float(grad) - exact) < 4 * stderr + 1e-9
    assert stderr < 0.05 * exact
    # dropping Im E_L (the real-part-only estimator) would give zero here
    real_only = jax.grad(loss)(params, x, cond, group, le.real.astype(jnp.complex128))["theta"]
    assert abs(float(real_only)) < 1e-9


def test_custom_jvp_gradient_equals_explicit_formula(x64):
    system = System(Supercell.diagonal(1), n_up=2, coupling=0.0)
    rng = np.random.default_rng(4)
    params = {"a": jnp.asarray(rng.normal(size=(2, 2))), "b": jnp.asarray(rng.normal(size=2))}

    def log_psi(p, x, cond):
        return jnp.sum(p["a"] * jnp.cos(x)) * cond[0] + 1j * jnp.sum(p["b"] * jnp.sin(x[:, 0]))

    w = 16
    x = jnp.asarray(rng.normal(size=(w, 2, 2)))
    group = jnp.asarray(np.arange(w) % 2)
    cond = jnp.where(group[:, None] == 0, 1.0, 3.0)
    e_loc = jnp.asarray(rng.normal(size=w) + 1j * rng.normal(size=w))
    e_loc = e_loc.at[5].set(50.0)  # clipped
    loss = make_energy_loss(log_psi, 2, clip_mad=5.0)
    grad = jax.grad(loss)(params, x, cond, group, e_loc)
    eps = centred_local_energies(e_loc, group, 2, 5.0)
    # explicit: (2/W) Σ_w Re[ε_w^* ∂log ψ_w] with ∂ of the complex output via the real and imaginary parts
    d_re = jax.vmap(jax.grad(lambda p, xi, ci: jnp.real(log_psi(p, xi, ci))), in_axes=(None, 0, 0))(params, x, cond)
    d_im = jax.vmap(jax.grad(lambda p, xi, ci: jnp.imag(log_psi(p, xi, ci))), in_axes=(None, 0, 0))(params, x, cond)
    for k in params:
        expected = 2.0 / w * (jnp.tensordot(eps.real, d_re[k], 1) + jnp.tensordot(eps.imag, d_im[k], 1))
        np.testing.assert_allclose(grad[k], expected, rtol=1e-10, atol=1e-12)

