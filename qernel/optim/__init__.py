"""Optimisers behind one interface (qernel.optim.base.Optimizer: `init`, `update`).

    opt = make_optimizer("sr", cfg, log_psi=wf.log_psi, n_groups=D, is_complex=True)
    state = opt.init(params)
    params, state, stats = opt.update(params, state, samples, step, extra_grad)

Registered: "sr" (SPRING / MinSR natural gradient without the walkers × parameters matrix,
qernel.optim.sr) and "adam" (qernel.optim.adam). Each module holds its defaults (`DEFAULTS`:
learning rate and update cap). A new optimiser = one module with `DEFAULTS` and
`from_config(cfg, log_psi, n_groups, is_complex)`, plus one line in `_REGISTRY` below.
qernel.optim.reference holds the explicit-Jacobian SR step, for tests and benchmarks only.
"""

from __future__ import annotations

from qernel.optim import adam, sr
from qernel.optim.adam import make_adam
from qernel.optim.base import Optimizer, OptimizerDefaults, Samples, learning_rate_schedule
from qernel.optim.sr import SPRING, fisher_norm_scale, solve_kernel, spring_direction, sr_init

_REGISTRY = {"sr": sr, "adam": adam}

#: The optimiser names a config may give (`pretrain: {optimizer: ...}`).
OPTIMIZERS = tuple(_REGISTRY)


def defaults(name: str) -> OptimizerDefaults:
    """The learning rate and update cap of optimiser `name` when the config gives none.

    Raises ValueError for an unknown name.
    """
    _check(name)
    return _REGISTRY[name].DEFAULTS


def make_optimizer(name: str, cfg, *, log_psi, n_groups: int, is_complex: bool) -> Optimizer:
    """The optimiser `name` built from a TrainConfig-like `cfg` for a model `log_psi`.

    n_groups: depth groups of the batch; is_complex: whether log ψ is complex. Raises ValueError
    for an unknown name (naming the config key `optimizer`).
    """
    _check(name)
    return _REGISTRY[name].from_config(cfg, log_psi, n_groups, is_complex)


def _check(name: str) -> None:
    if name not in _REGISTRY:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


__all__ = ["OPTIMIZERS", "Optimizer", "OptimizerDefaults", "SPRING", "Samples", "defaults", "fisher_norm_scale",
           "learning_rate_schedule", "make_adam", "make_optimizer", "solve_kernel", "spring_direction", "sr_init"]
