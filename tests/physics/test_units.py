"""Unit conversions against the values quoted in DESIGN.md and textbook relations."""

import math

import pytest

from qernel.units import BOHR_RADIUS_NM, WSE2_WS2, PhysicalParameters, coupling, moire_energy_meV


def test_wse2_ws2_preset():
    assert WSE2_WS2.energy_unit_meV == pytest.approx(3.3756, abs=5e-4)
    assert WSE2_WS2.to_moire(15.0) == pytest.approx(4.4437, abs=5e-4)
    assert WSE2_WS2.coupling == pytest.approx(10.62, abs=5e-3)
    assert WSE2_WS2.to_meV(WSE2_WS2.to_moire(15.0)) == pytest.approx(15.0)


def test_effective_hartree_is_lambda_squared_moire_energy():
    # Ha* = e²/(ε a_B*) = Ha · (m*/m_e) / ε², and Ha* = λ² E_M.
    p = PhysicalParameters(0.5, 7.0, 12.0)
    hartree_meV = 27211.386245988
    assert p.coupling**2 * p.energy_unit_meV == pytest.approx(hartree_meV * 0.5 / 49.0, rel=1e-7)


def test_free_electron_scale():
    # m* = m_e, a_M = a_0: E_M is one Hartree and λ = 1 (ε = 1).
    assert moire_energy_meV(1.0, BOHR_RADIUS_NM) == pytest.approx(27211.386245988, rel=1e-7)
    assert coupling(1.0, 1.0, BOHR_RADIUS_NM) == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan])
def test_rejects_unphysical_inputs(bad):
    with pytest.raises(ValueError, match="effective_mass"):
        moire_energy_meV(bad, 8.0)
