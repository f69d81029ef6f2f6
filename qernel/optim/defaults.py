"""The optimiser names a config may give and each one's defaults, without importing JAX.

    defaults("sr").learning_rate      # 0.05
    OPTIMIZERS                        # ("sr", "adam")

Config resolution (qernel.config, qernel.train_config) reads these before any job starts, so
this module imports nothing heavy; each optimiser's module (qernel.optim.sr, qernel.optim.adam)
re-exports its entry as `DEFAULTS`.
"""

from __future__ import annotations

from typing import NamedTuple


class OptimizerDefaults(NamedTuple):
    """An optimiser's learning rate and update cap when the config gives none."""

    learning_rate: float
    max_update_norm: float


DEFAULTS = {
    # η = 0.05; Fisher norm ‖Oδ‖ <= 0.03, the r.m.s. change of log ψ per step (FermiNet's KFAC norm
    # constraint 1e-3 on δᵀFδ is the same bound); 0.3 let SR blow the variance up by 100× after
    # pretraining (demo at λ = 0).
    "sr": OptimizerDefaults(learning_rate=0.05, max_update_norm=0.03),
    # η = 1e-3 (the usual Adam rate); the whole update's Euclidean norm <= 0.3.
    "adam": OptimizerDefaults(learning_rate=1e-3, max_update_norm=0.3),
}

#: The optimiser names a config may give (`pretrain: {optimizer: ...}`).
OPTIMIZERS = tuple(DEFAULTS)


def check(name: str) -> None:
    """Raise ValueError (naming the config key `optimizer`) for an unknown optimiser name."""
    if name not in DEFAULTS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def defaults(name: str) -> OptimizerDefaults:
    """The learning rate and update cap of optimiser `name` when the config gives none.

    Raises ValueError for an unknown name.
    """
    check(name)
    return DEFAULTS[name]
