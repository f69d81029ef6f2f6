"""Evaluation measures the observables it is given, and they do not perturb the chain.

On the λ = 0 exact determinant every local energy is Σ occupied Bloch levels, and the folded
density integrates to the filling: exact answers for a run with only two observables, whose
series must equal those of the default run bit for bit (same key, same walkers).
"""

import math

import jax
import numpy as np

from qernel.bands import noninteracting_ground_state, slater_log_psi
from qernel.evaluate import EvalConfig, sample_observables
from qernel.lattice import Supercell
from qernel.observables import MOIRE_CELL_AREA, EnergyComponents, FoldedDensity
from qernel.system import System

DEPTH = 3.0


def test_a_subset_of_observables_gives_the_same_chain():
    system = System(Supercell.diagonal(2), n_up=1, n_down=1, coupling=0.0, phase=math.radians(45.0))  # both at Γ
    gs = noninteracting_ground_state(system, DEPTH)
    cfg = EvalConfig.from_dict({"samples": 16 * 8, "batch_size": 16, "mcmc_steps": 2, "burn_in": 20,
                                "density_bins": 4, "structure_factor_shells": 1.0, "pair_correlation_bins": 4,
                                "dtype": "float64"})
    subset = (EnergyComponents.from_config(system, cfg), FoldedDensity.from_config(system, cfg))
    with jax.enable_x64(True):
        log_psi = slater_log_psi(gs, system.n_up)
        full = sample_observables(system, log_psi, None, DEPTH, cfg, jax.random.PRNGKey(5))
        part = sample_observables(system, log_psi, None, DEPTH, cfg, jax.random.PRNGKey(5), observables=subset)
    series = {"energy", "kinetic_energy", "potential_energy", "interaction_energy", "local_energy_variance",
              "density", "acceptance", "mcmc_width"}
    assert set(part.data_vars) == series and set(full.data_vars) > series
    assert "sx" not in part.dims and "k" not in part.dims and "pair_r_max" not in part.attrs
    for name in series:
        np.testing.assert_array_equal(part[name].values, full[name].values)
        assert part[name].attrs == full[name].attrs
    np.testing.assert_allclose(part["energy"].values, gs.energy / system.n_electrons, rtol=0, atol=1e-8)
    np.testing.assert_allclose(part["density"].mean(("x", "y")).values * MOIRE_CELL_AREA, system.filling, rtol=1e-12)
