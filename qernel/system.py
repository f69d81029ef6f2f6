"""The many-electron system: supercell, electron counts, coupling and moiré phase.

The depth V is *not* part of the system: it is the condition that varies across a sweep
(each walker carries its own). Energies are in E_M, lengths in a_M.

Electron ordering everywhere in QERNEL: the n_up spin-up electrons first, then the
n_down spin-down electrons; positions have shape (..., N, 2).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from qernel.lattice import Supercell
from qernel.units import PhysicalParameters


@dataclasses.dataclass(frozen=True)
class System:
    """H = Σ_i [-½∇² + Δ_V(r_i)] + λ Σ_{i<j} v_E(r_ij) + (N/2) λ ξ_M, in moiré units.

    supercell: the periodic cell; n_up, n_down: electrons per spin;
    coupling: λ = a_M / a_B*; phase: φ of the moiré potential in radians;
    physical: the physical parameters when known (gives E_M in meV), else None.
    Raises ValueError for a negative spin count or no electron, λ < 0 or not finite, or φ not finite.
    """

    supercell: Supercell
    n_up: int
    n_down: int = 0
    coupling: float = 0.0
    phase: float = 0.0
    physical: PhysicalParameters | None = None

    def __post_init__(self):
        if self.n_up < 0 or self.n_down < 0 or self.n_up + self.n_down == 0:
            raise ValueError(f"need n_up, n_down >= 0 and at least one electron, got {self.n_up}, {self.n_down}")
        if not (self.coupling >= 0 and math.isfinite(self.coupling)):
            raise ValueError(f"coupling λ must be finite and >= 0, got {self.coupling!r}")
        if not math.isfinite(self.phase):
            raise ValueError(f"phase must be finite, got {self.phase!r}")

    @property
    def n_electrons(self) -> int:
        return self.n_up + self.n_down

    @property
    def filling(self) -> float:
        """ν = N / |det S| (electrons per moiré cell)."""
        return self.n_electrons / self.supercell.n_cells

    @property
    def spins(self) -> np.ndarray:
        """Spin labels (N,): +1 for up, -1 for down, up electrons first."""
        return np.concatenate([np.ones(self.n_up, int), -np.ones(self.n_down, int)])

    @property
    def energy_unit_meV(self) -> float | None:
        """E_M in meV, or None if the system was given in moiré units only."""
        return None if self.physical is None else self.physical.energy_unit_meV

    @property
    def phase_deg(self) -> float:
        return math.degrees(self.phase)

    def config_dict(self) -> dict:
        """The system in moiré units as a config-like mapping (supercell, n_up, n_down, coupling,
        phase_deg, energy_unit_meV): what training and evaluation outputs record."""
        return {"supercell": [list(r) for r in self.supercell.matrix], "n_up": self.n_up, "n_down": self.n_down,
                "coupling": self.coupling, "phase_deg": self.phase_deg, "energy_unit_meV": self.energy_unit_meV}
