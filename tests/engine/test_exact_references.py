"""The real network trained by the shared engine against answers computed outside it.

- λ = 0 up to the demo's deepest depth (V = 10 E_M), starting from an orbital prior that is NOT
  the exact answer at the trained depths (band orbitals interpolated between other depths, no
  orbital pretraining): the energy must reach the band solver's within 1e-3 E_M per electron.
  Still `known_failure` (the reason and the numbers are above the test).
- Two electrons (one up, one down) in one moiré cell, interacting: the energy must lie above the
  exact-diagonalisation energy (variational bound, 3σ) and within 0.01 E_M per electron of it.
  It runs in CI.

Both fail when the kinetic energy is scaled by 1.01 (docs/validation.md records the numbers).
"""

import math

import jax
import numpy as np
import pytest

from qernel.bands import noninteracting_ground_state
from qernel.exact_diagonalization import extrapolated_energy, two_electron_energy
from qernel.hartree_fock import hartree_fock
from qernel.lattice import Supercell
from qernel.model import make_wavefunction
from qernel.system import System
from qernel.train import TrainConfig, run_training

from .conftest import PHASE
from .helpers import sample_energy, sample_variance

NONINT_DEPTHS = [5.0, 10.0]

# The λ = 0 check still fails, for a measured reason outside what it tests (2026-11-30, this CPU);
# the two-electron check below passes and runs in CI.
# History: the experts were routed per electron and their smooth gates made the first SR step
# raise Var E_L ~250x (fixed: routed on the condition, qernel.model.moe). Then, at V = 10 E_M the
# error sat in the low-density configurations (two holes in one minimum, log|ψ| ~ 6 below the
# median, E_L up to +170 E_M): the additive neural orbital a·e^{ik·r} dominates there where the
# localised band orbital is exponentially small, and the gradient's clipping at 5 MADs removed
# the only signal from them. The prior's multiplicative modulation (qernel.model.orbitals) and
# clip_mad 15 (both set by this test; neither is the default) fix that part: from the single V = 7.5 prior, 150 steps, lr 0.005, final E − exact at
# V = 5, 10: +0.025(13), +0.44(19) before; modulation with clip 5 +0.011(6), +0.56(16); clip 15
# without modulation +0.050(19), +0.69(22); both -0.001(9), +0.064(39).
# With the prior interpolated between anchors (this test, 300 steps, lr 0.01 decaying over 75
# steps; run with -m known_failure): start Var E_L 8.5, 4.7 E_M²; trained +1.8e-5 ± 2.2e-3,
# +6.5e-4 ± 2.5e-3 (it xpasses on this CPU); +0.0058(20), -0.0011(30) at lr 0.005 without decay.
# Both are within 1e-3 of exact, but σ ~ 2e-3 cannot
# resolve 1e-3 (with the walkers drawn from the prior's determinant, 2026-11-30: +2.75e-3 ± 2.0e-3,
# +9.5e-4 ± 2.5e-3, Var E_L 0.2 and 0.6 at the end: the start was not the limit; the suite's fast
# XLA compilation, tests/conftest.py: +6.2e-4 ± 2.2e-3, +8.0e-3 ± 4.1e-3; with moire_shells 3 (the
# neural head sees higher harmonics) +2.6e-3 ± 1.7e-3, -1.0e-3 ± 4.3e-3, Var E_L 0.30 and 0.63; with
# lr 0.02 constant -8.6e-4 ± 2.3e-3, +7.7e-3 ± 2.1e-3, Var E_L 0.39 and 4.3; neither is the fix; with
# the site hops of qernel.mcmc in training, 2026-12-01: -6.6e-4 ± 2.0e-3, -1.1e-2 ± 1.0e-2 measured
# without hops, where the training walkers reassigned to the other depth kept their arrangement
# over the minima; measured with hops, as `sample_energy` now does: +3.3e-3 ± 1.9e-3,
# +4.8e-3 ± 1.8e-3): on another CPU (other rounding, another Monte Carlo path) the same test is another
# draw, and |diff| < 1e-3 holds for only ~1/3 of draws of that σ. Var E_L stays
# at 0.2-0.4 E_M² at V = 5 after 300 steps (0.03-0.2 at V = 10), a bulk spread (median |E_L − E|
# 0.17 E_M), not outliers. It is the ansatz, not SR (2026-12-01): the network fitted to the exact
# orbitals at V = 5 alone (1500 orbital-pretraining steps, loss 1e-5) keeps Var E_L 0.157. With
# ModelConfig.learnable_prior (the prior's plane-wave coefficients learnable) the training's Var
# E_L ends at 0.04 and 0.008 (0.15, 0.06 without), evaluated +7.2e-4 ± 1.2e-3 (Var 0.10) and
# +4.2e-3 ± 4.0e-3 (Var 0.44: rare configurations at V = 10 that the 64 training walkers per depth
# do not visit); not yet the fix either. With learnable_prior and a constant learning rate 0.01
# (lr_decay_steps 1000): +7.8e-4 ± 9.0e-4, -4.9e-4 ± 1.1e-3 (Var E_L 0.057, 0.12; this draw within
# 1e-3); adding ModelConfig.one_body_jastrow: +5.1e-4 ± 6.6e-4, -1.8e-3 ± 9.5e-4 (Var E_L 0.036,
# 0.33; 2026-12-01). With the learnable prior's coefficients scaled by their largest size over the
# anchors (qernel.model.orbitals, 2026-12-01): +4.2e-4 ± 5.7e-4, +5.9e-4 ± 2.0e-3 (Var E_L 0.019,
# 0.045); 500 steps: +9.4e-4 ± 3.7e-4, -4.1e-4 ± 8.5e-4 (Var E_L 0.0057, 0.062: V = 5 at the
# tolerance, V = 10's tail not gone, and 400 s of CPU); ModelConfig.additive_orbitals false:
# +1.5e-3 ± 1.3e-3, +3.7e-3 ± 7.5e-3 (Var E_L 0.24, 0.13; not the λ = 0 floor's cause).
# The check needs Var E_L ~ 0.005 (σ ~ 3e-4) at both depths and stays `known_failure`
# (`make test` deselects it, `pytest -m known_failure` runs it) until the training gets there.
FLOOR_REASON = ("the CPU training's floor (Var E_L ~ 0.2 E_M² at V = 5 after 300 steps) leaves σ ~ 2e-3, above the "
                "1e-3 checked (issue 17; numbers in the module)")


