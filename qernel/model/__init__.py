"""The QERNEL network: a conditioned, periodic, antisymmetric neural wavefunction (DESIGN.md §2).

One small file per part: `config` (ModelConfig, presets), `features` (periodic inputs),
`film` (conditioning), `attention` (grouped-query attention), `moe` (mixture of experts),
`transformer` (the layers), `orbitals` (Bloch-envelope Slater orbitals), `jastrow`
(periodic two-body Jastrow), `wavefunction` (the assembled model).
"""

from qernel.model.config import ModelConfig
from qernel.model.wavefunction import Wavefunction, make_wavefunction

__all__ = ["ModelConfig", "Wavefunction", "make_wavefunction"]
