"""Physical units ↔ moiré units.

Moiré units: length a_M (the moiré period), energy E_M = ħ²/(m* a_M²).
Coupling λ = a_M / a_B*, with the effective Bohr radius a_B* = ε (m_e/m*) a_0.
In these units the Coulomb energy e²/(ε r) is λ / r and the effective Hartree
Ha* = e²/(ε a_B*) equals λ² E_M.
"""

from __future__ import annotations

import dataclasses
import math

#: Bohr radius a_0 in nm (CODATA 2018).
BOHR_RADIUS_NM = 0.0529177210903
#: ħc in eV·nm (CODATA 2018).
HBAR_C_EV_NM = 197.3269804
#: Electron rest energy m_e c² in eV (CODATA 2018).
ELECTRON_MASS_EV = 0.51099895000e6
#: ħ²/m_e in meV·nm².
HBAR2_OVER_ME_MEV_NM2 = HBAR_C_EV_NM**2 / ELECTRON_MASS_EV * 1e3


def moire_energy_meV(effective_mass: float, moire_length_nm: float) -> float:
    """E_M = ħ²/(m* a_M²) in meV; m* in units of m_e, a_M in nm.

    Raises ValueError unless both are positive and finite.
    """
    _positive(effective_mass=effective_mass, moire_length_nm=moire_length_nm)
    return HBAR2_OVER_ME_MEV_NM2 / (effective_mass * moire_length_nm**2)


def effective_bohr_radius_nm(effective_mass: float, epsilon: float) -> float:
    """a_B* = ε (m_e/m*) a_0 in nm. Raises ValueError unless m* and ε are positive and finite."""
    _positive(effective_mass=effective_mass, epsilon=epsilon)
    return epsilon / effective_mass * BOHR_RADIUS_NM


def coupling(effective_mass: float, epsilon: float, moire_length_nm: float) -> float:
    """λ = a_M / a_B* (dimensionless). Raises ValueError unless m*, ε and a_M are positive and finite."""
    _positive(moire_length_nm=moire_length_nm)
    return moire_length_nm / effective_bohr_radius_nm(effective_mass, epsilon)


@dataclasses.dataclass(frozen=True)
class PhysicalParameters:
    """A heterobilayer in physical units: m* (m_e), ε, a_M (nm)."""

    effective_mass: float
    epsilon: float
    moire_length_nm: float

    @property
    def energy_unit_meV(self) -> float:
        """E_M in meV."""
        return moire_energy_meV(self.effective_mass, self.moire_length_nm)

    @property
    def coupling(self) -> float:
        """λ = a_M / a_B*."""
        return coupling(self.effective_mass, self.epsilon, self.moire_length_nm)

    def to_moire(self, energy_meV):
        """An energy (scalar or array) in meV → E_M."""
        return energy_meV / self.energy_unit_meV

    def to_meV(self, energy_moire):
        """An energy (scalar or array) in E_M → meV."""
        return energy_moire * self.energy_unit_meV


#: The WSe2/WS2-like preset of DESIGN.md: m* = 0.35 m_e, ε = 5, a_M = 8.031 nm
#: (E_M = 3.3756 meV; V = 15 meV is 4.4437 E_M; φ = 45°).
WSE2_WS2 = PhysicalParameters(effective_mass=0.35, epsilon=5.0, moire_length_nm=8.031)


def _positive(**values):
    for name, value in values.items():
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
