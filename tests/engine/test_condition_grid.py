"""The engine on a condition grid of more than the depth (qernel.conditions): training's walkers
take the grid's rows; the evaluation's energy at a grid point (V, λ') equals that of a System
with coupling λ' at V (the same ψ and keys: the exact λ = 0 determinant, which ignores λ).
"""

import jax
import numpy as np
import pytest

from qernel.bands import noninteracting_ground_state, slater_log_psi
from qernel.conditions import ConditionGrid
from qernel.evaluate import EvalConfig, sample_observables
from qernel.lattice import Supercell
from qernel.system import System
from qernel.train import TrainConfig, init_state, run_training, train_keys

BOTH = ("depth", "coupling")


def test_training_walkers_take_the_grid_rows():
    system = System(Supercell.diagonal(2), n_up=1, n_down=1, coupling=1.0, phase=np.pi / 4)
    grid = ConditionGrid(BOTH, [[0.5, 1.0], [0.5, 3.0], [2.0, 1.0]], ("a", "b", "c"))
    cfg = TrainConfig.from_dict({"batch_size": 6})
    state = init_state(system, grid, cfg, train_keys(0), None, None)
    group = np.asarray(state.mcmc.group)
    np.testing.assert_array_equal(group, np.arange(6) % 3)
    np.testing.assert_array_equal(np.asarray(state.mcmc.cond), np.float32(grid.values[group]))
    assert state.mcmc.width.shape == (3,)


def test_training_refuses_a_grid_of_other_components(tmp_path):
    system = System(Supercell.diagonal(2), n_up=1, n_down=1, coupling=1.0, phase=np.pi / 4)

    class DepthOnlyModel:  # no condition_names: conditioned on V alone
        pass

    grid = ConditionGrid(BOTH, [[0.5, 1.0]], ("a",))
    with pytest.raises(ValueError, match=r"components \('depth', 'coupling'\), the model \('depth',\)"):
        run_training(system, DepthOnlyModel(), grid, TrainConfig.from_dict({"batch_size": 2}), tmp_path)


def test_evaluation_at_a_grid_point_reads_the_coupling_from_it():
    sc = Supercell.diagonal(2)
    lam, depth = 2.0, 1.5
    other = System(sc, n_up=1, n_down=1, coupling=0.5, phase=np.pi / 4)
    target = System(sc, n_up=1, n_down=1, coupling=lam, phase=np.pi / 4)
    log_psi = slater_log_psi(noninteracting_ground_state(other, depth), other.n_up)
    cfg = EvalConfig.from_dict({"samples": 8 * 4, "batch_size": 8, "mcmc_steps": 2, "burn_in": 4,
                                "structure_factor_shells": 1.0, "pair_correlation_bins": 0, "density_bins": 4})
    key = jax.random.PRNGKey(3)
    got = sample_observables(other, log_psi, None, np.array([depth, lam]), cfg, key, condition_names=BOTH)
    want = sample_observables(target, log_psi, None, depth, cfg, key)
    for name in ("energy", "kinetic_energy", "potential_energy", "interaction_energy"):
        np.testing.assert_allclose(got[name].values, want[name].values, rtol=1e-6, atol=1e-6)
    assert got.attrs["coupling"] == lam and got.attrs["depth"] == depth
    assert "condition" in got.attrs and "condition" not in want.attrs
    with pytest.raises(ValueError, match=r"need \(2,\)"):
        sample_observables(other, log_psi, None, depth, cfg, key, condition_names=BOTH)
