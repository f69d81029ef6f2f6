"""The options of the shared training: `TrainConfig` (the sweep's `pretrain:` mapping).

    cfg = TrainConfig.from_dict(sweep["pretrain"])    # unknown keys and bad values: ValueError
    check_finetune_options(sweep["evaluate"]["finetune"])

This module imports no JAX: config resolution (qernel.config) checks every sweep's options
before any job starts, so `snakemake` and `qernel info` do not pay for JAX. The training itself
is qernel.train, which re-exports these names.
"""

from __future__ import annotations

import dataclasses
import math

from qernel import numerics
from qernel.optim.defaults import OPTIMIZERS, defaults

DEPTH_WEIGHTINGS = ("uniform", "variance")
DTYPES = numerics.DTYPES
#: Values of TrainConfig.matmul_precision (jax.default_matmul_precision).
MATMUL_PRECISIONS = ("highest", "high", "default")
#: Default learning rates when `learning_rate` is not given (qernel.optim.defaults).
DEFAULT_LR = {name: defaults(name).learning_rate for name in OPTIMIZERS}
#: Default step caps when `max_update_norm` is not given (sr: Fisher norm ‖Oδ‖; adam: Euclidean norm).
DEFAULT_MAX_UPDATE_NORM = {name: defaults(name).max_update_norm for name in OPTIMIZERS}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Options of the shared training (the sweep's `pretrain:` mapping; see config/README.md).

    steps: optimisation steps. batch_size: total walkers, split across depths (a multiple of
    devices × depths). optimizer: "sr" (SPRING/MinSR natural gradient) or "adam".
    learning_rate: η (None: 0.05 for sr, 1e-3 for adam); lr_decay_steps: η_t = η/(1 + t/decay)
    (<= 0: constant). sr_damping: diagonal shift λ of the SR kernel; sr_damping_relative: a further
    shift λ_rel·tr(K)/M relative to the kernel's scale (qernel.optim.sr.solve_kernel); sr_momentum:
    SPRING μ (0 = MinSR).
    max_update_norm: cap on the step (sr: Fisher norm ‖Oδ‖, the r.m.s. change of log ψ; adam:
    Euclidean norm); <= 0 disables it; None: 0.03 for sr, 0.3 for adam. clip_mad: local
    energies are clipped to median ± clip_mad mean absolute deviations per depth for the
    gradient (<= 0: off; 5 by default, ferminet's). At large V with tens of walkers per depth,
    5 cuts the only signal from the rare low-density configurations (two holes in one minimum,
    E_L up to +170 E_M there): with ModelConfig.prior_modulation the λ = 0 miss at V = 10 E_M was
    +0.56(16) E_M per electron at 5 and +0.06(4) at 15 (tests/engine/test_exact_references.py);
    15 made Adam's first 60 steps noisier (tests/engine/test_train_physics.py), so it is not
    the default.
    mcmc_steps: Metropolis–Hastings moves between updates; burn_in: moves before the first
    update (after pretraining); target_acceptance; init_width: first proposal width (a_M).
    hop_moves: site hops per block of mcmc_steps moves (one electron moved by a moiré lattice
    vector, `qernel.mcmc`; 0 = none): without them a deep potential's walkers never change
    their arrangement over the minima.
    pretrain_steps: orbital-pretraining steps (0 = off) toward the orbitals `pretrain_target` names:
    "bands" (the exact non-interacting orbitals at each depth, qernel.pretrain.make_targets) or
    "hartree_fock" (the symmetry-broken HF orbitals at each depth, qernel.hartree_fock_targets:
    the crystal's, where the ground state is a generalised Wigner crystal);
    pretrain_learning_rate: its Adam learning rate; pretrain_shells: plane-wave cutoff of the target
    orbitals (|G| <= shells·|b|; None: qernel.bands.DEFAULT_SHELLS).
    moe_loss_weight: weight of the mixture-of-experts load-balancing loss.
    checkpoint_every: steps between checkpoints (and train.nc rewrites).
    depth_weighting: "uniform" or "variance" split of the batch across depths;
    reweight_every: steps between re-splits when "variance".
    dtype: "float32" or "float64"; laplacian: "folx" or "jvp".
    max_vmap_batch_size: local energies and (sr) per-walker log-derivatives are computed for at
    most this many walkers at once (all devices together; 0 = all at once); smaller bounds
    memory (qernel.parallel.map_walkers); the SR kernel is accumulated in chunks of as many
    walkers (qernel.optim.sr), and qernel.memory estimates the step's memory from it.
    matmul_precision: precision of every float32 matrix product in the training step
    (determinants, Ewald sums, network, optimiser): "highest" (true float32; the default),
    "high" or "default" (on recent NVIDIA GPUs "default" means TF32, 10-bit mantissas); set with
    jax.default_matmul_precision while the step is traced.
    max_retries: a step with non-finite energies or update is retried with new random numbers
    up to this many times before the run rolls back to a checkpoint (module docstring). log_every: steps between plain log lines on
    stdout (train.log gets every step).
    Raises ValueError for an invalid option (naming it).
    """

    steps: int = 1000
    batch_size: int = 256
    optimizer: str = "sr"
    learning_rate: float | None = None
    lr_decay_steps: float = 1000.0
    sr_damping: float = 1e-3
    sr_momentum: float = 0.9
    sr_damping_relative: float = 0.0
    max_update_norm: float | None = None
    clip_mad: float = 5.0
    mcmc_steps: int = 10
    hop_moves: int = 2
    burn_in: int = 200
    target_acceptance: float = 0.5
    init_width: float = 0.1
    pretrain_steps: int = 200
    pretrain_learning_rate: float = 3e-3
    pretrain_shells: float | None = None
    pretrain_target: str = "bands"
    moe_loss_weight: float = 0.01
    checkpoint_every: int = 100
    depth_weighting: str = "uniform"
    reweight_every: int = 20
    dtype: str = "float32"
    laplacian: str = "folx"
    max_vmap_batch_size: int = 0
    matmul_precision: str = "highest"
    max_retries: int = 3
    log_every: int = 10

    def __post_init__(self):
        ints = {"steps": 0, "batch_size": 1, "mcmc_steps": 1, "hop_moves": 0, "burn_in": 0, "pretrain_steps": 0,
                "checkpoint_every": 1, "reweight_every": 1, "max_retries": 0, "log_every": 1,
                "max_vmap_batch_size": 0}
        for name, minimum in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
        floats = ("lr_decay_steps", "sr_damping", "sr_momentum", "sr_damping_relative", "clip_mad", "init_width",
                  "pretrain_learning_rate", "moe_loss_weight", "target_acceptance")
        optional = tuple(n for n in ("learning_rate", "pretrain_shells") if getattr(self, n) is not None)
        capped = ("max_update_norm",) if self.max_update_norm is not None else ()
        for name in floats + optional + capped:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        for name in ("sr_damping", "init_width", "pretrain_learning_rate") + optional:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.sr_damping_relative < 0:
            raise ValueError(f"sr_damping_relative must be >= 0, got {self.sr_damping_relative!r}")
        if not 0.0 <= self.sr_momentum < 1.0:
            raise ValueError(f"sr_momentum must be in [0, 1), got {self.sr_momentum!r}")
        if not 0.0 < self.target_acceptance < 1.0:
            raise ValueError(f"target_acceptance must be in (0, 1), got {self.target_acceptance!r}")
        if self.moe_loss_weight < 0:
            raise ValueError(f"moe_loss_weight must be >= 0, got {self.moe_loss_weight!r}")
        choices = {"optimizer": OPTIMIZERS, "depth_weighting": DEPTH_WEIGHTINGS, "dtype": DTYPES,
                   "laplacian": numerics.LAPLACIAN_METHODS, "matmul_precision": MATMUL_PRECISIONS,
                   "pretrain_target": PRETRAIN_TARGETS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")

    @classmethod
    def from_dict(cls, d: dict | None) -> "TrainConfig":
        """From a mapping; an unknown key raises ValueError naming it."""
        d = dict(d or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training config key(s) {unknown}; known keys: {sorted(known)}")
        for name in ("lr_decay_steps", "sr_damping", "sr_momentum", "sr_damping_relative", "max_update_norm", "clip_mad", "init_width",
                     "pretrain_learning_rate", "moe_loss_weight", "target_acceptance", "learning_rate",
                     "pretrain_shells"):
            if isinstance(d.get(name), int) and not isinstance(d.get(name), bool):
                d[name] = float(d[name])
        return cls(**d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def lr(self) -> float:
        return DEFAULT_LR[self.optimizer] if self.learning_rate is None else float(self.learning_rate)

    @property
    def update_cap(self) -> float:
        """max_update_norm, or the optimiser's default when not given."""
        if self.max_update_norm is None:
            return DEFAULT_MAX_UPDATE_NORM[self.optimizer]
        return float(self.max_update_norm)


#: The orbital-pretraining targets a config may name (`pretrain: {pretrain_target: ...}`;
#: qernel.train.default_targets builds them).
PRETRAIN_TARGETS = ("bands", "hartree_fock")


def check_finetune_options(options) -> None:
    """Raise ValueError naming `finetune.<key>` for each key of the evaluation's `finetune:` mapping
    that is not a training option (a TrainConfig field), or whose value that option refuses. The
    keys the evaluation sets itself (steps, pretrain_steps) are refused by
    `qernel.evaluate.EvalConfig`."""
    if not isinstance(options, dict):
        raise ValueError(f"finetune must be a mapping of training options, got {options!r}")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown finetune key(s) {['finetune.' + k for k in unknown]}; known: {sorted(known)}")
    try:  # each value as the training option it names (the rest: defaults), before any job runs
        TrainConfig.from_dict(dict(options))
    except ValueError as e:
        raise ValueError(f"finetune.{e}") from None
