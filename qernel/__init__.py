"""QERNEL: one conditioned neural wavefunction for phase-diagram sweeps of moiré heterobilayers.

Moiré units throughout (lengths a_M, energies E_M); see DESIGN.md and docs/architecture.md.
Submodules are imported on demand (``import qernel`` stays cheap and does not import jax).
"""

__version__ = "0.1.0"