@pytest.mark.slow
@pytest.mark.known_failure
@pytest.mark.xfail(strict=False, reason=FLOOR_REASON)
def test_noninteracting_deep_potential_from_a_non_exact_start(tmp_path):
    """λ = 0, 4 spin-polarised holes filling the lowest band of the 2×2 cell (closed shell; at V = 10
    E_M the orbitals are localised on the moiré minima). One shared tiny model for V = 5 and 10, its
    prior the band orbitals at the anchor depths 1, 7.5 and 14 E_M interpolated linearly in V (the
    demo's construction, `prior_anchors`; neither checked depth is an anchor) and its neural
    amplitude zero at the start, no orbital pretraining: shared SR training must bring both depths
    to the band solver's energy within 1e-3 E_M per electron, and not below it by more than 3
    standard errors (measured with the parameters fixed). The start is checked not to be the answer:
    its Var E_L (0 for the exact determinant) is > 0.5 E_M² at both depths. A 1 % error in the
    kinetic energy shifts the exact energy by 1 % of ⟨T⟩: 0.076 and 0.120 E_M per electron at
    V = 5 and 10 (qernel.bands), far outside 1e-3."""
    system = System(Supercell.diagonal(2), n_up=4, n_down=0, coupling=0.0, phase=PHASE)
    wf = make_wavefunction(system, {"preset": "tiny", "prior_anchors": 3, "prior_modulation": True,
                                    "orbital_init_scale": 0.0}, ((1.0, 14.0),))
    exact = np.array([noninteracting_ground_state(system, v).energy for v in NONINT_DEPTHS]) / 4
    start_var = sample_variance(system, wf.log_psi, wf.init(jax.random.PRNGKey(0)), NONINT_DEPTHS, n_per_depth=64,
                                n_blocks=5)
    cfg = TrainConfig.from_dict(dict(steps=STEPS_A, batch_size=128, pretrain_steps=0, burn_in=100, mcmc_steps=10,
                                     learning_rate=0.01, lr_decay_steps=75, clip_mad=15.0, checkpoint_every=10_000,
                                     log_every=50))
    res = run_training(system, wf, NONINT_DEPTHS, cfg, tmp_path)
    e, err = sample_energy(system, wf.log_psi, res.params, NONINT_DEPTHS, n_per_depth=256, n_blocks=20,
                           start=res.mcmc)
    for d, v in enumerate(NONINT_DEPTHS):
        print(f"V={v:g}: start Var E_L {start_var[d]:.3f}, trained {e[d]:.6f} ± {err[d]:.1e}, exact {exact[d]:.6f}, "
              f"diff {e[d] - exact[d]:+.2e}")
    # the start is not the answer (so the check is of the training, not of the prior)
    assert np.all(start_var > 0.5)
    assert np.all(np.abs(e - exact) < 1e-3)
    assert np.all(e > exact - 3 * err)


