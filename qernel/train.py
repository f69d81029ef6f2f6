"""Training one shared conditioned wavefunction over a grid of depths (DESIGN.md §3, §4).

    cfg = TrainConfig.from_dict(sweep["pretrain"])
    result = run_training(system, wf, depths, cfg, out_dir, seed=0, attrs=provenance)

One step (one jitted function, state donated): a Metropolis–Hastings block for every walker at its
own depth; local energies; the per-depth unbiased gradient with clipped energies (qernel.loss);
a SPRING/MinSR natural-gradient step or Adam (qernel.optim) plus the MoE load-balancing term;
a NaN/inf guard that keeps the previous state inside the jitted step when anything is
non-finite, so the host can retry from the last good state with another random key.

The batch of `batch_size` walkers is split across the D depths: walker w starts in group w mod D
(uniform split, independent of the device count). With depth_weighting "variance" the split is
recomputed every `reweight_every` steps from a running mean of each depth's local-energy variance
(Neyman allocation, n_d ∝ σ_d, at least batch/(4D) walkers each); walkers that change depth keep
their positions and re-equilibrate in the next MCMC block. Every walker has the same weight in
the loss, so a depth's share of the gradient is its share of the walkers.

Random numbers: the key of step t (attempt a) is fold_in(fold_in(k_train, t), a), with k_train
derived from the seed, so the trajectory does not depend on where a run was interrupted: a run
resumed from a checkpoint reproduces an uninterrupted run bit for bit on CPU.

Outputs in out_dir: checkpoints/ckpt_{step:08d}.msgpack (step 0 = after pretraining and burn-in,
then every checkpoint_every steps and at the end), train.nc (per-step history, energies per
electron in E_M; rewritten at every checkpoint), train.log (appended, never truncated), and
model.msgpack (final params + metadata).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import xarray as xr

from qernel import checkpoint, parallel
from qernel.io import provenance_attrs, write_netcdf
from qernel.groups import group_stats
from qernel.loss import centred_local_energies, make_local_energy
from qernel.mcmc import MCMCState, init_walkers, make_mcmc_step
from qernel import optim
from qernel.optim import OPTIMIZERS, Optimizer, Samples
from qernel.bands import DEFAULT_SHELLS
from qernel.pretrain import make_pretrain_step, make_targets
from qernel.system import System

DEPTH_WEIGHTINGS = ("uniform", "variance")
DTYPES = ("float32", "float64")
#: Values of TrainConfig.matmul_precision (jax.default_matmul_precision).
MATMUL_PRECISIONS = ("highest", "high", "default")
#: Default learning rates when `learning_rate` is not given (each optimiser's DEFAULTS, qernel.optim).
DEFAULT_LR = {name: optim.defaults(name).learning_rate for name in OPTIMIZERS}
#: Default step caps when `max_update_norm` is not given (sr: Fisher norm ‖Oδ‖; adam: Euclidean norm).
DEFAULT_MAX_UPDATE_NORM = {name: optim.defaults(name).max_update_norm for name in OPTIMIZERS}


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
    gradient (<= 0: off).
    mcmc_steps: Metropolis–Hastings moves between updates; burn_in: moves before the first
    update (after pretraining); target_acceptance; init_width: first proposal width (a_M).
    pretrain_steps: orbital-pretraining steps toward the bands orbitals (0 = off);
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
    up to this many times before the run stops. log_every: steps between plain log lines on
    stdout (train.log gets every step).
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
    burn_in: int = 200
    target_acceptance: float = 0.5
    init_width: float = 0.1
    pretrain_steps: int = 200
    pretrain_learning_rate: float = 3e-3
    pretrain_shells: float | None = None
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
        ints = {"steps": 0, "batch_size": 1, "mcmc_steps": 1, "burn_in": 0, "pretrain_steps": 0,
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
                   "laplacian": ("folx", "jvp"), "matmul_precision": MATMUL_PRECISIONS}
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


@flax.struct.dataclass
class TrainState:
    """Everything a step changes: params, optimiser state, walkers, step count, per-depth variance EMA."""

    params: Any
    opt_state: Any
    mcmc: MCMCState
    step: jax.Array  # int32 ()
    var_ema: jax.Array  # (D,) running mean of the local-energy variance per depth


@dataclasses.dataclass
class TrainResult:
    """The outcome of `run_training` (host arrays)."""

    params: Any
    step: int
    history: dict
    mcmc: MCMCState
    depths: np.ndarray
    out_dir: Path
    train_nc: Path
    model_path: Path
    final_energy_per_depth: np.ndarray  # (D,) per electron, E_M, from the last step


# -- the jitted step ------------------------------------------------------------------------------

def _model_aux(wf, params, x, cond):
    """(moe_loss (W,), expert_counts (W, L, E)) from wf.apply, zeros if the model has no MoE."""
    _, _, aux = jax.vmap(wf.apply, in_axes=(None, 0, 0))(params, x, cond)
    w = x.shape[0]
    moe = aux.get("moe_loss", jnp.zeros(w, x.dtype)) if isinstance(aux, dict) else jnp.zeros(w, x.dtype)
    counts = aux.get("expert_counts") if isinstance(aux, dict) else None
    if counts is None:
        counts = jnp.ones((w, 1, 1), x.dtype)
    return jnp.broadcast_to(moe, (w,)), counts


def make_train_step(system: System, wf, cfg: TrainConfig, n_groups: int, is_complex: bool, mesh=None,
                    optimizer: Optimizer | None = None):
    """step(state, key, poison (D,)) -> (state, stats): one MCMC block + one optimisation step.

    `poison` is added to the local energies of each depth (0 normally; NaN to test the guard).
    If any local energy or the update is non-finite the returned state is the input state.
    With a `mesh`, the returned walkers are constrained to stay sharded along the batch axis and
    everything else replicated (the layout `_place` gives the input). `optimizer`: an object with
    the qernel.optim interface (default: the one `cfg.optimizer` names, built from cfg).
    """
    log_psi = wf.log_psi
    mcmc = make_mcmc_step(log_psi, system, cfg.mcmc_steps, cfg.target_acceptance)
    local_energy = parallel.map_walkers(make_local_energy(system, log_psi, cfg.laplacian), cfg.max_vmap_batch_size)
    if optimizer is None:
        optimizer = make_optimizer(cfg, log_psi, n_groups, is_complex)
    w_moe = cfg.moe_loss_weight

    def moe_objective(params, x, cond):
        moe, counts = _model_aux(wf, params, x, cond)
        return w_moe * jnp.mean(moe), (jnp.mean(moe), counts)

    def step(state: TrainState, key, poison):
        with jax.default_matmul_precision(cfg.matmul_precision):
            return _step(state, key, poison)

    def _step(state: TrainState, key, poison):
        params = state.params
        ms = mcmc(params, state.mcmc, key)
        x, cond, group = ms.positions, ms.cond, ms.group
        le = local_energy(params, x, cond)
        e_real = le.real + poison[group]
        e_loc = jax.lax.complex(e_real, le.imag) if is_complex else e_real
        mean_g, var_g, count_g = group_stats(e_real, group, n_groups)
        bad_g = jax.ops.segment_sum((~jnp.isfinite(e_loc)).astype(jnp.int32), group, num_segments=n_groups)
        eps = centred_local_energies(e_loc, group, n_groups, cfg.clip_mad)

        if w_moe > 0:
            (_, (moe_mean, counts)), moe_grad = jax.value_and_grad(moe_objective, has_aux=True)(params, x, cond)
        else:
            moe_mean, counts = _model_aux(wf, params, x, cond)
            moe_mean = jnp.mean(moe_mean)
            moe_grad = None
        new_params, new_opt, opt_stats = optimizer.update(params, state.opt_state, Samples(x, cond, group, e_loc, eps),
                                                          state.step, moe_grad)
        lr, update_norm = opt_stats["learning_rate"], opt_stats["update_norm"]

        finite_update = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(new_params)]))
        ok = (jnp.sum(bad_g) == 0) & finite_update
        var_ema = jnp.where(state.step == 0, var_g, 0.9 * state.var_ema + 0.1 * var_g)
        new_state = TrainState(new_params, new_opt, ms, state.step + 1, var_ema)
        out = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new_state, state)
        if mesh is not None:
            out = jax.lax.with_sharding_constraint(out, _full_shardings(out, mesh))
        total_counts = jnp.sum(counts, axis=0)  # (L, E)
        usage = total_counts / jnp.maximum(jnp.sum(total_counts, axis=-1, keepdims=True), 1e-30)
        stats = {
            "ok": ok, "finite_update": finite_update, "nonfinite_per_depth": bad_g,
            "energy_per_depth": mean_g, "variance_per_depth": var_g, "walkers_per_depth": count_g,
            "acceptance_per_depth": ms.acceptance, "width_per_depth": ms.width,
            "learning_rate": lr, "update_norm": update_norm, "moe_loss": moe_mean, "expert_usage": usage,
        }
        return out, stats

    return step


def make_optimizer(cfg: TrainConfig, log_psi, n_groups: int, is_complex: bool) -> Optimizer:
    """The optimiser `cfg.optimizer` names, with cfg's options (qernel.optim.make_optimizer)."""
    return optim.make_optimizer(cfg.optimizer, cfg, log_psi=log_psi, n_groups=n_groups, is_complex=is_complex)


