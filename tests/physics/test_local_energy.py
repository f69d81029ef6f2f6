"""Kinetic and local energies against exact eigenstates (zero-variance property)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qernel.bands import noninteracting_ground_state, slater_log_psi
from qernel.ewald import Ewald
from qernel.hamiltonian import kinetic_energy, make_local_energy
from qernel.lattice import Supercell
from qernel.system import System


def _smooth_real(x):
    w = jnp.arange(1, x.size + 1, dtype=x.dtype).reshape(x.shape) / x.size
    return jnp.sum(jnp.sin(x * w) * jnp.cos(x[::-1] + 0.3)) + jnp.log(1 + jnp.sum(x**2)) + jnp.prod(jnp.tanh(x[:2]))


def _smooth_complex(x):
    return _smooth_real(x) + 1j * (jnp.sum(jnp.sin(2.0 * x[:, 0] - x[:, 1])) + 0.1 * jnp.sum(x) ** 2)


@pytest.mark.parametrize("fn", [_smooth_real, _smooth_complex])
def test_folx_matches_jvp_loop_float32(fn):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 2)), jnp.float32)
    a, b = kinetic_energy(fn, x, "folx"), kinetic_energy(fn, x, "jvp")
    assert a.dtype == jnp.float32
    np.testing.assert_allclose(a, b, rtol=1e-5)


@pytest.mark.parametrize("fn", [_smooth_real, _smooth_complex])
def test_folx_matches_jvp_loop_float64(fn, x64):
    x = jnp.asarray(np.random.default_rng(1).normal(size=(6, 2)))
    np.testing.assert_allclose(kinetic_energy(fn, x, "folx"), kinetic_energy(fn, x, "jvp"), rtol=1e-10)


def test_kinetic_energy_of_a_plane_wave_product(x64):
    # ψ = Π_i e^{ik_i·r_i} (complex) and ψ = Π cos(k_i·r_i) handled analytically
    k = jnp.asarray(np.random.default_rng(2).normal(size=(3, 2)))
    x = jnp.asarray(np.random.default_rng(3).normal(size=(3, 2)))
    pw = lambda y: 1j * jnp.sum(jnp.sum(k * y, axis=1))
    assert float(kinetic_energy(pw, x)) == pytest.approx(0.5 * float(jnp.sum(k**2)), rel=1e-12)
    gauss = lambda y: -0.5 * jnp.sum(y**2)  # 2D harmonic oscillator ground state, ½·ω per dim
    e_kin = float(kinetic_energy(gauss, x))
    assert e_kin == pytest.approx(3.0 - 0.5 * float(jnp.sum(x**2)), rel=1e-12)


@pytest.mark.parametrize("laplacian", ["folx", "jvp"])
def test_free_electron_determinant_has_zero_variance(laplacian, x64):
    sc = Supercell.diagonal(3)
    system = System(sc, n_up=7, coupling=0.0)
    gs = noninteracting_ground_state(system, depth=0.0)
    assert gs.closed_shell
    expected = 0.5 * sum(float(np.sum(sc.kpoints[ik] ** 2)) for ik, _ in gs.occupied_up)
    e_loc = jax.jit(jax.vmap(make_local_energy(system, slater_log_psi(gs, 7), laplacian), in_axes=(None, 0, None)))
    x = jnp.asarray(sc.to_cart(np.random.default_rng(4).uniform(size=(16, 7, 2))))
    comps = e_loc(None, x, jnp.zeros(1))
    np.testing.assert_allclose(comps.kinetic, expected, rtol=1e-9)
    np.testing.assert_allclose(comps.potential, 0.0, atol=1e-12)
    np.testing.assert_allclose(comps.interaction, 0.0, atol=1e-12)


@pytest.mark.parametrize("n_up,n_down,depth", [(3, 0, 2.0), (2, 2, 4.44)])
def test_noninteracting_eigenstate_local_energy_is_exact(n_up, n_down, depth, x64):
    sc = Supercell.diagonal(2)
    system = System(sc, n_up=n_up, n_down=n_down, coupling=0.0, phase=math.radians(45))
    gs = noninteracting_ground_state(system, depth=depth)
    e_loc = jax.jit(jax.vmap(make_local_energy(system, slater_log_psi(gs, n_up)), in_axes=(None, 0, None)))
    x = jnp.asarray(sc.to_cart(np.random.default_rng(5).uniform(size=(32, n_up + n_down, 2))))
    comps = e_loc(None, x, jnp.asarray([depth]))
    np.testing.assert_allclose(comps.total, gs.energy, rtol=1e-8, atol=1e-8)
    assert float(jnp.std(comps.kinetic)) > 1e-2  # the components fluctuate, only the sum is exact


def test_interaction_component_is_lambda_times_ewald(x64):
    sc = Supercell.diagonal(2)
    system = System(sc, n_up=2, n_down=1, coupling=3.5)
    gs = noninteracting_ground_state(system, depth=1.0)
    e_loc = make_local_energy(system, slater_log_psi(gs, 2))
    x = jnp.asarray(sc.to_cart(np.random.default_rng(6).uniform(size=(3, 2))))
    comps = e_loc(None, x, jnp.asarray([1.0]))
    assert float(comps.interaction) == pytest.approx(3.5 * float(Ewald(sc).energy(x)), rel=1e-12)
    assert float(comps.total) == pytest.approx(float(comps.kinetic + comps.potential + comps.interaction))


def test_unknown_laplacian_is_rejected():
    system = System(Supercell.diagonal(1), n_up=1)
    with pytest.raises(ValueError, match="laplacian"):
        make_local_energy(system, lambda p, x, c: jnp.sum(x), laplacian="hessian")