STEPS_A = 300


PAIR_DEPTH, PAIR_COUPLING = 5.0, 1.0
PAIR_TOL = 0.01  # E_M per electron; see the docstring


@pytest.mark.slow
def test_two_electrons_against_exact_diagonalisation(tmp_path):
    """1 up + 1 down electron in one moiré cell, λ = 1, V = 5 E_M: the tiny network trained by the
    engine (orbital pretraining + 200 SR steps, the learning rate 0.01 decaying as 1/(1 + t/75),
    clip_mad 15) against `qernel.exact_diagonalization` computed here.

    The exact energy: the lowest eigenvalue at plane-wave cutoffs 4, 5, 6 (moiré reciprocal
    lengths; seconds), extrapolated E(s) = E_∞ + a s^−p. Each cutoff's energy is an upper bound on
    the exact one and E_∞ lies below them, so the variational check uses E_∞ (E_VMC > E_∞ − 3σ),
    and the accuracy check E_VMC − E_∞ < 0.01 E_M per electron. 0.01 is what this short CPU
    training reaches (measured 2026-11-30, this test: +0.0056(24) with the walkers starting from
    the pretraining targets' determinant, qernel.determinant_sampling; -0.0014(24) from the
    earlier uniform start; Var E_L ~ 0.2 E_M² after 200 steps; with the kinetic energy scaled by 1.01 in qernel.hamiltonian, tried and reverted,
    +0.0289(23), a failure; with the prior's modulation on +0.0037(22), and +0.0316(22) broken);
    a 1 % error in the kinetic energy shifts the exact energy by 1 % of ⟨T⟩ (0.034 E_M per
    electron for the λ = 0 state here, qernel.bands), more than the tolerance."""
    sc = Supercell.diagonal(1)
    system = System(sc, n_up=1, n_down=1, coupling=PAIR_COUPLING, phase=PHASE)
    e_inf, energies = extrapolated_energy(sc, PAIR_DEPTH, PAIR_COUPLING, PHASE, shells=(4.0, 5.0, 6.0))
    e_inf, energies = e_inf / 2, energies / 2
    assert e_inf <= energies[-1] and energies[-1] - e_inf < 2e-3  # cutoff error well below the 0.01 checked
    wf = make_wavefunction(system, "tiny", ((PAIR_DEPTH, PAIR_DEPTH),))
    cfg = TrainConfig.from_dict(dict(steps=STEPS_B, batch_size=128, pretrain_steps=100, burn_in=100, mcmc_steps=10,
                                     learning_rate=0.01, lr_decay_steps=75, clip_mad=15.0, checkpoint_every=10_000,
                                     log_every=50))
    res = run_training(system, wf, [PAIR_DEPTH], cfg, tmp_path)
    e, err = sample_energy(system, wf.log_psi, res.params, [PAIR_DEPTH], n_per_depth=512, n_blocks=20,
                           start=res.mcmc)
    print(f"two electrons, V={PAIR_DEPTH:g}, λ={PAIR_COUPLING:g}: VMC {e[0]:.5f} ± {err[0]:.5f}; exact {e_inf:.5f} "
          f"(cutoffs 4, 5, 6: {np.round(energies, 5).tolist()}); diff {e[0] - e_inf:+.5f}")
    assert e[0] > e_inf - 3 * err[0]
    assert e[0] - e_inf < PAIR_TOL
    # and below the Hartree–Fock determinant (qernel.hartree_fock, converged in the cutoff:
    # -6.25221 E_M per electron at 3, 4 and 5 shells), as a correlated ansatz that contains a
    # determinant must be: the correlation energy here is 0.082 E_M per electron
    hf = hartree_fock(system, PAIR_DEPTH, shells=4.0, n_starts=4, seed=0)
    assert hf.converged
    print(f"two electrons: Hartree-Fock {hf.energy / 2:.5f}; VMC - HF {e[0] - hf.energy / 2:+.5f} ± {err[0]:.5f}")
    assert e[0] < hf.energy / 2 - 3 * err[0]


STEPS_B = 200