# -- compiled functions, cached per (system, model, options) so repeated runs reuse them -----------

def _step_key(cfg: TrainConfig) -> TrainConfig:
    """cfg with the fields that do not enter the jitted step normalised (the cache key)."""
    return dataclasses.replace(cfg, steps=0, checkpoint_every=1, log_every=1, burn_in=0, pretrain_steps=0,
                               pretrain_learning_rate=1.0, pretrain_shells=None, max_retries=0, reweight_every=1,
                               depth_weighting="uniform", init_width=1.0)


@functools.lru_cache(maxsize=8)
def _jit_train_step(system: System, wf, cfg: TrainConfig, n_groups: int, is_complex: bool, mesh=None):
    return jax.jit(make_train_step(system, wf, cfg, n_groups, is_complex, mesh), donate_argnums=(0,))


@functools.lru_cache(maxsize=8)
def _jit_mcmc(system: System, wf, n_steps: int, target_acceptance: float):
    return jax.jit(make_mcmc_step(wf.log_psi, system, n_steps, target_acceptance))


@functools.lru_cache(maxsize=8)
def _jit_pretrain(system: System, wf, learning_rate: float, n_steps: int, target_acceptance: float):
    opt = optax.adam(learning_rate)
    step = jax.jit(make_pretrain_step(wf, system, opt, n_steps, target_acceptance), donate_argnums=(0, 1, 2))
    return step, opt


