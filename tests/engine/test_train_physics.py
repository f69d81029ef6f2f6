"""Training against known answers: the non-interacting limit at one and at three depths, the 2D
electron gas, and one shared model over three depths against three single-depth models."""

import numpy as np
import pytest

from qernel.hartree_fock import plane_wave_determinant_energy
from qernel.lattice import Supercell
from qernel.pretrain import make_targets
from qernel.system import System
from qernel.train import TrainConfig, run_training

from .conftest import PHASE
from .helpers import sample_energy
from .standin import StandInWavefunction

DEPTHS = (0.5, 1.0, 1.5)
PER_DEPTH = 128  # walkers per depth in every run: the same number of samples per depth and step
STEPS = 60
SR = dict(optimizer="sr", learning_rate=0.005, sr_momentum=0.9, sr_damping=1e-3, max_update_norm=0.3, mcmc_steps=10, burn_in=100,
          pretrain_steps=200, pretrain_learning_rate=0.01, pretrain_shells=4.0, checkpoint_every=10_000,
          log_every=10_000)


def _cfg(n_depths, **kw):
    return TrainConfig.from_dict({**SR, "steps": STEPS, "batch_size": PER_DEPTH * n_depths, **kw})


@pytest.fixture(scope="module")
def noninteracting_runs(band_system, tmp_path_factory):
    """λ = 0, 4 electrons filling the lowest band of the 2×2 cell (closed shell at every depth):
    one model per depth, and one shared model trained on the three depths at once."""
    targets = make_targets(band_system, DEPTHS)
    assert targets.closed_shell.all()
    exact = targets.energies / band_system.n_electrons
    wf = StandInWavefunction(band_system, ((min(DEPTHS), max(DEPTHS)),), shells=3.0, init_scale=0.05)
    out = tmp_path_factory.mktemp("noninteracting")
    cfg1, cfg3 = _cfg(1, moe_loss_weight=0.01), _cfg(3, moe_loss_weight=0.01)  # float32, the default
    singles = [run_training(band_system, wf, [v], cfg1, out / f"single_{d}") for d, v in enumerate(DEPTHS)]
    shared = run_training(band_system, wf, list(DEPTHS), cfg3, out / "shared")
    return wf, exact, singles, shared


def test_noninteracting_limit_is_exact(noninteracting_runs):
    """Each single-depth model: energy within 1e-3 E_M per electron of qernel.bands, Var E_L < 1e-3."""
    _, exact, singles, _ = noninteracting_runs
    for d, res in enumerate(singles):
        energy = float(np.mean(res.history["energy"][-10:]))
        variance = float(np.mean(res.history["variance"][-10:]))
        pre = res.history["pretrain_loss"]
        print(f"V={DEPTHS[d]}: E/N = {energy:.6f} (exact {exact[d]:.6f}), Var E_L = {variance:.2e}, "
              f"pretrain loss {pre[0]:.3g} -> {pre[-1]:.3g}")
        assert abs(energy - exact[d]) < 1e-3
        assert variance < 1e-3
        assert pre[-1] < 1e-4 * pre[0]
        # the load-balancing term (router² in the stand-in) is minimised alongside the energy
        assert float(res.params["params"]["router"]) < 0.999
        assert res.history["expert_usage"].shape == (STEPS, 1, 2)


def test_shared_model_matches_single_depth_models(band_system, noninteracting_runs):
    """One model on three depths reaches at each depth the energy of the model trained there alone
    (within 2 standard errors + 1e-3 E_M), and the exact energy (within 1e-3 E_M, Var E_L < 1e-3).
    Energies are re-measured with the parameters fixed, with independent walkers."""
    wf, exact, singles, shared = noninteracting_runs
    e_sh, err_sh = sample_energy(band_system, wf.log_psi, shared.params, DEPTHS, n_per_depth=128, start=shared.mcmc)
    for d, res in enumerate(singles):
        e, err = sample_energy(band_system, wf.log_psi, res.params, [DEPTHS[d]], n_per_depth=128, start=res.mcmc,
                               seed=d + 1)
        tol = 2 * np.hypot(err[0], err_sh[d]) + 1e-3
        print(f"V={DEPTHS[d]}: shared {e_sh[d]:.6f} ± {err_sh[d]:.1e}, alone {e[0]:.6f} ± {err[0]:.1e}, "
              f"exact {exact[d]:.6f}; shared Var E_L {shared.history['variance_per_depth'][-10:, d].mean():.1e}")
        assert abs(e_sh[d] - e[0]) < tol
        assert abs(e_sh[d] - exact[d]) < 1e-3
        assert shared.history["variance_per_depth"][-10:, d].mean() < 1e-3
    # the shared batch really is split across depths
    assert shared.history["walkers_per_depth"][-1].tolist() == [PER_DEPTH] * 3


