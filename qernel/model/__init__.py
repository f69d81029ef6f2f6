"""The QERNEL network: a conditioned, periodic, antisymmetric neural wavefunction (DESIGN.md §2).

One small file per part: `config` (ModelConfig, presets), `features` (periodic inputs),
`film` (conditioning), `attention` (grouped-query attention), `moe` (mixture of experts),
`transformer` (the layers), `orbitals` (Bloch-envelope Slater orbitals), `jastrow`
(periodic two-body Jastrow), `wavefunction` (the assembled model).

`ModelConfig` imports no JAX (config resolution reads it before any job starts);
`Wavefunction` and `make_wavefunction` (Flax) are imported on first use.
"""

import importlib

from qernel.model.config import ModelConfig


def __getattr__(name: str):
    if name in ("Wavefunction", "make_wavefunction"):
        return getattr(importlib.import_module("qernel.model.wavefunction"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ModelConfig", "Wavefunction", "make_wavefunction"]