# -- helpers ----------------------------------------------------------------------------------------

def _state_shardings(state: TrainState, mesh):
    rep, bat = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    mcmc = MCMCState(positions=bat, cond=bat, log_psi=bat, width=rep, acceptance=rep, group=bat)
    return TrainState(params=rep, opt_state=rep, mcmc=mcmc, step=rep, var_ema=rep)


def _full_shardings(state: TrainState, mesh):
    """One sharding per leaf of `state` (walkers along the batch axis, the rest replicated)."""
    shardings = _state_shardings(state, mesh)
    return jax.tree.map(lambda s, sub: jax.tree.map(lambda _: s, sub), shardings, state,
                        is_leaf=lambda s: isinstance(s, jax.sharding.Sharding))


def _place(state: TrainState, mesh) -> TrainState:
    """Put a (host or device) state on the mesh: walkers sharded, everything else replicated."""
    return jax.tree.map(lambda a, s: jax.device_put(a, s), state, _full_shardings(state, mesh))


def _complex_or(a, dtype):
    """The dtype for a target table: complex at the working precision for complex arrays."""
    if np.iscomplexobj(a):
        return jnp.complex128 if dtype == jnp.float64 else jnp.complex64
    return dtype


def _cast_floats(tree, dtype):
    def cast(a):
        a = jnp.asarray(a)
        return a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a
    return jax.tree.map(cast, tree)