def test_adam_and_sr_from_a_rough_start(band_system, noninteracting_runs, tmp_path):
    """From a short pretraining (Var E_L ~ 10²), Adam lowers the variance tenfold in 60 steps; SR
    (the default) goes much further, to below 1e-2."""
    wf, exact, _, _ = noninteracting_runs
    runs = {}
    for opt, lr in (("adam", 1e-3), ("sr", 0.005)):
        cfg = _cfg(1, optimizer=opt, learning_rate=lr, pretrain_steps=60, moe_loss_weight=0.01)
        runs[opt] = run_training(band_system, wf, [1.0], cfg, tmp_path / opt).history
        print(opt, runs[opt]["variance"][[0, -1]], runs[opt]["energy"][[0, -1]], exact[1])
    start = runs["sr"]["variance"][0]
    # the same start (same seed, same pretraining; two compiled programs, so equal up to float32 rounding)
    np.testing.assert_allclose(runs["adam"]["variance"][0], start, rtol=1e-5)
    assert start > 10.0
    assert runs["adam"]["variance"][-5:].mean() < start / 10
    assert runs["sr"]["variance"][-5:].mean() < 1e-2
    assert abs(runs["sr"]["energy"][-5:].mean() - exact[1]) < 1e-3


def test_electron_gas_beats_the_plane_wave_determinant(tmp_path):
    """V = 0, λ = 4, 7 polarised electrons in the 3×3 cell (closed shell): the trained Slater–Jastrow
    energy lies below the exact energy of the plane-wave determinant by more than 3 standard errors."""
    system = System(Supercell.diagonal(3), n_up=7, n_down=0, coupling=4.0, phase=PHASE)
    targets = make_targets(system, [0.0], shells=2.0)
    assert targets.closed_shell.all()
    k_occ = np.asarray(targets.kpoints[0][0])
    # the occupied plane waves: Γ and the six shortest supercell reciprocal vectors
    np.testing.assert_allclose(sorted(np.linalg.norm(k_occ, axis=1))[1:], np.linalg.norm(system.supercell.reciprocal[0]))
    e_pw = plane_wave_determinant_energy(system, k_occ)["total"] / 7

    # the formula against sampling that determinant with this engine (an independent check)
    e_det, err_det = sample_energy(system, targets.log_psi, None, [0.0], n_per_depth=256, n_blocks=10)
    print(f"plane-wave determinant: formula {e_pw:.5f}, sampled {e_det[0]:.5f} ± {err_det[0]:.5f}")
    assert abs(e_det[0] - e_pw) < 4 * err_det[0]

    wf = StandInWavefunction(system, ((0.0, 0.0),), shells=1.0, n_stars=3, init_scale=0.05)
    cfg = TrainConfig.from_dict(dict(SR, steps=40, batch_size=256, pretrain_steps=100, learning_rate=0.01,
                                     pretrain_shells=2.0, moe_loss_weight=0.0))
    res = run_training(system, wf, [0.0], cfg, tmp_path)
    e, err = sample_energy(system, wf.log_psi, res.params, [0.0], n_per_depth=256, n_blocks=10, start=res.mcmc)
    print(f"trained: {e[0]:.5f} ± {err[0]:.5f}; plane waves {e_pw:.5f}; gain {(e_pw - e[0]) / err[0]:.1f} stderr")
    assert e[0] < e_pw - 3 * err[0]
