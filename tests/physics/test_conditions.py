"""The condition vector and grid (qernel.conditions) and the Hamiltonian reading λ from it.

Checks against answers from outside the conditioned code: the local energy at cond = (V, λ')
of a system whose own coupling is something else equals the local energy of a System with
coupling λ' at cond = (V,); a 1-D sweep's grid gives the walkers exactly depths[group][:, None]
(the formula training used before the grid existed); wrong names and shapes are ValueErrors
that name them.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qernel.bands import noninteracting_ground_state, slater_log_psi
from qernel.conditions import (
    ConditionGrid,
    DEPTH_ONLY,
    as_grid,
    check_names,
    condition_vector,
    index_of,
    names_of,
    parameter,
)
from qernel.ewald import Ewald
from qernel.hamiltonian import make_complex_local_energy, make_local_energy, potential_energies
from qernel.lattice import Supercell
from qernel.system import System

BOTH = ("depth", "coupling")
LAM = 2.7  # λ' of the condition
PHASE = np.pi / 4


def _systems():
    sc = Supercell.diagonal(2)
    other = System(sc, n_up=2, n_down=1, coupling=0.4, phase=PHASE)  # its own λ is not λ'
    target = System(sc, n_up=2, n_down=1, coupling=LAM, phase=PHASE)
    return other, target


def _configurations(system, n, seed=0):
    frac = np.random.default_rng(seed).uniform(size=(n, system.n_electrons, 2))
    return jnp.asarray(system.supercell.to_cart(frac))


# -- the grid ----------------------------------------------------------------------------------------
def test_grid_from_depths_is_the_one_column_grid():
    g = ConditionGrid.from_depths([0.0, 2.5, 10.0])
    assert g.names == DEPTH_ONLY and g.n_cond == 1 and g.n_points == 3
    assert g.values.shape == (3, 1) and g.labels == ("0.000", "2.500", "10.000")
    np.testing.assert_array_equal(g.depths, [0.0, 2.5, 10.0])
    assert g.cond_range == ((0.0, 10.0),)
    assert g.column("coupling") is None
    assert as_grid(g) is g and as_grid([1.0]).names == DEPTH_ONLY
    with pytest.raises(ValueError):
        g.values[0, 0] = 1.0  # read-only


def test_walker_conditions_of_a_depth_grid_are_the_old_formula_bitwise():
    depths = np.array([0.3, 1.7, 4.1])
    group = np.arange(12) % 3
    for dtype in (jnp.float32, jnp.float64):
        with jax.enable_x64(dtype == jnp.float64):
            new = np.asarray(ConditionGrid.from_depths(depths).conditions(group, dtype))
            old = np.asarray(jnp.asarray(depths[group][:, None], dtype))  # training before the grid
            assert new.dtype == old.dtype and new.tobytes() == old.tobytes()


def test_two_component_grid():
    values = [[1.0, 2.0], [1.0, 3.0], [4.0, 2.0]]
    g = ConditionGrid(BOTH, values, ("a", "b", "c"))
    np.testing.assert_array_equal(g.depths, [1.0, 1.0, 4.0])
    np.testing.assert_array_equal(g.column("coupling"), [2.0, 3.0, 2.0])
    assert g.cond_range == ((1.0, 4.0), (2.0, 3.0))
    np.testing.assert_array_equal(g.conditions([2, 0], jnp.float32), np.float32([[4.0, 2.0], [1.0, 2.0]]))
    assert g.to_dict()["names"] == list(BOTH)


def test_parameter_reads_the_condition_or_the_default():
    cond = np.array([[1.5, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(parameter(cond, BOTH, "coupling", 9.0), [2.0, 4.0])
    np.testing.assert_array_equal(parameter(cond, BOTH, "depth"), [1.5, 3.0])
    assert parameter(cond[:, :1], DEPTH_ONLY, "coupling", 9.0) == 9.0  # not conditioned: the system's
    assert index_of(BOTH, "coupling") == 1 and index_of(DEPTH_ONLY, "coupling") is None

    class Model:
        condition_names = BOTH

    assert names_of(Model()) == BOTH and names_of(object()) == DEPTH_ONLY


# -- wrong names and shapes ----------------------------------------------------------------------------
@pytest.mark.parametrize("names, match", [
    (("depth", "epsilon"), "epsilon"),
    (("coupling", "depth"), "first must be 'depth'"),
    (("depth", "depth"), "repeat"),
    ((), "at least one"),
    ("depth", "not the string"),
])
def test_bad_names_are_named(names, match):
    with pytest.raises(ValueError, match=match):
        check_names(names)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"shape \(2, 1\).*\('depth', 'coupling'\)"):
        parameter(np.zeros((2, 1)), BOTH, "coupling", 1.0)
    with pytest.raises(ValueError, match="unknown condition name 'lambda'"):
        parameter(np.zeros(2), BOTH, "lambda", 1.0)
    with pytest.raises(ValueError, match="does not carry 'coupling'"):
        parameter(np.zeros(1), DEPTH_ONLY, "coupling")
    with pytest.raises(ValueError, match=r"shape \(2, 1\); expected \(D, 2\)"):
        ConditionGrid(BOTH, np.zeros((2, 1)), ("a", "b"))
    with pytest.raises(ValueError, match="labels: expected 2 strings"):
        ConditionGrid(DEPTH_ONLY, np.zeros((2, 1)), ("a",))
    with pytest.raises(ValueError, match="finite"):
        ConditionGrid.from_depths([1.0, np.nan])
    with pytest.raises(ValueError, match=r"point indices in \[0, 2\)"):
        ConditionGrid.from_depths([1.0, 2.0]).conditions([0, 2])
    with pytest.raises(ValueError, match=r"need \(2,\)"):
        condition_vector(1.0, BOTH)
    other, _ = _systems()
    with pytest.raises(ValueError, match="unknown condition name 'phase'"):
        make_local_energy(other, lambda p, x, c: jnp.sum(x), condition_names=("depth", "phase"))
    f = make_local_energy(other, lambda p, x, c: jnp.sum(x), laplacian="jvp", condition_names=BOTH)
    with pytest.raises(ValueError, match=r"shape \(1,\), but its names \('depth', 'coupling'\)"):
        f(None, _configurations(other, 1)[0], jnp.asarray([1.0]))
    with pytest.raises(ValueError, match="exactly one of depth and cond"):
        potential_energies(other, _configurations(other, 1), 1.0, cond=jnp.ones((1, 2)), condition_names=BOTH)


# -- the Hamiltonian reads λ from the condition ------------------------------------------------------
def test_local_energy_at_conditioned_coupling_equals_the_system_with_that_coupling(x64):
    other, target = _systems()
    gs = noninteracting_ground_state(other, depth=1.3)
    log_psi = slater_log_psi(gs, other.n_up)  # the same ψ for both (it ignores cond)
    x = _configurations(other, 4, seed=3)
    depth = 1.3
    conditioned = jax.jit(jax.vmap(make_complex_local_energy(other, log_psi, condition_names=BOTH),
                                   in_axes=(None, 0, None)))
    reference = jax.jit(jax.vmap(make_complex_local_energy(target, log_psi), in_axes=(None, 0, None)))
    got = conditioned(None, x, jnp.asarray([depth, LAM]))
    want = reference(None, x, jnp.asarray([depth]))
    for a, b in zip(got.components, want.components):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(np.asarray(got.imag), np.asarray(want.imag), rtol=1e-13, atol=1e-13)
    # the interaction is λ' (not the system's λ) times the Ewald energy, computed independently
    np.testing.assert_allclose(np.asarray(got.components.interaction), LAM * np.asarray(Ewald(other.supercell).energy(x)),
                               rtol=1e-13)
    # not conditioned on λ: the system's own λ, whatever cond says
    plain = jax.jit(jax.vmap(make_local_energy(other, log_psi), in_axes=(None, 0, None)))(None, x, jnp.asarray([depth]))
    np.testing.assert_allclose(np.asarray(plain.interaction), 0.4 * np.asarray(Ewald(other.supercell).energy(x)),
                               rtol=1e-13)


def test_potential_energies_read_the_condition_vector_per_walker(x64):
    other, target = _systems()
    x = _configurations(other, 3, seed=4)
    cond = jnp.asarray([[0.5, LAM], [1.0, LAM], [2.0, LAM]])
    pot, inter = potential_energies(other, x, cond=cond, condition_names=BOTH)
    pot_ref, inter_ref = potential_energies(target, x, jnp.asarray([0.5, 1.0, 2.0]))
    np.testing.assert_allclose(np.asarray(pot), np.asarray(pot_ref), rtol=1e-13)
    np.testing.assert_allclose(np.asarray(inter), np.asarray(inter_ref), rtol=1e-13)
    # per-walker λ: each walker's own
    lams = jnp.asarray([0.0, 1.0, 5.0])
    _, inter = potential_energies(other, x, cond=jnp.stack([cond[:, 0], lams], -1), condition_names=BOTH)
    np.testing.assert_allclose(np.asarray(inter), np.asarray(lams * Ewald(other.supercell).energy(x)), rtol=1e-13)
    # depth only (n_cond = 1): identical to the bare-depth form, bit for bit
    a = potential_energies(other, x, cond=cond[:, :1])
    b = potential_energies(other, x, cond[:, 0])
    assert all(np.asarray(u).tobytes() == np.asarray(v).tobytes() for u, v in zip(a, b))
