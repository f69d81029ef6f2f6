"""Training one shared conditioned wavefunction over a grid of depths (DESIGN.md §3, §4).

    cfg = TrainConfig.from_dict(sweep["pretrain"])
    result = run_training(system, wf, depths, cfg, out_dir, seed=0, attrs=provenance)
    params, options = finetune(system, wf, params, depth, eval_cfg, metadata, out_dir)  # one depth

A run in stages, each a plain function of explicit state (`TrainState`; keys from `train_keys`):

    params = start_params(wf, cfg, keys, params=None)                # params=: start from given ones
    state = init_state(system, depths, cfg, keys, params, opt_state)   # opt_state: the optimiser's init
    state, losses = pretrain_orbitals(state, targets, system, wf, cfg, keys.pretrain, mesh)
    state = burn_in(state, system, wf, cfg, keys.burn_in)
    result = fit(state, history, system, wf, depths, cfg, keys.train, mesh, ...)

`run_training` composes them with checkpoints and outputs; the orbital targets are an argument
(`qernel.pretrain.TargetOrbitals`: the bands orbitals of `make_targets` by default). Fine-tuning
(`finetune`) is `run_training` at one depth from the loaded parameters; `qernel.evaluate`
receives it as an argument and does not import this module.

One step (one jitted function, state donated): a Metropolis–Hastings block for every walker at its
own depth; local energies; the per-depth unbiased gradient with clipped energies (qernel.loss);
a SPRING/MinSR natural-gradient step or Adam (qernel.optim) plus the MoE load-balancing term;
a NaN/inf guard that keeps the previous state inside the jitted step when anything is
non-finite, so the host can retry from the last good state with another random key.

Non-finite steps (policy): a rejected step is redone from the same state with the next
attempt's random numbers, at most `max_retries` times (`qernel.vmc.run_with_retries`). If every
attempt fails, the parameters are broken (an earlier accepted update went too far; new random
numbers cannot help): the run rolls back to the newest checkpoint before the step (rollback r:
the r-th newest, so a checkpoint already holding broken parameters is passed over), deletes the
checkpoints after it, and replays with the learning rate and the step cap `max_update_norm`
(when on) × 0.5^r (ROLLBACK_LR_FACTOR) for the rest of the run, recorded in train.log, in the
checkpoints (a resume keeps it) and in the learning_rate history. After MAX_ROLLBACKS = 3
rollbacks the next failure stops the run with a one-line FloatingPointError naming the step, the
depths with non-finite energies, the retries and the rollbacks; train.nc keeps the good steps.

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
import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import xarray as xr

from qernel import checkpoint, parallel
from qernel.io import provenance_attrs, write_netcdf
from qernel.groups import group_stats
from qernel.hamiltonian import make_complex_local_energy
from qernel.loss import centred_local_energies
from qernel.model.moe import batch_load_balancing_loss
from qernel.determinant_sampling import determinant_positions
from qernel.mcmc import WALKER_AXES as WALKER_AXES_MCMC, MCMCState, init_walkers, make_mcmc_step
from qernel import optim
from qernel.optim import Optimizer, Samples
from qernel.bands import DEFAULT_SHELLS
from qernel.conditions import ConditionGrid, as_grid, condition_vector, names_of
from qernel.hartree_fock_targets import hartree_fock_targets
from qernel.pretrain import TargetOrbitals, make_pretrain_step, make_targets
from qernel.system import System
# the options (no JAX: config resolution reads them), re-exported here where they are used
from qernel.train_config import (  # noqa: F401
    DEFAULT_LR,
    DEFAULT_MAX_UPDATE_NORM,
    DEPTH_WEIGHTINGS,
    DTYPES,
    MATMUL_PRECISIONS,
    PRETRAIN_TARGETS,
    TrainConfig,
    check_finetune_options,
)
from qernel.vmc import (
    RetriesExhausted,
    RunLog,
    cast_floats,
    jit_mcmc_step,
    recorded_dtype,
    recorded_train_config,
    run_with_retries,
)

_log = logging.getLogger(__name__)


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
    """(moe_loss (), expert_counts (W, L, E)) from wf.apply: the load-balancing loss over all tokens
    of the batch (qernel.model.moe.batch_load_balancing_loss, mean over layers), zeros if the model
    has no MoE."""
    _, _, aux = jax.vmap(wf.apply, in_axes=(None, 0, 0))(params, x, cond)
    w = x.shape[0]
    if not isinstance(aux, dict) or "expert_counts" not in aux:
        return jnp.zeros((), x.dtype), jnp.ones((w, 1, 1), x.dtype)
    counts = aux["expert_counts"]
    if "router_probs" in aux:
        moe = jnp.mean(batch_load_balancing_loss(counts, aux["router_probs"]))
    else:
        moe = jnp.mean(aux.get("moe_loss", jnp.zeros(w, x.dtype)))
    return moe, counts


def make_train_step(system: System, wf, cfg: TrainConfig, n_groups: int, is_complex: bool, mesh=None,
                    optimizer: Optimizer | None = None):
    """step(state, key, poison (D,)) -> (state, stats): one MCMC block + one optimisation step.

    `poison` is added to the local energies of each depth (0 normally; NaN to test the guard).
    If any local energy or the update is non-finite the returned state is the input state.
    With a `mesh`, the returned walkers are constrained to stay sharded along the batch axis and
    everything else replicated (the layout `qernel.parallel.place` gives the input). `optimizer`:
    an object with the qernel.optim interface (default: the one `cfg.optimizer` names, built from cfg).
    """
    log_psi = wf.log_psi
    mcmc = make_mcmc_step(log_psi, system, cfg.mcmc_steps, cfg.target_acceptance, hop_moves=cfg.hop_moves)
    local_energy = parallel.map_walkers(
        make_complex_local_energy(system, log_psi, cfg.laplacian, condition_names=names_of(wf)), cfg.max_vmap_batch_size)
    if optimizer is None:
        optimizer = make_optimizer(cfg, log_psi, n_groups, is_complex)
    w_moe = cfg.moe_loss_weight

    def moe_objective(params, x, cond):
        moe, counts = _model_aux(wf, params, x, cond)
        return w_moe * moe, (moe, counts)

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
def _jit_pretrain(system: System, wf, learning_rate: float, n_steps: int, target_acceptance: float):
    opt = optax.adam(learning_rate)
    step = jax.jit(make_pretrain_step(wf, system, opt, n_steps, target_acceptance), donate_argnums=(0, 1, 2))
    return step, opt


# -- helpers ----------------------------------------------------------------------------------------

#: Which parts of a TrainState have a leading walker axis (see qernel.parallel.place).
WALKER_AXES = TrainState(params=False, opt_state=False, mcmc=WALKER_AXES_MCMC, step=False, var_ema=False)


def _full_shardings(state: TrainState, mesh):
    """One sharding per leaf of `state` (walkers along the batch axis, the rest replicated)."""
    return parallel.shardings(state, mesh, WALKER_AXES)


def _complex_or(a, dtype):
    """The dtype for a target table: complex at the working precision for complex arrays."""
    if np.iscomplexobj(a):
        return jnp.complex128 if dtype == jnp.float64 else jnp.complex64
    return dtype


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


# -- the stages of a run -------------------------------------------------------------------------------

#: A step that fails every retry rolls the run back at most this many times (counted across
#: resumes): rollback r to the r-th newest checkpoint, with the learning rate (and the step cap
#: max_update_norm, when on) times ROLLBACK_LR_FACTOR**r for the replayed steps and the rest of
#: the run; then the run stops.
MAX_ROLLBACKS = 3
ROLLBACK_LR_FACTOR = 0.5


class TrainKeys(NamedTuple):
    """The random keys of one run, all derived from its seed (`train_keys`): `train` (step t,
    attempt a: fold_in(fold_in(train, t), a)), `walkers` (initial positions), `pretrain`
    (orbital pretraining step i: fold_in(pretrain, i)), `burn_in` (block i) and `params` (wf.init)."""

    train: jax.Array
    walkers: jax.Array
    pretrain: jax.Array
    burn_in: jax.Array
    params: jax.Array


def train_keys(seed: int) -> TrainKeys:
    """TrainKeys of a run with this seed: fold_in(PRNGKey(seed), i) for i = 1 .. 5."""
    root = jax.random.PRNGKey(seed)
    return TrainKeys(*(jax.random.fold_in(root, i) for i in range(1, 6)))


def start_params(wf, cfg: TrainConfig, keys: TrainKeys, params=None):
    """The parameters a run starts from: `params` when given (fine-tuning: a trained model's,
    copied, so the donated training state never aliases the caller's arrays), else
    wf.init(keys.params); floating leaves cast to cfg.dtype."""
    dtype = jnp.float64 if cfg.dtype == "float64" else jnp.float32
    return cast_floats(wf.init(keys.params) if params is None else jax.tree.map(jnp.array, params), dtype)


def init_state(system: System, depths, cfg: TrainConfig, keys: TrainKeys, params, opt_state) -> TrainState:
    """The state before the first update (device arrays, not yet placed on a mesh).

    params: the starting parameters (`start_params`); opt_state: the optimiser's fresh state for
    them. depths: the grid, a `qernel.conditions.ConditionGrid` (D points) or a depth array (D,)
    in E_M (the grid of n_cond = 1). Walker w of cfg.batch_size starts at grid point w mod D (its
    condition vector: that row of the grid, cond (W, n_cond)), uniform in the supercell
    (keys.walkers), with proposal width cfg.init_width (a_M); step 0; the variance EMA (D,) zero.
    Raises ValueError for an invalid grid (`qernel.conditions.as_grid`).
    """
    grid = as_grid(depths)
    n_depths = grid.n_points
    dtype = jnp.float64 if cfg.dtype == "float64" else jnp.float32
    group0 = np.arange(cfg.batch_size) % n_depths
    cond0 = grid.conditions(group0, dtype)
    walkers0 = init_walkers(keys.walkers, system, cond0, group0, n_depths, cfg.init_width, dtype=dtype)
    return TrainState(params, opt_state, walkers0, jnp.zeros((), jnp.int32), jnp.zeros(n_depths, dtype))


def start_walkers(state: TrainState, system: System, wf, targets: TargetOrbitals | None, grid, key,
                  log: Callable[[str], None] = print) -> TrainState:
    """The state with its walkers drawn exactly from a determinant at each walker's depth
    (`qernel.determinant_sampling`): the pretraining targets' when given (pretraining samples
    them), else the model's orbital prior (`wf.start_orbitals`); unchanged (uniform in the
    supercell, `init_state`) when the model has neither. `state` not yet placed on a mesh (the
    positions drawn on the host, returned as a default-device array)."""
    if targets is not None:
        source, name = targets.orbital_values, "pretraining targets"
    elif getattr(wf, "start_orbitals", None) is not None:
        source, name = wf.start_orbitals, "orbital prior"
    else:
        return state
    depths = np.asarray(grid.values, float)[np.asarray(state.mcmc.group), 0]
    positions = determinant_positions(key, system, source, depths)
    log(f"walkers start drawn exactly from the determinant of the {name} at their depths")
    mcmc = state.mcmc._replace(positions=jnp.asarray(positions, state.mcmc.positions.dtype))
    return state.replace(mcmc=mcmc)


def default_targets(system: System, wf, depths, cfg: TrainConfig, log=print) -> TargetOrbitals:
    """The pretraining targets `cfg.pretrain_target` names at `depths`, columns following the model's
    reference depth: "bands" (qernel.pretrain.make_targets, cutoff pretrain_shells or the bands
    default) or "hartree_fock" (qernel.hartree_fock_targets, cutoff pretrain_shells or 2 shells;
    seconds to minutes per depth on a CPU, logged)."""
    ref_depth = getattr(getattr(wf, "reference", None), "depth", None)
    if cfg.pretrain_target == "hartree_fock":
        t0 = time.time()
        targets = hartree_fock_targets(system, depths, reference_depth=ref_depth,
                                       shells=2.0 if cfg.pretrain_shells is None else cfg.pretrain_shells)
        per = targets.energies / system.n_electrons
        log(f"Hartree-Fock pretraining targets in {time.time() - t0:.1f} s: E/N "
            + ", ".join(f"V={v:g}: {e:.5f}" for v, e in zip(targets.depths, per)) + " E_M")
        return targets
    return make_targets(system, depths, reference_depth=ref_depth,
                        shells=DEFAULT_SHELLS if cfg.pretrain_shells is None else cfg.pretrain_shells)


def pretrain_orbitals(state: TrainState, targets: TargetOrbitals, system: System, wf, cfg: TrainConfig, key,
                      mesh, log: Callable[[str], None] | None = None) -> tuple[TrainState, np.ndarray]:
    """Fit the model's orbital matrices `wf.orbitals` to `targets` (qernel.pretrain): cfg.pretrain_steps
    Adam steps at cfg.pretrain_learning_rate, the walkers sampling the targets' |ψ_T|² at their
    own depths (step i uses fold_in(key, i)).

    targets: a `qernel.pretrain.TargetOrbitals`, plane-wave orbitals at each grid depth (the
    bands orbitals of `qernel.pretrain.make_targets` today; any other orbitals, e.g. Hartree–Fock,
    in the same form). Returns (state with the fitted params and the moved walkers; optimiser
    state and step untouched, losses (pretrain_steps,), dimensionless).
    """
    dtype = jnp.float64 if cfg.dtype == "float64" else jnp.float32
    rep = parallel.replicated(mesh)
    tables = jax.device_put(jax.tree.map(lambda a: jnp.asarray(a, _complex_or(a, dtype)), targets.tables), rep)
    pre, opt = _jit_pretrain(system, wf, cfg.pretrain_learning_rate, cfg.mcmc_steps, cfg.target_acceptance)
    params, opt_state, walkers = state.params, jax.device_put(opt.init(state.params), rep), state.mcmc
    losses = []
    for i in range(cfg.pretrain_steps):
        params, opt_state, walkers, loss = pre(params, opt_state, walkers, jax.random.fold_in(key, i), tables)
        losses.append(float(loss))
        if log is not None and ((i + 1) % cfg.log_every == 0 or i + 1 == cfg.pretrain_steps):
            log(f"pretrain {i + 1}/{cfg.pretrain_steps}: orbital loss {losses[-1]:.6g}")
    return state.replace(params=params, mcmc=walkers), np.asarray(losses)


def burn_in(state: TrainState, system: System, wf, cfg: TrainConfig, key) -> TrainState:
    """ceil(cfg.burn_in / cfg.mcmc_steps) Metropolis–Hastings blocks of the walkers under the
    current params (block i uses fold_in(key, i)); the widths adapt."""
    burn = jit_mcmc_step(system, wf.log_psi, cfg.mcmc_steps, cfg.target_acceptance, hop_moves=cfg.hop_moves)
    walkers = state.mcmc
    for i in range(-(-cfg.burn_in // cfg.mcmc_steps)):
        walkers = burn(state.params, walkers, jax.random.fold_in(key, i))
    return state.replace(mcmc=walkers)


class TrainingDiverged(FloatingPointError):
    """A step stayed non-finite after every retry and rollback; history: the good steps before it."""

    def __init__(self, message: str, history: dict):
        super().__init__(message)
        self.history = history


@dataclasses.dataclass
class Fit:
    """The outcome of `fit`: the final state (on the mesh), the history, the last step's record
    (None if no step ran), the learning-rate scale reached and the rollbacks made."""

    state: TrainState
    history: dict
    last: dict | None
    lr_scale: float
    rollbacks: int


def fit(state: TrainState, history: dict, system: System, wf, depths, cfg: TrainConfig, key, mesh, *,
        is_complex: bool, save: Callable[[Any, dict, dict], None], ckpt_dir: Path, log: RunLog, lr_scale: float = 1.0,
        rollbacks: int = 0, callback: Callable[[int, dict], None] | None = None,
        fault_injector: Callable[[int, int], Any] | None = None, bar=None) -> Fit:
    """Optimise from `state` (on the mesh, at a checkpoint: step 0 or a resumed one) to cfg.steps.

    Step t uses the key fold_in(key, t) (attempt a: fold_in(fold_in(key, t), a)), so the trajectory
    does not depend on where a run was interrupted. A step whose local energies or update are
    non-finite is redone from the same state with the next attempt's key, at most cfg.max_retries
    times (`qernel.vmc.run_with_retries`). If every attempt fails, the parameters themselves are
    likely broken by an earlier accepted update (e.g. a learning rate far too large), so redrawing
    the random numbers cannot help: the run rolls back. Rollback r (r = 1, 2, ...) restores the
    r-th newest checkpoint in ckpt_dir (the newest may already hold the broken parameters; the
    oldest, step 0, if there are fewer), deletes the checkpoints after it (they belong to the
    abandoned trajectory, so a resume cannot pick them up), and replays from there with the
    learning rate × ROLLBACK_LR_FACTOR**r for the rest of the run, the step cap max_update_norm
    too when it is on (a capped step would not shrink with the rate alone; the scale and the count are
    saved in the checkpoints' meta, so a resumed run keeps them; the learning_rate history shows
    the rate used). After MAX_ROLLBACKS rollbacks the next failure raises TrainingDiverged (a
    FloatingPointError) naming the step, the depths with non-finite energies, the retries and the
    rollbacks, carrying the good history.

    save(host_state, history, meta): writes a checkpoint (every cfg.checkpoint_every steps and at
    the end) into ckpt_dir; meta holds lr_scale and rollbacks. history: the run's history so far
    (appended to). callback(step, record) after every accepted step; fault_injector(step, attempt) -> depth
    indices whose local energies are set to NaN (a test hook); bar: a tqdm bar or None (then plain
    log lines every cfg.log_every steps). depths: a `qernel.conditions.ConditionGrid` or a depth
    array (D,) in E_M (walkers moved by the variance weighting take their new point's condition
    vector).
    """
    grid = as_grid(depths)
    depths = grid.depths
    n_depths, n_el = len(depths), system.n_electrons
    dtype = jnp.float64 if cfg.dtype == "float64" else jnp.float32
    rep = parallel.replicated(mesh)
    step_fn = _jit_train_step(system, wf, _step_key(_scaled(cfg, lr_scale)), n_depths, is_complex, mesh)
    last = None
    t = int(jax.device_get(state.step)) + 1
    while t <= cfg.steps:
        t_step = time.time()

        def attempt(key_a, a, t=t):
            nonlocal state
            bad = fault_injector(t, a) if fault_injector is not None else None
            poison = np.zeros(n_depths)
            if bad is not None:
                poison[np.atleast_1d(np.asarray(bad, int))] = np.nan
            state, stats = step_fn(state, key_a, jax.device_put(jnp.asarray(poison, dtype), rep))
            return parallel.to_host(stats)


        def rejected(stats):
            if bool(stats["ok"]):
                return None
            bad_depths = [float(depths[d]) for d in np.flatnonzero(stats["nonfinite_per_depth"])]
            return (f"non-finite local energies at depth(s) V = {bad_depths} E_M" if bad_depths
                    else "a non-finite parameter update (all depths: energies finite)")

        def on_reject(a, why, t=t):
            log(f"step {t}: attempt {a + 1} rejected: {why}; retrying from the last good state", echo=True)

        try:
            stats, retries = run_with_retries(attempt, jax.random.fold_in(key, t), rejected, cfg.max_retries, on_reject)
        except RetriesExhausted as err:
            if rollbacks >= MAX_ROLLBACKS:
                raise TrainingDiverged(
                    f"training stopped at step {t}: {err.reason} in {err.attempts} attempts "
                    f"(max_retries = {cfg.max_retries}), after {rollbacks} rollback(s) to the last checkpoint "
                    f"with the learning rate and step cap × {lr_scale:g} (at most {MAX_ROLLBACKS})", history) from None
            saved = [(s, p) for s, p in checkpoint.list_checkpoints(ckpt_dir) if s < t and checkpoint.verify(p)]
            if not saved:
                raise TrainingDiverged(f"training stopped at step {t}: {err.reason} in {err.attempts} attempts "
                                       f"and no checkpoint to roll back to in {ckpt_dir}", history) from None
            rollbacks += 1
            lr_scale *= ROLLBACK_LR_FACTOR
            back, path = saved[min(rollbacks, len(saved)) - 1]  # newest first: go back further each time
            raw = checkpoint.load(path)
            state = parallel.place(jax.tree.map(jnp.asarray, _restore(state, raw["state"])), mesh, WALKER_AXES)
            history = {k: np.asarray(v) for k, v in raw["history"].items()}
            for s, p in saved:
                if s > back:
                    p.unlink(missing_ok=True)  # the abandoned trajectory's checkpoints
            log(f"step {t}: {err.reason} in {err.attempts} attempts: rolling back to the checkpoint at step {back} "
                f"with the learning rate and step cap × {lr_scale:g} (rollback {rollbacks} of at most {MAX_ROLLBACKS})", echo=True)
            step_fn = _jit_train_step(system, wf, _step_key(_scaled(cfg, lr_scale)), n_depths, is_complex, mesh)
            if bar is not None:
                bar.n = back
                bar.refresh()
            t = back + 1
            continue
        e_d = stats["energy_per_depth"] / n_el
        record = {
            "step": t, "energy": float(np.mean(e_d)), "variance": float(np.mean(stats["variance_per_depth"])),
            "acceptance": float(np.sum(stats["acceptance_per_depth"] * stats["walkers_per_depth"]) / cfg.batch_size),
            "learning_rate": float(stats["learning_rate"]), "update_norm": float(stats["update_norm"]),
            "moe_loss": float(stats["moe_loss"]), "retries": retries, "wall_time": time.time() - t_step,
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
        log.write(line)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(E=f"{record['energy']:.5f}", var=f"{record['variance']:.2e}",
                            acc=f"{record['acceptance']:.2f}")
        elif t % cfg.log_every == 0 or t == cfg.steps:
            print(line, flush=True)
        if cfg.depth_weighting == "variance" and t % cfg.reweight_every == 0 and n_depths > 1:
            state = _reweight(state, grid, cfg, mesh, dtype, log, t)
        if t % cfg.checkpoint_every == 0 or t == cfg.steps:
            save(parallel.to_host(state), history, {"lr_scale": lr_scale, "rollbacks": rollbacks})
        if callback is not None:
            callback(t, record)
        t += 1
    return Fit(state, history, last, lr_scale, rollbacks)


# -- the driver ----------------------------------------------------------------------------------------

def run_training(system: System, wf, depths, cfg: TrainConfig, out_dir, seed: int = 0, attrs: dict | None = None,
                 progress: bool | None = None, *, callback: Callable[[int, dict], None] | None = None,
                 fault_injector: Callable[[int, int], Any] | None = None, mesh=None, init_params=None,
                 targets: TargetOrbitals | None = None) -> TrainResult:
    """Train `wf` on all `depths` (E_M) at once; resume from out_dir/checkpoints if there are any.

    depths: the condition grid, a `qernel.conditions.ConditionGrid` (D points, cond (n_cond,)
    each, named as `wf.condition_names`) or a depth array (D,) in E_M (n_cond = 1).

    The stages: `start_params` and `init_state` → `pretrain_orbitals` (if cfg.pretrain_steps > 0 and wf has
    orbitals) → `burn_in` → checkpoint at step 0 → `fit`; then train.nc and model.msgpack.
    wf: an object with init(key), log_psi(params, x, cond), apply(params, x, cond) -> (phase,
    logabs, aux) and orbitals(params, x, cond) (qernel.model.Wavefunction). attrs: global attrs of
    train.nc (provenance; see qernel.io.provenance_attrs). progress: None = a tqdm bar on a TTY,
    plain log lines otherwise; True/False force it. callback(step, record): called after every
    accepted step with the host record (tests use it to interrupt a run). fault_injector(step,
    attempt) -> depth indices (or None): the local energies of those depths are set to NaN for that
    attempt (a test hook for the NaN guard). mesh: a 1-D device mesh (default: all local devices).
    init_params: starting parameters (fine-tuning; default wf.init). targets: the orbital
    pretraining targets (default: the bands orbitals of `qernel.pretrain.make_targets` at
    `depths`, aligned to wf.reference.depth when the model has one).

    Raises ValueError (batch_size against devices × depths; a grid whose condition names differ
    from the model's; a checkpoint of another run in out_dir) and FloatingPointError (a step
    non-finite after every retry and rollback, see `fit`).
    """
    if isinstance(cfg, dict):
        cfg = TrainConfig.from_dict(cfg)
    grid = as_grid(depths)
    if grid.names != names_of(wf):
        raise ValueError(f"the condition grid has the components {grid.names}, the model {names_of(wf)}")
    ctx = jax.enable_x64(True) if cfg.dtype == "float64" else contextlib.nullcontext()
    with ctx:
        return _run(system, wf, grid, cfg, Path(out_dir), seed, attrs,
                    progress, callback, fault_injector, mesh, init_params, targets)


def _run(system, wf, grid: ConditionGrid, cfg, out_dir, seed, attrs, progress, callback, fault_injector, mesh,
         init_params, targets):
    dtype = jnp.float64 if cfg.dtype == "float64" else jnp.float32
    depths = grid.depths
    n_depths = len(depths)
    mesh = parallel.make_mesh() if mesh is None else mesh
    n_dev = mesh.devices.size
    parallel.check_batch_size(cfg.batch_size, n_dev, n_depths, key="batch_size")
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out_dir / "checkpoints"
    use_bar = (sys.stderr.isatty() if progress is None else bool(progress))
    log = RunLog(out_dir / "train.log", echo=not use_bar)
    attrs = dict(_default_attrs(system, cfg, depths) if attrs is None else attrs)
    n_el = system.n_electrons

    keys = train_keys(seed)
    params0 = start_params(wf, cfg, keys, init_params)
    is_complex, usage_shape = _model_facts(wf, params0, n_el, grid.point(0), dtype)
    opt0 = make_optimizer(cfg, wf.log_psi, n_depths, bool(is_complex)).init(params0)
    template = init_state(system, grid, cfg, keys, params0, opt0)
    log(f"devices: {n_dev} × {jax.devices()[0].platform} ({jax.devices()[0].device_kind}); "
        f"depths {[round(float(v), 6) for v in depths]}; batch {cfg.batch_size}; {cfg.optimizer}; dtype {cfg.dtype}; "
        f"N = {n_el}; complex ψ: {bool(is_complex)}")

    history = _empty_history(n_depths, usage_shape)
    lr_scale, rollbacks = 1.0, 0
    resume = checkpoint.latest(ckpt_dir)
    if resume is not None:
        raw = checkpoint.load(resume)
        meta = raw["meta"]
        stored_depths = np.asarray(meta["depths"], float)
        if stored_depths.shape != depths.shape or not np.allclose(stored_depths, depths):
            raise ValueError(f"{resume}: checkpoint depths {stored_depths.tolist()} differ from {depths.tolist()}")
        stored_grid = np.asarray(meta.get("conditions", stored_depths[:, None]), float)  # n_cond = 1: not stored
        if stored_grid.shape != grid.values.shape or not np.allclose(stored_grid, grid.values):
            raise ValueError(f"{resume}: checkpoint condition grid {stored_grid.tolist()} differs from "
                             f"{grid.values.tolist()}")
        if int(meta["batch_size"]) != cfg.batch_size or meta["optimizer"] != cfg.optimizer:
            raise ValueError(f"{resume}: checkpoint batch_size/optimizer ({meta['batch_size']}, {meta['optimizer']}) "
                             f"differ from the config ({cfg.batch_size}, {cfg.optimizer})")
        if int(meta["seed"]) != seed:
            raise ValueError(f"{resume}: checkpoint was written with seed {meta['seed']}, not {seed}")
        state = jax.tree.map(jnp.asarray, _restore(template, raw["state"]))
        history = {k: np.asarray(v) for k, v in raw["history"].items()}
        lr_scale, rollbacks = float(meta.get("lr_scale", 1.0)), int(meta.get("rollbacks", 0))
        log(f"resumed from {resume.name} at step {int(state.step)}"
            + (f" (learning rate and step cap × {lr_scale:g} after {rollbacks} rollback(s))" if rollbacks else ""))
    else:
        if cfg.pretrain_steps > 0 and hasattr(wf, "orbitals") and targets is None:
            # per depth (with λ in the grid too: each distinct V once, at the system's λ)
            targets = default_targets(system, wf, depths if grid.n_cond == 1 else np.unique(depths), cfg, log)
        state = start_walkers(template, system, wf, targets if cfg.pretrain_steps > 0 else None, grid,
                              jax.random.fold_in(keys.walkers, 1), log)
    state = parallel.place(state, mesh, WALKER_AXES)

    # a grid of more than the depth also records its condition vectors (n_cond = 1: as before)
    grid_meta = {} if grid.n_cond == 1 else {"conditions": grid.values}

    def save(host: TrainState, hist: dict, extra: dict):
        tree = {"state": host, "history": hist,
                "meta": {"seed": seed, "depths": depths, "batch_size": cfg.batch_size, "optimizer": cfg.optimizer,
                         "config": json.dumps(cfg.to_dict(), sort_keys=True), "n_electrons": n_el, **grid_meta,
                         **extra}}
        checkpoint.save(checkpoint.checkpoint_path(ckpt_dir, int(host.step)), tree)
        write_netcdf(_dataset(hist, depths, system, cfg), out_dir / "train.nc", attrs)


    if resume is None:
        t0 = time.time()
        if cfg.pretrain_steps > 0 and hasattr(wf, "orbitals"):
            state, losses = pretrain_orbitals(state, targets, system, wf, cfg, keys.pretrain, mesh, log)
            history["pretrain_loss"] = losses
        state = burn_in(state, system, wf, cfg, keys.burn_in)
        # placed again as a resumed state is: the jitted burn-in hands back its walkers with the
        # compiler's sharding (replicated on one device), and the training step compiled for
        # those is another program than the one a resumed run compiles (batch-sharded walkers),
        # so a resume would find nothing in the persistent compilation cache. Same values.
        state = parallel.place(state, mesh, WALKER_AXES)
        acc = np.asarray(state.mcmc.acceptance)
        log(f"pretraining + burn-in done in {time.time() - t0:.1f} s; acceptance per depth {[round(float(a), 3) for a in acc]}")
        save(parallel.to_host(state), history, {"lr_scale": lr_scale, "rollbacks": rollbacks})

    start = int(jax.device_get(state.step))
    bar = None
    if use_bar and cfg.steps > start:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc="train", dynamic_ncols=True, file=sys.stderr)
    try:
        result = fit(state, history, system, wf, depths, cfg, keys.train, mesh, is_complex=bool(is_complex),
                     save=save, ckpt_dir=ckpt_dir, log=log, lr_scale=lr_scale, rollbacks=rollbacks, callback=callback,
                     fault_injector=fault_injector, bar=bar)
    except TrainingDiverged as err:
        write_netcdf(_dataset(err.history, depths, system, cfg), out_dir / "train.nc", attrs)  # the good history
        raise FloatingPointError(f"{err}; last good checkpoint in {ckpt_dir}") from None
    finally:
        if bar is not None:
            bar.close()

    state, history, last = result.state, result.history, result.last
    host = parallel.to_host(state)
    final_step = int(host.step)
    if last is None and len(history["step"]):
        last = {"energy_per_depth": history["energy_per_depth"][-1]}
    write_netcdf(_dataset(history, depths, system, cfg), out_dir / "train.nc", attrs)
    metadata = {"depths": [float(v) for v in depths], "step": final_step, "seed": seed,
                "system": system.config_dict(), "train_config": cfg.to_dict(),
                "model_config": _plain(getattr(wf, "config", None)),
                "cond_range": getattr(wf, "cond_range", None)}
    if grid.n_cond > 1:
        metadata.update(condition_names=list(grid.names), conditions=grid.values.tolist())
    model_path = checkpoint.save_model(out_dir / "model.msgpack", host.params, metadata)
    log(f"done: step {final_step}; model written to {model_path.name}")
    log.close()
    final_e = np.asarray(last["energy_per_depth"]) if last is not None else np.full(n_depths, np.nan)
    return TrainResult(host.params, final_step, history, host.mcmc, depths, out_dir, out_dir / "train.nc",
                       model_path, final_e)


# -- fine-tuning: training at one depth from given parameters ---------------------------------------------

def finetune_config(cfg, metadata: dict | None = None, dtype: str | None = None) -> TrainConfig:
    """The `TrainConfig` of fine-tuning at one depth.

    cfg: the evaluation's options (a `qernel.evaluate.EvalConfig`: finetune_steps, finetune,
    batch_size, laplacian, max_vmap_batch_size, target_acceptance, hop_moves, dtype are read). Starts from
    the pretraining's options recorded in the model file's `metadata` (unknown ones dropped),
    sets steps = finetune_steps, no orbital pretraining, the batch_size, laplacian,
    max_vmap_batch_size and dtype of the evaluation (dtype: the argument, else cfg.dtype, else the
    recorded one, else float32), a uniform depth weighting, the evaluation's target_acceptance and
    hop_moves; then `cfg.finetune` wins. Without a
    `finetune.learning_rate` the rate continues where the pretraining's schedule ended,
    η/(1 + steps/lr_decay_steps) (or is the default of another optimizer chosen in `finetune`).
    Raises ValueError naming a bad `finetune.<key>` (`check_finetune_options`) or value.
    """
    check_finetune_options(cfg.finetune)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    base = {k: v for k, v in recorded_train_config(metadata or {}).items() if k in known}
    try:
        pre = TrainConfig.from_dict(base)
    except (ValueError, TypeError) as err:
        _log.warning("ignoring the pretraining options of the model file (%s); fine-tuning from defaults", err)
        base, pre = {}, TrainConfig()
    dtype = dtype or cfg.dtype or recorded_dtype(metadata) or "float32"
    d = {**base, "steps": int(cfg.finetune_steps), "pretrain_steps": 0, "batch_size": int(cfg.batch_size),
         "laplacian": cfg.laplacian, "max_vmap_batch_size": int(cfg.max_vmap_batch_size),
         "dtype": dtype, "depth_weighting": "uniform",
         "target_acceptance": float(cfg.target_acceptance), "hop_moves": int(cfg.hop_moves),
         "checkpoint_every": min(pre.checkpoint_every, max(1, cfg.finetune_steps // 10)),
         "log_every": max(1, cfg.finetune_steps // 10)}
    d.update(cfg.finetune)
    if "learning_rate" not in cfg.finetune:
        if d.get("optimizer", pre.optimizer) == pre.optimizer:
            lr = pre.lr  # continue the pretraining's schedule where it ended
            if pre.lr_decay_steps and pre.lr_decay_steps > 0:
                lr = lr / (1.0 + pre.steps / pre.lr_decay_steps)
            d["learning_rate"] = float(lr)
        else:
            d["learning_rate"] = None  # another optimizer: its own default
    return TrainConfig.from_dict(d)


def finetune(system: System, wf, params, depth: float, cfg, metadata: dict, out_dir, *, seed: int = 0,
             dtype: str | None = None, attrs: dict | None = None, mesh=None) -> tuple[Any, dict]:
    """Fine-tune `wf` at the single depth V (E_M) from `params`; the `qernel.evaluate.Finetune` seam.

    depth: V in E_M, or the condition vector (n_cond,) of one grid point (named as
    `wf.condition_names`). cfg: the evaluation's options (see `finetune_config`); metadata: the
    model file's. Runs `run_training(system, wf, <the one-point grid>, finetune_config(cfg,
    metadata, dtype), out_dir, init_params=params)`: its checkpoints, train.nc and train.log in
    out_dir, so a rerun resumes (or finds the finished run). Returns (tuned params (host arrays),
    the TrainConfig used as a mapping). Raises what `finetune_config` and `run_training` raise,
    and ValueError for a condition vector of the wrong length (`qernel.conditions.condition_vector`).
    """
    tcfg = finetune_config(cfg, metadata, dtype)
    out_dir = Path(out_dir)
    names = names_of(wf)
    vec = condition_vector(depth, names)
    point = ConditionGrid(names, vec[None, :], ("",))
    _log.info("fine-tuning %d steps at V = %.6g E_M in %s (learning rate %.4g, %s)", tcfg.steps, vec[0], out_dir,
              tcfg.lr, tcfg.optimizer)
    t0 = time.time()
    result = run_training(system, wf, point, tcfg, out_dir, seed=int(seed), attrs=attrs,
                          progress=False, mesh=mesh, init_params=params)
    _log.info("fine-tuning done in %.1f s: E/N = %.6f E_M at the last step", time.time() - t0,
              float(np.asarray(result.final_energy_per_depth)[0]))
    return result.params, tcfg.to_dict()


def _model_facts(wf, params, n_electrons: int, cond0, dtype) -> tuple[bool, tuple]:
    """(is ψ complex, shape (L, E) of the model's expert counts; (1, 1) without MoE), from shapes only.

    cond0: one condition vector (n_cond,) (a grid row)."""
    x0 = jnp.zeros((n_electrons, 2), dtype)
    c0 = jnp.asarray(cond0, dtype)
    is_complex = jnp.iscomplexobj(jax.eval_shape(wf.log_psi, params, x0, c0))
    _, _, aux0 = jax.eval_shape(wf.apply, params, x0, c0)
    usage_shape = tuple(aux0["expert_counts"].shape) if isinstance(aux0, dict) and "expert_counts" in aux0 else (1, 1)
    return bool(is_complex), usage_shape


def _scaled(cfg: TrainConfig, lr_scale: float) -> TrainConfig:
    """cfg with its step made lr_scale times smaller: the learning rate and, when it is on, the step
    cap max_update_norm (a capped step would not shrink with the rate alone); cfg itself at scale 1."""
    if lr_scale == 1.0:
        return cfg
    cap = cfg.update_cap * lr_scale if cfg.update_cap > 0 else cfg.max_update_norm
    return dataclasses.replace(cfg, learning_rate=cfg.lr * lr_scale, max_update_norm=cap)


def _plain(obj):
    if obj is None:
        return None
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    return str(obj)


def _restore(template: TrainState, raw_state) -> TrainState:
    from flax import serialization

    return serialization.from_state_dict(template, raw_state)


def _reweight(state: TrainState, grid: ConditionGrid, cfg: TrainConfig, mesh, dtype, log, t: int) -> TrainState:
    """Re-split the walkers across the grid's points ∝ σ_d (Neyman allocation) from the variance EMA."""
    n_depths = grid.n_points
    var = np.asarray(jax.device_get(state.var_ema), float)
    target = _split_counts(np.sqrt(np.maximum(var, 0.0)), cfg.batch_size, max(1, cfg.batch_size // (4 * n_depths)))
    group = np.asarray(jax.device_get(state.mcmc.group))
    if np.array_equal(np.bincount(group, minlength=n_depths), target):
        return state
    new_group = _reassign(group, target)
    cond = grid.conditions(new_group, dtype)
    bat = parallel.batch_sharding(mesh)
    mcmc = state.mcmc._replace(group=jax.device_put(jnp.asarray(new_group, jnp.int32), bat),
                               cond=jax.device_put(cond, bat))
    log(f"step {t}: walkers per depth {target.tolist()} (variance weighting)")
    return state.replace(mcmc=mcmc)
