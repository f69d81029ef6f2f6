"""Energy components: they sum to the total sample by sample; the Wigner-lattice Madelung energy."""

import math

import jax
import numpy as np
import pytest

from qernel.bands import noninteracting_ground_state, slater_log_psi
from qernel.ewald import Ewald
from qernel.hamiltonian import make_local_energy, potential_energies
from qernel.lattice import Supercell
from qernel.moire import moire_potential
from qernel.observables import EnergyAccumulator
from qernel.system import System

LAMBDA = 10.62
PHASE = math.pi / 4


@pytest.mark.parametrize("n", [2, 3, 4])
def test_wigner_lattice_interaction_is_madelung(n):
    """One electron per moiré cell in an n×n supercell: E_int = λ N ξ_M / 2, ξ_M of the 1×1 cell."""
    with jax.enable_x64(True):
        sc = Supercell.diagonal(n)
        system = System(sc, n_up=n * n, coupling=LAMBDA, phase=PHASE)
        offsets = np.random.default_rng(n).random((5, 1, 2)) * 3.0  # 5 walkers, rigid translations
        x = sc.moire_translations[None] + offsets  # (5, N, 2)
        pot, inter = potential_energies(system, x, depth=2.5)
        xi = Ewald(Supercell.diagonal(1)).madelung
        np.testing.assert_allclose(np.asarray(inter), LAMBDA * n * n * xi / 2, rtol=1e-10)
        # moiré energy of a lattice is N Δ(r0): Δ is moiré-periodic
        np.testing.assert_allclose(np.asarray(pot), n * n * moire_potential(offsets[:, 0], 2.5, PHASE), rtol=1e-10)


def test_madelung_constant_bonsall_maradudin():
    """ξ_M/2 = −1.1061026/r_s for the triangular lattice, π r_s² = √3/2 (cell area)."""
    rs = math.sqrt(math.sqrt(3) / 2 / math.pi)
    assert Ewald(Supercell.diagonal(1)).madelung / 2 == pytest.approx(-1.1061026 / rs, rel=1e-7)


def test_local_energy_components_sum_and_accumulate():
    """Per sample, total = kinetic + moiré + interaction, with the moiré and interaction parts
    equal to `potential_energies`. The wavefunction is the exact λ = 0 determinant, an
    eigenstate of the one-body part, so kinetic + moiré = Σ occupied Bloch levels for every
    sample; the accumulated per-electron energies add up the same way."""
    with jax.enable_x64(True):
        sc = Supercell.diagonal(2)
        depth = 1.5
        system = System(sc, n_up=2, n_down=1, coupling=LAMBDA, phase=PHASE)
        gs = noninteracting_ground_state(system, depth)
        local_energy = jax.jit(jax.vmap(make_local_energy(system, slater_log_psi(gs, system.n_up)),
                                        in_axes=(None, 0, 0)))
        rng = np.random.default_rng(0)
        x = sc.to_cart(rng.random((4, 6, 3, 2)))  # (T, W, N, 2)
        cond = np.full((6, 1), depth)
        acc = EnergyAccumulator(system.n_electrons)
        for xt in x:
            comp = local_energy(None, xt, cond)
            kin, pot, inter = (np.asarray(c) for c in comp)
            np.testing.assert_allclose(np.asarray(comp.total), kin + pot + inter, rtol=1e-14)
            ref_pot, ref_inter = potential_energies(system, xt, depth)
            np.testing.assert_allclose(pot, np.asarray(ref_pot), rtol=1e-12)
            np.testing.assert_allclose(inter, np.asarray(ref_inter), rtol=1e-12)
            np.testing.assert_allclose(kin + pot, gs.energy, rtol=1e-7)
            acc.update(comp)
        res = acc.result()
        parts = res.kinetic_energy + res.potential_energy + res.interaction_energy
        assert res.energy == pytest.approx(parts, rel=1e-12)
        assert res.kinetic_energy + res.potential_energy == pytest.approx(gs.energy / 3, rel=1e-7)
        assert res.interaction_energy != 0.0
        assert res.n_samples == 24


def test_energy_accumulator_errors_and_streaming():
    rng = np.random.default_rng(1)
    t, w, n = 16384, 4, 6
    kin, pot, inter = rng.normal(10, 2, (t, w)), rng.normal(-5, 1, (t, w)), rng.normal(3, 0.5, (t, w))
    one = EnergyAccumulator(n).update((kin, pot, inter)).result()
    streamed = EnergyAccumulator(n)
    for i in range(0, t, 100):
        streamed.update((kin[i:i + 100], pot[i:i + 100], inter[i:i + 100]))
    streamed = streamed.result()
    assert streamed.energy == pytest.approx(one.energy, rel=1e-12)
    assert streamed.energy_stderr == pytest.approx(one.energy_stderr, rel=1e-9)
    total = kin + pot + inter
    assert one.energy == pytest.approx(total.mean() / n, rel=1e-12)
    assert one.variance == pytest.approx(total.var(ddof=1), rel=1e-9)
    naive = total.std(ddof=1) / np.sqrt(t * w) / n  # independent samples
    assert one.energy_stderr == pytest.approx(naive, rel=0.1)
    assert one.kinetic_energy_stderr == pytest.approx(2 / np.sqrt(t * w) / n, rel=0.1)
    assert one.n_eff == pytest.approx(t * w, rel=0.25)
    ds = one.to_dataset()
    for name in ("energy", "kinetic_energy", "potential_energy", "interaction_energy"):
        assert ds[name].ndim == 0 and f"{name}_stderr" in ds
