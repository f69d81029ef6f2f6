"""The engine with the real network (`qernel.model`, tiny preset): known energies and outputs."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

from qernel import checkpoint
from qernel.lattice import Supercell
from qernel.model import make_wavefunction
from qernel.pretrain import make_targets
from qernel.system import System
from qernel.train import TrainConfig, run_training

from .conftest import PHASE

DEPTHS = [1.0, 1.5]


@pytest.fixture(scope="module")
def setup():
    # λ = 0, one electron per spin (closed shell). orbital_init_scale = 0: the neural orbital heads
    # start at zero, so at the reference depth V = 1 the network is exactly the non-interacting
    # ground state (the Jastrow's last layer is zero-initialised and its cusp is λ = 0).
    system = System(Supercell.diagonal(2), n_up=1, n_down=1, coupling=0.0, phase=PHASE)
    wf = make_wavefunction(system, {"preset": "tiny", "orbital_init_scale": 0.0, "reference_depth": 1.0},
                           ((min(DEPTHS), max(DEPTHS)),))
    exact = make_targets(system, DEPTHS).energies / system.n_electrons
    return system, wf, exact


def _cfg(**kw):
    base = dict(steps=3, batch_size=32, pretrain_steps=0, burn_in=40, mcmc_steps=5, learning_rate=0.01,
                sr_momentum=0.0, checkpoint_every=2, log_every=100)
    base.update(kw)
    return TrainConfig.from_dict(base)


def test_exact_eigenstate_has_exact_energy_and_zero_variance(setup, tmp_path):
    system, wf, exact = setup
    res = run_training(system, wf, DEPTHS, _cfg(steps=1), tmp_path)
    e, var = res.history["energy_per_depth"][0], res.history["variance_per_depth"][0]
    print(f"step 1: E/N {e}, exact {exact}, Var E_L {var}")
    # the walkers at V = 1 (and only those) sample the exact eigenstate: every local energy is exact
    assert abs(e[0] - exact[0]) < 1e-4 and var[0] < 1e-6
    assert var[1] > 1e-3  # at V = 1.5 the reference orbitals are not the eigenstate


def test_training_run_with_the_network(setup, tmp_path):
    system, wf, exact = setup
    res = run_training(system, wf, DEPTHS, _cfg(pretrain_steps=5), tmp_path)
    pre = res.history["pretrain_loss"]
    assert len(pre) == 5 and np.all(np.isfinite(pre))  # (convergence of pretraining: test_train_physics)
    assert np.all(np.isfinite(res.history["energy_per_depth"]))
    n_layers, n_experts = wf.config.n_layers, wf.config.n_experts
    ds = xr.open_dataset(tmp_path / "train.nc")
    usage = ds.expert_usage.values
    assert usage.shape == (3, n_layers, n_experts)
    np.testing.assert_allclose(usage.sum(axis=-1), 1.0, rtol=1e-5)
    assert np.all(ds.moe_loss.values > 0)
    ds.close()
    # the final model file restores into the network's own parameter tree
    params, meta = checkpoint.load_model(tmp_path / "model.msgpack", wf.init(jax.random.PRNGKey(0)))
    assert meta["model_config"]["n_layers"] == n_layers and meta["depths"] == DEPTHS
    x = jnp.asarray(system.supercell.to_cart(np.random.default_rng(0).uniform(size=(2, 2))), jnp.float32)
    cond = jnp.asarray([1.2])
    log_psi = jax.jit(wf.log_psi)  # compiled once (op by op, the first call compiled every primitive: ~9 s)
    assert complex(log_psi(params, x, cond)) == complex(log_psi(res.params, x, cond))


@pytest.mark.slow  # about two minutes of CPU (mostly compiling); reaches the exact energy with a margin of ~30x
def test_network_converges_to_the_noninteracting_ground_state(tmp_path):
    """The tiny network from its random initialisation: pretraining + SR reach the exact λ = 0 energy
    of 4 electrons filling the lowest band (2×2, V = 1) within 1e-3 E_M, Var E_L < 1e-3.

    100 SR steps (there were 200; the steps were ~1/3 of its CPU time, the rest compiling): the same
    tolerances must hold after half the steps, so the check is, if anything, stricter. Measured at
    100 steps: Var E_L 1.5e-5 to 7e-5 over the last 20 steps (mean 3e-5, ~30x under the bound),
    E/N within 3e-4 of the exact energy."""
    system = System(Supercell.diagonal(2), n_up=4, n_down=0, coupling=0.0, phase=PHASE)
    wf = make_wavefunction(system, "tiny", ((1.0, 1.0),))
    exact = make_targets(system, [1.0]).energies[0] / 4
    cfg = TrainConfig.from_dict(dict(steps=100, batch_size=128, pretrain_steps=200, burn_in=100, mcmc_steps=10,
                                     learning_rate=0.01, checkpoint_every=1000, log_every=20))
    res = run_training(system, wf, [1.0], cfg, tmp_path)
    assert abs(res.history["energy"][-20:].mean() - exact) < 1e-3
    assert res.history["variance"][-20:].mean() < 1e-3
