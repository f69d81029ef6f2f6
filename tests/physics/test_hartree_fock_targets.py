"""Hartree–Fock pretraining targets against the band solver (λ = 0: HF is exact and equals it)."""

import numpy as np

from qernel.bands import noninteracting_ground_state
from qernel.hartree_fock import Basis, band_orbitals_in_basis
from qernel.hartree_fock_targets import hartree_fock_targets, procrustes_rotation
from qernel.lattice import Supercell
from qernel.pretrain import target_orbitals
from qernel.system import System

PHASE = np.deg2rad(45.0)


def test_procrustes_recovers_a_rotation():
    rng = np.random.default_rng(0)
    b, _ = np.linalg.qr(rng.normal(size=(12, 3)) + 1j * rng.normal(size=(12, 3)))
    u, _ = np.linalg.qr(rng.normal(size=(3, 3)) + 1j * rng.normal(size=(3, 3)))
    c = b @ u.conj().T
    np.testing.assert_allclose(c @ procrustes_rotation(c, b), b, atol=1e-12)


def test_noninteracting_targets_are_the_band_determinants():
    """λ = 0, 4 holes filling the lowest band of 2×2 (closed shell): the HF targets span the band
    orbitals at every depth (projectors equal), their energies are the band solver's, and at the
    reference depth the columns ARE the band orbitals (the model's prior) in the model's order."""
    system = System(Supercell.diagonal(2), n_up=4, n_down=0, coupling=0.0, phase=PHASE)
    depths = [5.0, 7.5, 10.0]
    t = hartree_fock_targets(system, depths, reference_depth=7.5, shells=4.0, starts=1, seeded=False)
    basis = Basis.build(system, 4.0)
    area = system.supercell.area
    for d, v in enumerate(depths):
        gs = noninteracting_ground_state(system, v)
        assert abs(t.energies[d] - gs.energy) < 1e-4 * abs(gs.energy)  # the HF basis is centred at K = 0
        b = band_orbitals_in_basis(system, basis, v)[0]
        b = b / np.linalg.norm(b, axis=0)
        c = t.coefficients[0][d] * np.sqrt(area)
        np.testing.assert_allclose(c @ c.conj().T, b @ b.conj().T, atol=2e-3)  # basis truncation of the bands' orbitals
    b_ref = band_orbitals_in_basis(system, basis, 7.5)[0]
    np.testing.assert_allclose(t.coefficients[0][1] * np.sqrt(area), b_ref / np.linalg.norm(b_ref, axis=0), atol=2e-3)
    # the orbitals as the pretraining evaluates them: φ_j(r) = Σ_K c_Kj e^{iK·r} / √A, normalised on the supercell
    x = np.random.default_rng(1).uniform(size=(4000, 2)) @ system.supercell.lattice
    vals = np.stack([target_orbitals(t.tables, (4, 0), x[i:i + 4], 1)[0] for i in range(0, 4000, 4)])
    norm = np.mean(np.abs(vals) ** 2, axis=(0, 1)) * area
    np.testing.assert_allclose(norm, 1.0, atol=0.1)


def test_training_pretrains_toward_the_hartree_fock_orbitals(tmp_path, capsys):
    """`pretrain_target: hartree_fock` builds HF targets at the training depths and fits them: the
    orbital loss falls, and the targets' energies (logged) are the HF energies at those depths."""
    from qernel.hartree_fock import hartree_fock
    from qernel.model import make_wavefunction
    from qernel.train import TrainConfig, run_training

    system = System(Supercell.diagonal(1), n_up=1, n_down=1, coupling=2.0, phase=PHASE)
    wf = make_wavefunction(system, "tiny", ((5.0, 5.0),))
    cfg = TrainConfig.from_dict(dict(steps=0, batch_size=16, pretrain_steps=40, burn_in=5, mcmc_steps=2,
                                     pretrain_target="hartree_fock", checkpoint_every=10, log_every=10))
    res = run_training(system, wf, [5.0], cfg, tmp_path, progress=False)
    losses = np.asarray(res.history["pretrain_loss"])
    assert losses[-5:].mean() < 0.5 * losses[:5].mean()
    e_hf = hartree_fock(system, 5.0, shells=2.0, n_starts=2).energy / 2
    out = capsys.readouterr().out
    assert f"V=5: {e_hf:.5f}" in out, out
