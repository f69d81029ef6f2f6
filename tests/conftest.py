"""Shared fixtures for the QERNEL test suite."""

import jax
import pytest


@pytest.fixture
def x64():
    """Run a test with 64-bit JAX arrays (restored afterwards)."""
    with jax.enable_x64(True):
        yield
