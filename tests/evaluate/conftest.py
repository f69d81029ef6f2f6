"""Fixtures of the evaluation tests: small systems with exact λ = 0 answers."""

import math

import pytest

from qernel.lattice import Supercell
from qernel.system import System

PHASE = math.radians(45.0)


@pytest.fixture(scope="session")
def holes_3x3():
    """The demo geometry at λ = 0: 6 spin-polarised holes in a 3×3 supercell (ν = 2/3)."""
    return System(Supercell.diagonal(3), n_up=6, n_down=0, coupling=0.0, phase=PHASE)


@pytest.fixture(scope="session")
def pair_2x2():
    """An interacting 2×2 system: two up and one down electron, λ = 1."""
    return System(Supercell.diagonal(2), n_up=2, n_down=1, coupling=1.0, phase=PHASE)