def _split_counts(weights: np.ndarray, total: int, minimum: int) -> np.ndarray:
    """Integer counts ∝ weights summing to total, each >= minimum (largest remainders)."""
    d = len(weights)
    w = np.where(np.isfinite(weights) & (weights > 0), weights, 0.0)
    if w.sum() <= 0:
        w = np.ones(d)
    free = total - minimum * d
    raw = w / w.sum() * free
    counts = np.floor(raw).astype(int)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: free - counts.sum()]] += 1
    return counts + minimum


def _reassign(group: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Move the fewest walkers (highest indices of surplus groups first) so group counts equal target."""
    group = group.copy()
    counts = np.bincount(group, minlength=len(target))
    free = []
    for d in range(len(target)):
        surplus = counts[d] - target[d]
        if surplus > 0:
            idx = np.flatnonzero(group == d)[-surplus:]
            free.extend(idx.tolist())
    free.sort()
    for d in range(len(target)):
        deficit = target[d] - counts[d]
        for _ in range(max(deficit, 0)):
            group[free.pop(0)] = d
    return group


class _Log:
    """train.log (appended, never truncated) and, when not on a progress bar, stdout lines."""

    def __init__(self, path: Path, echo: bool):
        self.path, self.echo = path, echo
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(path, "a", encoding="utf-8")

    def __call__(self, msg: str, echo: bool | None = None):
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self.f.write(f"{stamp} {msg}\n")
        self.f.flush()
        if self.echo if echo is None else echo:
            print(msg, flush=True)

    def close(self):
        self.f.close()


_HISTORY_SCALARS = ("step", "energy", "variance", "acceptance", "learning_rate", "update_norm", "moe_loss",
                    "retries", "wall_time")
_HISTORY_DEPTH = ("energy_per_depth", "variance_per_depth", "acceptance_per_depth", "walkers_per_depth",
                  "width_per_depth")


def _empty_history(n_depths: int, usage_shape) -> dict:
    h = {k: np.zeros((0,)) for k in _HISTORY_SCALARS}
    h.update({k: np.zeros((0, n_depths)) for k in _HISTORY_DEPTH})
    h["expert_usage"] = np.zeros((0,) + tuple(usage_shape))
    h["pretrain_loss"] = np.zeros((0,))
    return h


def _append(history: dict, record: dict) -> None:
    for k, v in record.items():
        history[k] = np.concatenate([history[k], np.asarray(v, dtype=float)[None]], axis=0)


def _dataset(history: dict, depths: np.ndarray, system: System, cfg: TrainConfig) -> xr.Dataset:
    n_layers, n_experts = history["expert_usage"].shape[1:]
    step = history["step"].astype(np.int64)
    data = {
        "energy": (("step",), history["energy"], {"units": "E_M", "long_name": "mean over depths of the energy per electron"}),
        "variance": (("step",), history["variance"], {"units": "E_M^2", "long_name": "mean over depths of the variance of the total local energy"}),
        "acceptance": (("step",), history["acceptance"]),
        "learning_rate": (("step",), history["learning_rate"]),
        "update_norm": (("step",), history["update_norm"], {"long_name": "norm of the parameter step (sr: Fisher norm)"}),
        "moe_loss": (("step",), history["moe_loss"], {"long_name": "mixture-of-experts load-balancing loss"}),
        "retries": (("step",), history["retries"].astype(np.int64), {"long_name": "rejected attempts (non-finite) before this step"}),
        "wall_time": (("step",), history["wall_time"], {"units": "s", "long_name": "wall time of the step"}),
        "energy_per_depth": (("step", "depth"), history["energy_per_depth"], {"units": "E_M", "long_name": "energy per electron at each depth"}),
        "variance_per_depth": (("step", "depth"), history["variance_per_depth"], {"units": "E_M^2", "long_name": "variance of the total local energy at each depth"}),
        "acceptance_per_depth": (("step", "depth"), history["acceptance_per_depth"], {"units": "1", "long_name": "Metropolis acceptance at each depth"}),
        "walkers_per_depth": (("step", "depth"), history["walkers_per_depth"].astype(np.int64), {"units": "1", "long_name": "walkers at each depth"}),
        "width_per_depth": (("step", "depth"), history["width_per_depth"], {"units": "a_M", "long_name": "MCMC proposal width at each depth"}),
        "expert_usage": (("step", "layer", "expert"), history["expert_usage"]),
        "pretrain_loss": (("pretrain_step",), history["pretrain_loss"], {"units": "1", "long_name": "orbital pretraining loss"}),
    }
    ds = xr.Dataset(
        {k: xr.Variable(v[0], v[1], v[2] if len(v) > 2 else None) for k, v in data.items()},
        coords={"step": step, "depth": np.asarray(depths, float), "layer": np.arange(n_layers),
                "expert": np.arange(n_experts), "pretrain_step": np.arange(1, len(history["pretrain_loss"]) + 1)},
    )
    ds.attrs.update({"n_electrons": system.n_electrons, "train_config": json.dumps(cfg.to_dict(), sort_keys=True)})
    return ds


def _default_attrs(system: System, cfg: TrainConfig, depths) -> dict:
    config = {"system": system.config_dict(), "depths": [float(v) for v in depths], "pretrain": cfg.to_dict()}
    e_m = system.energy_unit_meV
    return provenance_attrs(config, "unknown", float("nan") if e_m is None else e_m)


# -- the driver ----------------------------------------------------------------------------------------

def run_training(system: System, wf, depths, cfg: TrainConfig, out_dir, seed: int = 0, attrs: dict | None = None,
                 progress: bool | None = None, *, callback: Callable[[int, dict], None] | None = None,
                 fault_injector: Callable[[int, int], Any] | None = None, mesh=None) -> TrainResult:
    """Train `wf` on all `depths` (E_M) at once; resume from out_dir/checkpoints if there are any.

    wf: an object with init(key), log_psi(params, x, cond), apply(params, x, cond) -> (phase,
    logabs, aux) and orbitals(params, x, cond) (qernel.model.Wavefunction). attrs: global attrs of
    train.nc (provenance; see qernel.io.provenance_attrs). progress: None = a tqdm bar on a TTY,
    plain log lines otherwise; True/False force it. callback(step, record): called after every
    accepted step with the host record (tests use it to interrupt a run). fault_injector(step,
    attempt) -> depth indices (or None): the local energies of those depths are set to NaN for that
    attempt (a test hook for the NaN guard). mesh: a 1-D device mesh (default: all local devices).
    """
    if isinstance(cfg, dict):
        cfg = TrainConfig.from_dict(cfg)
    ctx = jax.enable_x64(True) if cfg.dtype == "float64" else contextlib.nullcontext()
    with ctx:
        return _run(system, wf, np.atleast_1d(np.asarray(depths, float)), cfg, Path(out_dir), seed, attrs,
                    progress, callback, fault_injector, mesh)


def _run(system, wf, depths, cfg, out_dir, seed, attrs, progress, callback, fault_injector, mesh):
    dtype = jnp.float64 if cfg.dtype == "float64" else jnp.float32
    n_depths = len(depths)
    mesh = parallel.make_mesh() if mesh is None else mesh
    n_dev = mesh.devices.size
    parallel.check_batch_size(cfg.batch_size, n_dev, n_depths, key="batch_size")
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out_dir / "checkpoints"
    use_bar = (sys.stderr.isatty() if progress is None else bool(progress))
    log = _Log(out_dir / "train.log", echo=not use_bar)
    attrs = dict(_default_attrs(system, cfg, depths) if attrs is None else attrs)
    n_el = system.n_electrons

    root = jax.random.PRNGKey(seed)
    k_train, k_init, k_pre, k_burn, k_params = (jax.random.fold_in(root, i) for i in range(1, 6))
    params0 = _cast_floats(wf.init(k_params), dtype)
    x0 = jnp.zeros((n_el, 2), dtype)
    c0 = jnp.asarray([depths[0]], dtype)
    is_complex = jnp.iscomplexobj(jax.eval_shape(wf.log_psi, params0, x0, c0))
    _, _, aux0 = jax.eval_shape(wf.apply, params0, x0, c0)
    usage_shape = tuple(aux0["expert_counts"].shape) if isinstance(aux0, dict) and "expert_counts" in aux0 else (1, 1)
    opt0 = make_optimizer(cfg, wf.log_psi, n_depths, bool(is_complex)).init(params0)

    group0 = np.arange(cfg.batch_size) % n_depths
    cond0 = jnp.asarray(depths[group0][:, None], dtype)
    walkers0 = init_walkers(k_init, system, cond0, group0, n_depths, cfg.init_width, dtype=dtype)
    template = TrainState(params0, opt0, walkers0, jnp.zeros((), jnp.int32), jnp.zeros(n_depths, dtype))

    log(f"devices: {n_dev} × {jax.devices()[0].platform} ({jax.devices()[0].device_kind}); "
        f"depths {[round(float(v), 6) for v in depths]}; batch {cfg.batch_size}; {cfg.optimizer}; dtype {cfg.dtype}; "
        f"N = {n_el}; complex ψ: {bool(is_complex)}")

    history = _empty_history(n_depths, usage_shape)
    resume = checkpoint.latest(ckpt_dir)
    if resume is not None:
        raw = checkpoint.load(resume)
        meta = raw["meta"]
        stored_depths = np.asarray(meta["depths"], float)
        if stored_depths.shape != depths.shape or not np.allclose(stored_depths, depths):
            raise ValueError(f"{resume}: checkpoint depths {stored_depths.tolist()} differ from {depths.tolist()}")
        if int(meta["batch_size"]) != cfg.batch_size or meta["optimizer"] != cfg.optimizer:
            raise ValueError(f"{resume}: checkpoint batch_size/optimizer ({meta['batch_size']}, {meta['optimizer']}) "
                             f"differ from the config ({cfg.batch_size}, {cfg.optimizer})")
        if int(meta["seed"]) != seed:
            raise ValueError(f"{resume}: checkpoint was written with seed {meta['seed']}, not {seed}")
        state = jax.tree.map(jnp.asarray, _restore(template, raw["state"]))
        history = {k: np.asarray(v) for k, v in raw["history"].items()}
        start = int(state.step)
        log(f"resumed from {resume.name} at step {start}")
    else:
        state = template
        start = 0
    state = _place(state, mesh)

    step_fn = _jit_train_step(system, wf, _step_key(cfg), n_depths, bool(is_complex), mesh)
    rep = parallel.replicated(mesh)

    def save_ckpt(st: TrainState, hist: dict):
        step = int(st.step)
        tree = {"state": parallel.to_host(st), "history": hist,
                "meta": {"seed": seed, "depths": depths, "batch_size": cfg.batch_size, "optimizer": cfg.optimizer,
                         "config": json.dumps(cfg.to_dict(), sort_keys=True), "n_electrons": n_el}}
        checkpoint.save(checkpoint.checkpoint_path(ckpt_dir, step), tree)
        write_netcdf(_dataset(hist, depths, system, cfg), out_dir / "train.nc", attrs)

    if resume is None:
        t0 = time.time()
        if cfg.pretrain_steps > 0 and hasattr(wf, "orbitals"):
            ref_depth = getattr(getattr(wf, "reference", None), "depth", None)
            targets = make_targets(system, depths, reference_depth=ref_depth,
                                   shells=DEFAULT_SHELLS if cfg.pretrain_shells is None else cfg.pretrain_shells)
            tables = jax.device_put(jax.tree.map(lambda a: jnp.asarray(a, _complex_or(a, dtype)), targets.tables), rep)
            pre, opt = _jit_pretrain(system, wf, cfg.pretrain_learning_rate, cfg.mcmc_steps, cfg.target_acceptance)
            params, opt_state, walkers = state.params, jax.device_put(opt.init(state.params), rep), state.mcmc
            losses = []
            for i in range(cfg.pretrain_steps):
                params, opt_state, walkers, loss = pre(params, opt_state, walkers, jax.random.fold_in(k_pre, i), tables)
                losses.append(float(loss))
                if (i + 1) % cfg.log_every == 0 or i + 1 == cfg.pretrain_steps:
                    log(f"pretrain {i + 1}/{cfg.pretrain_steps}: orbital loss {losses[-1]:.6g}")
            history["pretrain_loss"] = np.asarray(losses)
            state = state.replace(params=params, mcmc=walkers)
        burn = _jit_mcmc(system, wf, cfg.mcmc_steps, cfg.target_acceptance)
        walkers = state.mcmc
        for i in range(-(-cfg.burn_in // cfg.mcmc_steps)):
            walkers = burn(state.params, walkers, jax.random.fold_in(k_burn, i))
        state = state.replace(mcmc=walkers)
        acc = np.asarray(walkers.acceptance)
        log(f"pretraining + burn-in done in {time.time() - t0:.1f} s; acceptance per depth {[round(float(a), 3) for a in acc]}")
        save_ckpt(state, history)

    bar = None
    if use_bar and cfg.steps > start:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc="train", dynamic_ncols=True, file=sys.stderr)
    last = None
    try:
        for t in range(start + 1, cfg.steps + 1):
            t_step = time.time()
            key_t = jax.random.fold_in(k_train, t)
            for attempt in range(cfg.max_retries + 1):
                bad = fault_injector(t, attempt) if fault_injector is not None else None
                poison = np.zeros(n_depths)
                if bad is not None:
                    poison[np.atleast_1d(np.asarray(bad, int))] = np.nan
                state, stats = step_fn(state, jax.random.fold_in(key_t, attempt), jax.device_put(jnp.asarray(poison, dtype), rep))
                stats = parallel.to_host(stats)
                if bool(stats["ok"]):
                    break
                bad_depths = [float(depths[d]) for d in np.flatnonzero(stats["nonfinite_per_depth"])]
                what = (f"non-finite local energies at depth(s) V = {bad_depths} E_M" if bad_depths
                        else "a non-finite parameter update (all depths: energies finite)")
                log(f"step {t}: attempt {attempt + 1} rejected: {what}; retrying from the last good state", echo=True)
            else:
                write_netcdf(_dataset(history, depths, system, cfg), out_dir / "train.nc", attrs)
                raise FloatingPointError(
                    f"training stopped at step {t}: {what} in {cfg.max_retries + 1} attempts "
                    f"(max_retries = {cfg.max_retries}); last good checkpoint in {ckpt_dir}")
            e_d = stats["energy_per_depth"] / n_el
            record = {
                "step": t, "energy": float(np.mean(e_d)), "variance": float(np.mean(stats["variance_per_depth"])),
                "acceptance": float(np.sum(stats["acceptance_per_depth"] * stats["walkers_per_depth"]) / cfg.batch_size),
                "learning_rate": float(stats["learning_rate"]), "update_norm": float(stats["update_norm"]),
                "moe_loss": float(stats["moe_loss"]), "retries": attempt, "wall_time": time.time() - t_step,
                "energy_per_depth": e_d, "variance_per_depth": stats["variance_per_depth"],
                "acceptance_per_depth": stats["acceptance_per_depth"], "walkers_per_depth": stats["walkers_per_depth"],
                "width_per_depth": stats["width_per_depth"], "expert_usage": stats["expert_usage"],
            }
            _append(history, record)
            last = record
            line = (f"step {t}/{cfg.steps} E/N {record['energy']:.6f} var {record['variance']:.3e} "
                    f"acc {record['acceptance']:.3f} lr {record['learning_rate']:.3g} | "
                    + " ".join(f"V={v:g}: {e:.5f}/{s:.2e}/{a:.2f}" for v, e, s, a in
                               zip(depths, e_d, stats["variance_per_depth"], stats["acceptance_per_depth"])))
            log.f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + line + "\n")
            log.f.flush()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(E=f"{record['energy']:.5f}", var=f"{record['variance']:.2e}",
                                acc=f"{record['acceptance']:.2f}")
            elif t % cfg.log_every == 0 or t == cfg.steps:
                print(line, flush=True)
            if cfg.depth_weighting == "variance" and t % cfg.reweight_every == 0 and n_depths > 1:
                state = _reweight(state, depths, cfg, mesh, dtype, log, t)
            if t % cfg.checkpoint_every == 0 or t == cfg.steps:
                save_ckpt(state, history)
            if callback is not None:
                callback(t, record)
    finally:
        if bar is not None:
            bar.close()

    host = parallel.to_host(state)
    final_step = int(host.step)
    if last is None and len(history["step"]):
        last = {"energy_per_depth": history["energy_per_depth"][-1]}
    write_netcdf(_dataset(history, depths, system, cfg), out_dir / "train.nc", attrs)
    metadata = {"depths": [float(v) for v in depths], "step": final_step, "seed": seed,
                "system": system.config_dict(), "train_config": cfg.to_dict(),
                "model_config": _plain(getattr(wf, "config", None)),
                "cond_range": getattr(wf, "cond_range", None)}
    model_path = checkpoint.save_model(out_dir / "model.msgpack", host.params, metadata)
    log(f"done: step {final_step}; model written to {model_path.name}")
    log.close()
    final_e = np.asarray(last["energy_per_depth"]) if last is not None else np.full(n_depths, np.nan)
    return TrainResult(host.params, final_step, history, host.mcmc, depths, out_dir, out_dir / "train.nc",
                       model_path, final_e)


def _plain(obj):
    if obj is None:
        return None
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    return str(obj)


def _restore(template: TrainState, raw_state) -> TrainState:
    from flax import serialization

    return serialization.from_state_dict(template, raw_state)


def _reweight(state: TrainState, depths, cfg: TrainConfig, mesh, dtype, log, t: int) -> TrainState:
    """Re-split the walkers across depths ∝ σ_d (Neyman allocation) from the variance EMA."""
    n_depths = len(depths)
    var = np.asarray(jax.device_get(state.var_ema), float)
    target = _split_counts(np.sqrt(np.maximum(var, 0.0)), cfg.batch_size, max(1, cfg.batch_size // (4 * n_depths)))
    group = np.asarray(jax.device_get(state.mcmc.group))
    if np.array_equal(np.bincount(group, minlength=n_depths), target):
        return state
    new_group = _reassign(group, target)
    cond = jnp.asarray(np.asarray(depths)[new_group][:, None], dtype)
    bat = parallel.batch_sharding(mesh)
    mcmc = state.mcmc._replace(group=jax.device_put(jnp.asarray(new_group, jnp.int32), bat),
                               cond=jax.device_put(cond, bat))
    log(f"step {t}: walkers per depth {target.tolist()} (variance weighting)")
    return state.replace(mcmc=mcmc)
