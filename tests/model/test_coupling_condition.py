"""The model conditioned on λ as well as V (condition names ("depth", "coupling")).

Answers from outside the conditioned code: the Jastrow's cusp slope at coalescence is λ' for an
antiparallel and λ'/3 for a parallel pair when λ' comes from the condition (the system's own λ
is something else), and equals the unconditioned Jastrow of a system with coupling λ'; the whole
model's log ψ and local energy at cond = (V, λ') equal those of a model built for a System with
coupling λ' at cond = (V,), with the same parameters (the λ input of FiLM and the router sits at
the centre of its range, so its normalised value, and its weights' contribution, is exactly 0).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from jax.flatten_util import ravel_pytree

from qernel.hamiltonian import make_local_energy
from qernel.lattice import Supercell
from qernel.model import ModelConfig, make_wavefunction
from qernel.model.jastrow import Jastrow
from qernel.system import System

from model_helpers import fast_jit

BOTH = ("depth", "coupling")
LAM = 2.0  # λ' (the centre of its range (1, 3) below)
SMALL = ModelConfig(d_model=16, n_layers=1, n_heads=4, n_kv_heads=2, n_experts=3, top_k=2, d_ff=16,
                    film_hidden=8, n_determinants=2, jastrow_hidden=8, orbital_init_scale=1.0, dtype="float64")


def _jastrow_params(jas, x, cond, key):
    params = fast_jit(jas.init)(key, x, cond)
    return jax.tree.map(lambda a: a + 0.3 * jax.random.normal(key, a.shape, a.dtype), params)


def test_conditioned_cusp_follows_the_condition(x64):
    sc = Supercell.diagonal(3)
    for n_up, n_down, ratio in ((1, 1, 1.0), (2, 0, 1.0 / 3.0)):
        # the system's own λ is 0: without the condition there would be no cusp at all
        jas = Jastrow(sc, n_up, n_down, 0.0, hidden=8, shells=2, condition_names=BOTH)
        x0 = jnp.asarray([[0.4, 0.7], [0.4, 0.7]])
        params = _jastrow_params(jas, x0, jnp.asarray([1.0, LAM]), jax.random.PRNGKey(n_up))
        apply = fast_jit(jas.apply)
        ref = Jastrow(sc, n_up, n_down, 1.7, hidden=8, shells=2)  # unconditioned, same parameter names
        for lam in (0.5, 1.7, 4.0):
            cond = jnp.asarray([3.0, lam])
            for angle in (0.3, 2.0):
                direction = jnp.asarray([np.cos(angle), np.sin(angle)])
                j = lambda t: apply(params, x0.at[1].add(t * direction), cond)
                eps = 1e-7
                np.testing.assert_allclose((j(eps) - j(0.0)) / eps, ratio * lam, rtol=1e-5)
            if lam == 1.7:
                x = jnp.asarray(sc.to_cart(np.random.default_rng(2).uniform(size=(2, 2))))
                np.testing.assert_allclose(apply(params, x, cond), fast_jit(ref.apply)(params, x), rtol=1e-13)


def test_conditioned_jastrow_needs_the_condition():
    jas = Jastrow(Supercell.diagonal(2), 1, 1, 1.0, hidden=4, shells=1, condition_names=BOTH)
    with pytest.raises(ValueError, match="needs the condition vector"):
        jas.init(jax.random.PRNGKey(0), jnp.zeros((2, 2)))


def test_make_wavefunction_checks_names_against_ranges():
    system = System(Supercell.diagonal(2), n_up=1, n_down=1, coupling=1.0, phase=np.pi / 4)
    with pytest.raises(ValueError, match=r"cond_range has 1 \(lo, hi\) pairs but the condition names"):
        make_wavefunction(system, SMALL, ((0.0, 1.0),), condition_names=BOTH)
    with pytest.raises(ValueError, match="unknown condition name 'eps'"):
        make_wavefunction(system, SMALL, ((0.0, 1.0), (0.0, 1.0)), condition_names=("depth", "eps"))
    with pytest.raises(ValueError, match="the condition names \\('depth',\\) need 1"):
        make_wavefunction(system, SMALL, ((0.0, 1.0), (0.0, 1.0)))


def _restrict(params2, params1):
    """params2 (n_cond = 2) → the layout of params1 (n_cond = 1): drop the λ row of every weight
    that reads the condition (the leaves whose shapes differ)."""
    flat2, flat1 = traverse_util.flatten_dict(params2), traverse_util.flatten_dict(params1)
    assert flat2.keys() == flat1.keys()
    out, n_cut = {}, 0
    for k, a in flat2.items():
        b = flat1[k]
        if a.shape != b.shape:
            axis = next(i for i, (m, n) in enumerate(zip(a.shape, b.shape)) if (m, n) == (2, 1))
            a, n_cut = jnp.take(a, jnp.asarray([0]), axis=axis), n_cut + 1
        out[k] = a
    assert n_cut >= 1  # at least FiLM's first layer
    return traverse_util.unflatten_dict(out)


def test_model_at_conditioned_coupling_equals_the_model_of_that_system(x64):
    sc = Supercell.diagonal(2)
    other = System(sc, n_up=2, n_down=1, coupling=0.3, phase=np.pi / 4)
    target = System(sc, n_up=2, n_down=1, coupling=LAM, phase=np.pi / 4)
    wf2 = make_wavefunction(other, SMALL, ((0.0, 2.0), (1.0, 3.0)), condition_names=BOTH)
    wf1 = make_wavefunction(target, SMALL, ((0.0, 2.0),))
    assert wf2.condition_names == BOTH and wf1.condition_names == ("depth",)
    params2 = wf2.init(jax.random.PRNGKey(1))
    # every parameter moved off its initial value: one normal draw for all of them (drawing per leaf
    # compiles a random-number program per leaf shape, most of this test's time)
    flat, unravel = ravel_pytree(params2)
    params2 = unravel(flat + 0.05 * jax.random.normal(jax.random.PRNGKey(2), flat.shape, flat.dtype))
    params1 = _restrict(params2, jax.eval_shape(wf1.init, jax.random.PRNGKey(0)))
    frac = np.random.default_rng(5).uniform(size=(3, other.n_electrons, 2))
    x = jnp.asarray(sc.to_cart(frac))
    depth = 0.8
    c2, c1 = jnp.asarray([depth, LAM]), jnp.asarray([depth])
    # compiled (fast_jit: XLA without its optimisation passes) instead of run op by op
    log_psi2 = fast_jit(jax.vmap(wf2.log_psi, in_axes=(None, 0, None)))
    lp2 = log_psi2(params2, x, c2)
    lp1 = fast_jit(jax.vmap(wf1.log_psi, in_axes=(None, 0, None)))(params1, x, c1)
    np.testing.assert_allclose(np.asarray(lp2), np.asarray(lp1), rtol=1e-12, atol=1e-12)
    e2 = fast_jit(jax.vmap(make_local_energy(other, wf2.log_psi, condition_names=BOTH),
                           in_axes=(None, 0, None)))(params2, x, c2)
    e1 = fast_jit(jax.vmap(make_local_energy(target, wf1.log_psi), in_axes=(None, 0, None)))(params1, x, c1)
    for a, b in zip(e2, e1):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-10)
    # and another λ in the condition changes ψ (through the cusp) and the interaction
    lp_other = log_psi2(params2, x, jnp.asarray([depth, 1.2]))
    assert not np.allclose(np.asarray(lp_other), np.asarray(lp2))
