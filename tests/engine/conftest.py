"""Fixtures of the engine tests: tiny systems with known answers."""

import math

import pytest

from qernel.lattice import Supercell
from qernel.system import System

PHASE = math.radians(45.0)


@pytest.fixture(scope="session")
def band_system():
    """2×2 supercell, 4 spin-up electrons (the filled lowest band: a closed shell at V > 0), λ = 0."""
    return System(Supercell.diagonal(2), n_up=4, n_down=0, coupling=0.0, phase=PHASE)


@pytest.fixture(scope="session")
def pair_system():
    """2×2 supercell, one up and one down electron, λ = 1."""
    return System(Supercell.diagonal(2), n_up=1, n_down=1, coupling=1.0, phase=PHASE)
