"""Optimisers behind one interface (qernel.optim.base.Optimizer: `init`, `update`).

    opt = make_optimizer("sr", cfg, log_psi=wf.log_psi, n_groups=D, is_complex=True)
    state = opt.init(params)
    params, state, stats = opt.update(params, state, samples, step, extra_grad)

Registered: "sr" (SPRING / MinSR natural gradient without the walkers × parameters matrix,
qernel.optim.sr) and "adam" (qernel.optim.adam). Their names and defaults (learning rate and
update cap) are in qernel.optim.defaults, which imports no JAX: config resolution reads them
before any job starts; each optimiser's module re-exports its entry as `DEFAULTS`. A new
optimiser = one module with `DEFAULTS` and `from_config(cfg, log_psi, n_groups, is_complex)`,
one entry in `qernel.optim.defaults.DEFAULTS` and one line in `_MODULES` below.
qernel.optim.reference holds the explicit-Jacobian SR step, for tests and benchmarks only.

Importing this package (or qernel.optim.defaults) imports no JAX: the optimiser modules and the
names below that come from them are imported on first use (`__getattr__`).
"""

from __future__ import annotations

import importlib

from qernel.optim.defaults import OPTIMIZERS, OptimizerDefaults, check, defaults

#: Optimiser name -> its module (imported by `make_optimizer` on first use).
_MODULES = {"sr": "qernel.optim.sr", "adam": "qernel.optim.adam"}
assert tuple(_MODULES) == OPTIMIZERS

#: Names this package exports from its (JAX) submodules, imported when first asked for.
_LAZY = {
    "adam": "qernel.optim.adam", "sr": "qernel.optim.sr", "reference": "qernel.optim.reference",
    "base": "qernel.optim.base",
    "make_adam": "qernel.optim.adam",
    "Optimizer": "qernel.optim.base", "Samples": "qernel.optim.base", "learning_rate_schedule": "qernel.optim.base",
    "SPRING": "qernel.optim.sr", "fisher_norm_scale": "qernel.optim.sr", "solve_kernel": "qernel.optim.sr",
    "spring_direction": "qernel.optim.sr", "sr_init": "qernel.optim.sr",
}


def make_optimizer(name: str, cfg, *, log_psi, n_groups: int, is_complex: bool):
    """The optimiser `name` (a qernel.optim.base.Optimizer) built from a TrainConfig-like `cfg`
    for a model `log_psi`.

    n_groups: depth groups of the batch; is_complex: whether log ψ is complex. Raises ValueError
    for an unknown name (naming the config key `optimizer`).
    """
    check(name)
    return importlib.import_module(_MODULES[name]).from_config(cfg, log_psi, n_groups, is_complex)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    return module if module.__name__ == f"{__name__}.{name}" else getattr(module, name)


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["OPTIMIZERS", "Optimizer", "OptimizerDefaults", "SPRING", "Samples", "defaults", "fisher_norm_scale",
           "learning_rate_schedule", "make_adam", "make_optimizer", "solve_kernel", "spring_direction", "sr_init"]
