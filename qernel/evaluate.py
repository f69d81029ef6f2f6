"""Evaluation at one depth: load the shared model, fine-tune (optional), sample a long chain.

    cfg = EvalConfig.from_dict(sweep["evaluate"])
    evaluate_depth(system, wf, "results/demo/pretrain/model.msgpack", depth, cfg,
                   "results/demo/depth/2.500/evaluation.nc", seed=..., attrs=provenance)
    ds = sample_observables(system, log_psi, params, depth, cfg, key)   # the sampling core alone

Steps of `evaluate_depth`:

1. load the pretrained parameters (`qernel.checkpoint.load_model`); a missing, corrupt or
   mismatched file is an error naming the path;
2. if `finetune_steps > 0`: fine-tune at this depth alone with the training function the caller
   passes as `finetune` (`qernel.train.finetune`: training started from the loaded parameters,
   no orbital pretraining), its checkpoints, train.nc and train.log in
   `<out stem>_checkpoints/finetune/` beside the output, so a killed job resumes. This module
   does not import `qernel.train`: what both need (retries, MCMC, casting, placement, the
   model file's recorded options) lives below both, in `qernel.vmc` and `qernel.parallel`;
3. `sample_observables`: Metropolis–Hastings burn-in (the proposal width adapts), then
   T = ceil(samples / batch_size) measurement steps, each after `mcmc_steps` moves (and `hop_moves` site hops) of all
   walkers with the width frozen. One jitted function does the moves and the estimator of
   every observable (`qernel.observables`, default `default_observables(system, cfg)`) of a
   step, vectorised over walkers and electrons. Sampling checkpoints (walkers + series so far)
   are written about every 10 % in `<out stem>_checkpoints/sampling/`; a rerun resumes from the
   newest and gives the same chain (the key of step t is fold_in(key, t)); they are removed
   once evaluation.nc is written (with the whole folder when there was no fine-tuning). A step
   with a non-finite local energy is redone from the same walkers with new random numbers
   (`qernel.vmc.run_with_retries`, at most MAX_RETRIES times, then an error naming the depth
   and step: the parameters are fixed here, so there is nothing to roll back);
4. write evaluation.nc (atomically, with provenance) holding the per-step series below.

Every estimator is averaged over the walkers first: one number per step and observable, a time
series whose error bar `qernel.observables.compute_observables` gets by reblocking (walkers are
independent chains; the steps are correlated).

evaluation.nc
-------------
Each observable of `qernel.observables` declares its series, coords and attrs (`series()`,
`coords()`, `attrs()`); acceptance and mcmc_width are the sampler's. With the default observables:

Dimensions: step (T), x, y (folded density grid), sx, sy (supercell density grid), k (K
supercell reciprocal vectors, 0 < |k| <= structure_factor_shells · 4π/√3), r (pair-distance
bins; absent when pair_correlation_bins = 0).

    energy, kinetic_energy, potential_energy, interaction_energy (step)
        walker means of the local-energy components per electron, E_M (energy = the sum of the
        other three, sample by sample)
    local_energy_variance (step)   variance over the walkers of the total local energy E_L of
                                   one configuration (E_M², not per electron, ddof 0)
    acceptance (step)              Metropolis acceptance of the step's moves
    mcmc_width (step)              proposal width (a_M; frozen after burn-in)
    density (step, x, y)           walker mean of the folded histogram density (a_M⁻²; the
                                   estimator of `qernel.observables.density`)
    supercell_density (T', sx, sy) the same on the supercell grid
    rho_k_abs2 (T', k)             walker mean of |ρ_k|²/N, ρ_k = Σ_i exp(−i k·r_i)
    rho_k_real, rho_k_imag (T', k) walker means of Re ρ_k, Im ρ_k
    pair_correlation (T', r)       walker mean of the g(r) histogram estimator
    coords: step (1..T), x, y, sx, sy (bin centres, fractional), cart_x, cart_y (x, y),
            kx, ky, k_norm (k), r (bin centres, a_M)

T' is `step` unless a variable's full series would exceed `max_series_elements` numbers;
then consecutive steps are averaged in blocks of 2^j steps (the smallest j that fits; the last
block may be shorter) and its time dimension is `<name>_block` with the variable attr
`steps_per_block`. Reblocking block averages of 2^j steps reproduces levels >= j of the full
series' blocking analysis, so the error bars stay right (at worst a little noisier).

Global attrs: depth (E_M), depth_meV, energy_unit_meV, n_electrons, n_up, n_down, filling,
supercell (JSON), n_walkers, n_steps, n_samples, mcmc_steps, hop_moves, burn_in, laplacian, dtype,
eval_config (JSON), n_devices, device_kind, pair_r_max; from `evaluate_depth` also
model_checkpoint, model_sha256, finetune_steps (and finetune_config, finetune_dir), plus the
provenance attrs of `qernel.io`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from qernel import checkpoint, parallel
from qernel.conditions import COUPLING, DEPTH_ONLY, condition_vector, names_of, parameter
from qernel.config import config_hash
from qernel.determinant_sampling import determinant_positions
from qernel.mcmc import WALKER_AXES, MCMCState, init_walkers, make_mcmc_step
from qernel.eval_config import EvalConfig  # noqa: F401 (its options, without JAX; re-exported here)
from qernel.observables import (
    MAX_CHUNK_ELEMENTS,  # noqa: F401 (re-exported: the chunk bound of the observables' estimators)
    BlockSeries,
    SeriesSpec,
    default_observables,
)
from qernel.stats import reblock
from qernel.system import System
from qernel.vmc import (
    RetriesExhausted,
    cast_floats,
    jit_mcmc_step,
    recorded_dtype,
    run_with_retries,
)

log = logging.getLogger(__name__)

#: A measurement step with a non-finite local energy is redone from the same walkers with new
#: random numbers up to this many times before the evaluation stops with an error.
MAX_RETRIES = 3
def _dtype_context(dtype: str):
    return jax.enable_x64(True) if dtype == "float64" else contextlib.nullcontext()


# -- the jitted measurement -------------------------------------------------------------------------
def make_estimators(observables, log_psi):
    """estimators(params, x (W, N, 2), cond (W, n_cond)) -> dict of walker means for one step.

    observables: `qernel.observables.Observable`s (e.g. `default_observables(system, cfg)`);
    the dict holds every observable's estimator keys (with the default list: energy (4,),
    local_energy_variance (), n_nonfinite (), density, supercell_density, rho_k (K, 3),
    pair_correlation (n_r,)). Pure and jit-able.
    """
    parts = [o.estimator(log_psi) for o in observables]

    def estimators(params, x, cond):
        out = {}
        for estimate in parts:
            out.update(estimate(params, x, cond))
        return out

    return estimators


@functools.lru_cache(maxsize=8)
def _compiled(system: System, log_psi, observables: tuple, mcmc_steps: int, target_acceptance: float,
              hop_moves: int):
    """(burn_in_block, measure) jitted: burn-in moves with width adaptation; a measurement step."""
    burn = jit_mcmc_step(system, log_psi, mcmc_steps, target_acceptance, adapt=True, hop_moves=hop_moves)
    mcmc = make_mcmc_step(log_psi, system, mcmc_steps, target_acceptance, adapt=False, hop_moves=hop_moves)
    estimators = make_estimators(observables, log_psi)

    def measure(params, state: MCMCState, key):
        state = mcmc(params, state, key)
        stats = estimators(params, state.positions, state.cond)
        stats["acceptance"] = state.acceptance[0]
        stats["mcmc_width"] = state.width[0]
        return state, stats

    return burn, jax.jit(measure)  # no donation: a step with non-finite energies is redone from its input


# -- per-step series, block-averaged when too large ----------------------------------------------------
#: The sampler's own per-step series (beside the observables').
SAMPLER_SERIES = {
    "acceptance": SeriesSpec((), (), "1", "Metropolis acceptance of the Gaussian moves before each measurement (not the site hops)", True),
    "mcmc_width": SeriesSpec((), (), "a_M", "Metropolis proposal width", True),
}


def _series_specs(observables) -> dict[str, SeriesSpec]:
    specs = {}
    for o in observables:
        specs.update(o.series())
    specs.update(SAMPLER_SERIES)
    return specs


def _split_stats(stats: dict, observables) -> dict[str, np.ndarray]:
    """Host stats of B steps (leading axis B) → series name → (B, *shape)."""
    out = {}
    for o in observables:
        out.update(o.split(stats))
    for name in SAMPLER_SERIES:
        out[name] = np.asarray(stats[name], dtype=np.float64)
    return out


# -- the sampling core -----------------------------------------------------------------------------------
def sample_observables(system: System, log_psi, params, depth, cfg: EvalConfig, key, *,
                       checkpoint_dir=None, mesh=None,
                       callback: Callable[[int, MCMCState, dict], Any] | None = None,
                       observables=None, condition_names=DEPTH_ONLY, start_orbitals=None) -> xr.Dataset:
    """Sample |ψ(·; V)|² at one depth and return the evaluation dataset (module docstring).

    log_psi: a `qernel.hamiltonian.LogPsi` (e.g. `Wavefunction.log_psi`, or
    `qernel.bands.slater_log_psi(...)`); params: its parameters (any pytree, may be None);
    depth: V in E_M, or one grid point's condition vector (n_cond,) named by `condition_names`
    (`qernel.conditions`; every walker gets it, cond (W, n_cond)); key: a jax PRNG key. checkpoint_dir: where sampling checkpoints go (None:
    none); an existing newest checkpoint there is resumed. callback(t, state, stats): after
    every measurement step t (1-based) with the walkers (device arrays) and that step's
    estimators (a test hook; returning True stops the sampling early, as if killed).
    observables: the `qernel.observables.Observable`s to measure (default:
    `qernel.observables.default_observables(system, cfg)`; the sampler's retry reads the
    energy observable's n_nonfinite). start_orbitals(points (M, 2), depth) → (up (M, N_up), down
    (M, N_down)): the determinant the walkers start from, drawn exactly
    (`qernel.determinant_sampling`; e.g. `Wavefunction.prior_orbital_values`); None: uniform in
    the supercell. The dataset has no provenance attrs (`evaluate_depth` adds them).
    Raises ValueError when the newest checkpoint in checkpoint_dir is of another evaluation or
    the condition vector does not fit `condition_names`, FloatingPointError when a step stays
    non-finite after every retry, and SamplingInterrupted when the callback stops the sampling.
    """
    if isinstance(cfg, dict):
        cfg = EvalConfig.from_dict(cfg)
    names = tuple(condition_names)
    point = condition_vector(depth, names)
    dtype = cfg.dtype or "float32"
    with _dtype_context(dtype):
        return _sample(system, log_psi, params, point, cfg, dtype, key, checkpoint_dir, mesh, callback,
                       observables, names, start_orbitals)


def _sample(system, log_psi, params, point, cfg, dtype, key, checkpoint_dir, mesh, callback, observables=None,
            names=DEPTH_ONLY, start_orbitals=None):
    depth = float(point[0])
    jdtype = jnp.float64 if dtype == "float64" else jnp.float32
    mesh = parallel.make_mesh() if mesh is None else mesh
    n_dev = mesh.devices.size
    parallel.check_batch_size(cfg.batch_size, n_dev, 1, key="evaluate.batch_size")
    n_dev_all, kind = parallel.device_summary()
    observables = default_observables(system, cfg, names) if observables is None else tuple(observables)
    specs = _series_specs(observables)
    n_steps, w, n_el = cfg.n_steps, cfg.batch_size, system.n_electrons
    log.info("sampling V = %.6g E_M: %d walkers × %d steps (%d samples), %d moves between measurements, "
             "burn-in %d moves; observables %s; %s; dtype %s; %d device(s) in the mesh: %s",
             depth, w, n_steps, w * n_steps, cfg.mcmc_steps, cfg.burn_in, ", ".join(o.name for o in observables),
             cfg.laplacian, dtype, n_dev, kind)

    params = parallel.replicate(cast_floats(params, jdtype), mesh)
    k_init, k_burn, k_meas = (jax.random.fold_in(key, i) for i in range(3))
    cond = jnp.broadcast_to(jnp.asarray(point, jdtype), (w, len(names)))  # the grid point's row, every walker
    state = init_walkers(k_init, system, cond, width=cfg.init_width, dtype=jdtype)
    series = {name: BlockSeries(n_steps, spec.shape, cfg.max_series_elements) for name, spec in specs.items()}
    burn, measure = _compiled(system, log_psi, observables, cfg.mcmc_steps, float(cfg.target_acceptance),
                              int(cfg.hop_moves))

    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    start = None
    meta = {"depth": depth, "batch_size": w, "n_steps": n_steps, "dtype": dtype}
    if len(names) > 1:  # a grid of more than the depth: the whole condition vector (n_cond = 1: as before)
        meta["condition"] = [float(v) for v in point]
    if ckpt_dir is not None and (resume := checkpoint.latest(ckpt_dir)) is not None:
        raw = checkpoint.load(resume)
        stored = {k: raw["meta"][k] for k in meta}
        stored["depth"], stored["batch_size"] = float(stored["depth"]), int(stored["batch_size"])
        stored["n_steps"] = int(stored["n_steps"])
        if "condition" in stored:
            stored["condition"] = [float(v) for v in np.asarray(stored["condition"]).ravel()]
        if stored != meta:
            raise ValueError(f"{resume}: sampling checkpoint of another evaluation ({stored} != {meta}); "
                             f"remove {ckpt_dir} to start afresh")
        state = MCMCState(**{f: jnp.asarray(raw["state"][f]) for f in MCMCState._fields})
        start = int(raw["meta"]["t"])
        for name, s in series.items():
            s.sums[...] = np.asarray(raw["series"][name]).reshape(s.sums.shape)
        log.info("resumed sampling from %s at step %d/%d", resume.name, start, n_steps)
    elif start_orbitals is not None:  # a fresh start: the walkers drawn from the determinant
        positions = determinant_positions(jax.random.fold_in(k_init, 1), system, start_orbitals, np.full(w, depth))
        state = state._replace(positions=jnp.asarray(positions, jdtype))
    state = parallel.place(state, mesh, WALKER_AXES)

    def save(t: int) -> None:
        if ckpt_dir is None:
            return
        tree = {"state": parallel.to_host(state), "series": {n: s.sums for n, s in series.items()},
                "meta": {**meta, "t": t}}
        path = checkpoint.save(checkpoint.checkpoint_path(ckpt_dir, t), tree)
        for _, old in checkpoint.list_checkpoints(ckpt_dir):
            if old != path:
                old.unlink(missing_ok=True)

    t0 = time.time()
    if start is None:
        n_burn = -(-cfg.burn_in // cfg.mcmc_steps)
        for i in range(n_burn):
            state = burn(params, state, jax.random.fold_in(k_burn, i))
        acc = float(jax.device_get(state.acceptance)[0]) if n_burn else float("nan")
        log.info("burn-in: %d moves in %.1f s; acceptance %.3f, width %.4g a_M", n_burn * cfg.mcmc_steps,
                 time.time() - t0, acc, float(jax.device_get(state.width)[0]))
        start = 0
        save(0)

    every = cfg.checkpoint_every or max(1, -(-n_steps // 10))
    report = max(1, -(-n_steps // 10))
    pending: list = []
    t_start = time.time()

    def flush(t_end: int) -> None:
        if not pending:
            return
        host = jax.device_get(pending)
        stacked = {k: np.stack([h[k] for h in host]) for k in host[0]}
        for name, values in _split_stats(stacked, observables).items():
            series[name].add(t_end - len(host), values)
        pending.clear()

    stopped = False
    for t in range(start + 1, n_steps + 1):
        def on_reject(a, why, t=t):
            log.warning("V = %g E_M, measurement step %d: %s; redoing the step with new random numbers "
                        "(attempt %d)", depth, t, why, a + 2)

        def attempt(key_a, a, state=state):
            return measure(params, state, key_a)

        try:
            (state, stats), _ = run_with_retries(attempt, jax.random.fold_in(k_meas, t), _nonfinite, MAX_RETRIES,
                                                 on_reject)
        except RetriesExhausted as err:
            raise FloatingPointError(f"evaluation at depth V = {depth:g} E_M stopped at measurement step {t}: "
                                     f"non-finite local energies in {err.attempts} attempts (last: {err.reason}, "
                                     f"of {w} walkers)") from None
        pending.append(stats)
        if callback is not None and callback(t, state, stats):
            flush(t)
            save(t)
            stopped = True
            break
        if t % report == 0 or t % every == 0 or t == n_steps or len(pending) >= 64:
            flush(t)
        if t % every == 0 and t < n_steps:
            save(t)
        if t % report == 0 or t == n_steps:
            e = series["energy"].values(t)
            acc = series["acceptance"].values(t)
            if len(e) >= 2:
                r = reblock(e, warn=False)
                err = f" ± {float(r.stderr):.2e}"
            else:
                r, err = None, ""
            rate = (t - start) / max(time.time() - t_start, 1e-9)
            log.info("step %d/%d (%3.0f%%): E/N = %.6f%s E_M, acceptance %.3f, %.2f steps/s",
                     t, n_steps, 100.0 * t / n_steps, float(np.mean(e)) if r is None else float(r.mean), err,
                     float(np.mean(acc)), rate)
    if stopped:
        raise SamplingInterrupted(t)

    return _dataset(system, depth, cfg, dtype, observables, series, specs, n_dev_all, kind, point, names)


def _nonfinite(outcome) -> str | None:
    """The rejection reason of a measurement step (new state, stats): None when every local energy is finite."""
    n_bad = int(outcome[1]["n_nonfinite"])
    return None if n_bad == 0 else f"{n_bad} walker(s) with non-finite local energies"


class SamplingInterrupted(RuntimeError):
    """Sampling stopped by the callback (a test hook that simulates a killed job)."""

    def __init__(self, step: int):
        super().__init__(f"sampling stopped by the callback after step {step}")
        self.step = step


def _dataset(system, depth, cfg, dtype, observables, series: dict, specs: dict, n_devices: int,
             kind: str, point, names) -> xr.Dataset:
    n_steps = cfg.n_steps
    sc = system.supercell
    coords = {"step": ("step", np.arange(1, n_steps + 1))}
    for o in observables:
        coords.update(o.coords())
    data = {}
    for name, s in series.items():
        spec = specs[name]
        values = s.values()
        tdim = "step" if s.block == 1 else f"{name}_block"
        attrs = {"units": spec.units, "long_name": spec.long_name, "steps_per_block": int(s.block)}
        enc = np.float64 if spec.float64 or dtype == "float64" else np.float32
        data[name] = xr.Variable((tdim,) + tuple(spec.dims), values.astype(enc), attrs)
        if s.block > 1:
            coords[tdim] = (tdim, 1 + s.block * np.arange(values.shape[0]))
            log.info("%s: %d steps stored as %d block averages of %d steps (max_series_elements %d)",
                     name, n_steps, values.shape[0], s.block, cfg.max_series_elements)
    e_m = system.energy_unit_meV
    attrs = {
        "depth": float(depth),
        "energy_unit_meV": float("nan") if e_m is None else float(e_m),
        "depth_meV": float(depth) * (float("nan") if e_m is None else float(e_m)),
        "n_electrons": int(system.n_electrons), "n_up": int(system.n_up), "n_down": int(system.n_down),
        "filling": float(system.filling),
        "coupling": float(parameter(point, names, COUPLING, system.coupling)),
        "phase_deg": float(system.phase_deg),
        "supercell": json.dumps([list(r) for r in sc.matrix]),
        "n_walkers": int(cfg.batch_size), "n_steps": int(n_steps), "n_samples": int(cfg.batch_size * n_steps),
        "mcmc_steps": int(cfg.mcmc_steps), "hop_moves": int(cfg.hop_moves), "burn_in": int(cfg.burn_in), "laplacian": cfg.laplacian, "dtype": dtype,
        "eval_config": json.dumps(cfg.to_dict(), sort_keys=True, default=str),
        "n_devices": int(n_devices), "device_kind": kind,
    }
    if len(names) > 1:  # n_cond = 1: the attrs as before
        attrs["condition_names"] = json.dumps(list(names))
        attrs["condition"] = json.dumps([float(v) for v in point])
    for o in observables:
        attrs.update(o.attrs())
    return xr.Dataset(data, coords=coords, attrs=attrs)


# -- the per-depth driver -----------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ModelCheckpointError(ValueError):
    """A model file that cannot be used: corrupt, not a model, or for another model or system."""


def load_pretrained(path, wf):
    """(params, metadata) of the model file `path` for the model `wf`.

    Raises FileNotFoundError (missing file) or ModelCheckpointError (a ValueError: corrupt file,
    not a model file, or parameters that do not fit `wf`), each naming the path.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model checkpoint {str(path)!r} does not exist (run the pretraining first)")
    try:
        raw = checkpoint.load(path)
    except checkpoint.CorruptCheckpointError as err:
        raise ModelCheckpointError(f"model checkpoint {str(path)!r} is corrupt or not a checkpoint: {err}") from None
    if not isinstance(raw, dict) or "params" not in raw:
        keys = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise ModelCheckpointError(f"model checkpoint {str(path)!r} is not a model file (no 'params'; has {keys}): "
                         "pass the model written by the pretraining (model.msgpack)")
    try:
        metadata = json.loads(raw.get("metadata") or "{}")
    except (TypeError, ValueError):
        metadata = {}
    params = raw["params"]
    if hasattr(wf, "init"):
        from flax import serialization

        template = jax.eval_shape(wf.init, jax.random.PRNGKey(0))
        try:
            params = serialization.from_state_dict(template, params)
        except (ValueError, KeyError, TypeError) as err:
            raise ModelCheckpointError(f"model checkpoint {str(path)!r} does not match the model: {err}") from None
        bad = [(jax.tree_util.keystr(p), np.shape(a), t.shape) for (p, a), t in
               zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(template)) if np.shape(a) != t.shape]
        if bad:
            raise ModelCheckpointError(f"model checkpoint {str(path)!r} does not match the model: parameter shapes "
                             f"{bad[:3]} (stored, expected){' ...' if len(bad) > 3 else ''}")
    return params, metadata


def _check_system(metadata: dict, system: System, path: Path, condition_names=DEPTH_ONLY) -> None:
    """Raise ModelCheckpointError when the model file's recorded system is another: supercell and
    spins; the coupling λ too unless the model is conditioned on it ("coupling" in condition_names)."""
    stored = metadata.get("system")
    if not isinstance(stored, dict):
        return
    mine = {"supercell": [list(r) for r in system.supercell.matrix], "n_up": system.n_up, "n_down": system.n_down}
    theirs = {k: stored.get(k) for k in mine}
    if theirs != mine:
        raise ModelCheckpointError(f"model checkpoint {str(path)!r} was trained for another system "
                                   f"({theirs} != {mine})")
    if COUPLING in condition_names:
        return  # λ is a condition of the model: the evaluation's grid point gives it
    if "coupling" in stored and not math.isclose(float(stored["coupling"]), system.coupling, rel_tol=1e-9):
        raise ModelCheckpointError(f"model checkpoint {str(path)!r} was trained at coupling λ = {stored['coupling']}, "
                         f"not {system.coupling}")


def resolve_dtype(cfg: EvalConfig, metadata: dict | None = None, wf=None) -> str:
    """cfg.dtype, else the pretraining's, else the model config's, else float32 (`qernel.vmc.recorded_dtype`)."""
    if cfg.dtype is not None:
        return cfg.dtype
    return recorded_dtype(metadata, wf) or "float32"


class Finetune(Protocol):
    """A training function for fine-tuning at one depth (`qernel.train.finetune` is one).

    finetune(system, wf, params, depth, cfg, metadata, out_dir, *, seed, dtype, attrs, mesh)
    -> (params, options): trains `wf` at the single depth V (E_M) for cfg.finetune_steps steps
    starting from `params` (the loaded model), with the options of `cfg` (an EvalConfig: its
    finetune mapping, batch, laplacian ...) over the pretraining's recorded in `metadata`;
    checkpoints, train.nc and train.log in out_dir (a rerun resumes there). Returns the tuned
    parameters and the training options used (a JSON-able mapping, recorded in evaluation.nc).
    """

    def __call__(self, system: System, wf, params, depth: float, cfg: EvalConfig, metadata: dict, out_dir: Path, *,
                 seed: int, dtype: str, attrs: dict, mesh) -> tuple[Any, dict]: ...


def work_dir(out_path) -> Path:
    """The folder of fine-tuning and sampling checkpoints beside out_path: `<stem>_checkpoints/`."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.stem + "_checkpoints")


def evaluate_depth(system: System, wf, checkpoint_path, depth, cfg: EvalConfig, out_path, seed: int = 0,
                   attrs: dict | None = None, *, mesh=None, callback=None, finetune: Finetune | None = None) -> Path:
    """Evaluate the pretrained model `checkpoint_path` at depth V (E_M); write `out_path`.

    depth: V in E_M, or the condition vector (n_cond,) of one grid point, named as
    `wf.condition_names` (`qernel.conditions`; a model without them: ("depth",)).

    wf: the model (`qernel.model.Wavefunction`, or anything with init/log_psi/apply); cfg: an
    `EvalConfig` (or its mapping); seed: this depth's seed; attrs: global attrs of the output
    (provenance, see `qernel.io.provenance_attrs`; default: built from the system and cfg).
    callback: passed to `sample_observables`. finetune: the training function used when
    cfg.finetune_steps > 0 (`qernel.train.finetune`; see `Finetune`). Returns out_path. See
    the module docstring.

    Raises FileNotFoundError or ModelCheckpointError (the model file, see `load_pretrained`; a
    model trained at another λ unless λ is one of its conditions), ValueError (finetune_steps > 0
    without a `finetune` function; bad options; a condition vector of the wrong length),
    FloatingPointError (a step non-finite after every retry) and SamplingInterrupted (the
    callback stopped it).
    """
    if isinstance(cfg, dict):
        cfg = EvalConfig.from_dict(cfg)
    names = names_of(wf)
    point = condition_vector(depth, names)
    depth = float(point[0])
    # what the finetuning and the sampling get: the bare depth for n_cond = 1 (as before), else the row
    where = depth if len(names) == 1 else point
    out_path = Path(out_path)
    checkpoint_path = Path(checkpoint_path)
    n_dev, kind = parallel.device_summary()
    log.info("evaluate V = %.6g E_M from %s; devices: %d × %s", float(depth), checkpoint_path, n_dev, kind)
    if cfg.finetune_steps > 0 and finetune is None:
        raise ValueError(f"evaluate.finetune_steps = {cfg.finetune_steps} needs a training function: pass "
                         "finetune=qernel.train.finetune to evaluate_depth (or set evaluate.finetune_steps: 0)")
    params, metadata = load_pretrained(checkpoint_path, wf)
    _check_system(metadata, system, checkpoint_path, names)
    dtype = resolve_dtype(cfg, metadata, wf)
    with _dtype_context(dtype):
        cond_range = getattr(wf, "cond_range", None) or ()
        for name, value, (lo, hi) in zip(names, point, cond_range):
            if not (lo - 1e-9 <= value <= hi + 1e-9):
                log.warning("%s = %g lies outside the model's condition range %s: extrapolating",
                            "depth V" if name == "depth" else name, value, (lo, hi))
        model_sha = _sha256(checkpoint_path)
        setup = {"model_sha256": model_sha, "depth": float(depth), "seed": int(seed), "dtype": dtype,
                 "evaluate": cfg.to_dict(), "system": system.config_dict()}
        if len(names) > 1:
            setup["condition"] = dict(zip(names, (float(v) for v in point)))
        work = work_dir(out_path)
        # checkpoints of another setup are kept aside by its hash, never overwritten (qernel.checkpoint.claim)
        checkpoint.claim(work, config_hash(setup), setup, what="evaluation checkpoints")
        root = jax.random.PRNGKey(seed)
        run_attrs = {"model_checkpoint": str(checkpoint_path), "model_sha256": model_sha,
                     "finetune_steps": int(cfg.finetune_steps), "seed": int(seed)}
        if attrs is None:
            from qernel.io import provenance_attrs

            e_m = system.energy_unit_meV
            attrs = provenance_attrs({"system": system.config_dict(), "evaluate": cfg.to_dict()}, "unknown",
                                     float("nan") if e_m is None else e_m)
        if cfg.finetune_steps > 0:
            ft_dir = work / "finetune"
            params, options = finetune(system, wf, params, where, cfg, metadata, ft_dir, seed=int(seed),
                                       dtype=dtype, attrs=attrs, mesh=mesh)
            run_attrs.update(finetune_config=json.dumps(options, sort_keys=True), finetune_dir=str(ft_dir))
        ds = sample_observables(system, wf.log_psi, params, where, dataclasses.replace(cfg, dtype=dtype),
                                jax.random.fold_in(root, 7), checkpoint_dir=work / "sampling", mesh=mesh,
                                callback=callback, condition_names=names,
                                start_orbitals=getattr(wf, "start_orbitals", None))
    e_m = attrs.get("energy_unit_meV", ds.attrs["energy_unit_meV"])
    try:
        e_m = float(e_m)
    except (TypeError, ValueError):
        e_m = float("nan")
    ds.attrs.update(run_attrs)
    ds.attrs["energy_unit_meV"] = e_m
    ds.attrs["depth_meV"] = float(depth) * e_m
    from qernel.io import write_netcdf

    write_netcdf(ds, out_path, {**attrs, "energy_unit_meV": e_m})
    # the sampling checkpoints are done with; the fine-tuning folder (model, train.nc, train.log) stays
    shutil.rmtree(work if cfg.finetune_steps == 0 else work / "sampling", ignore_errors=True)
    e = ds["energy"].values
    log.info("wrote %s: E/N = %.6f E_M (naive mean over %d steps; see observables.nc for the reblocked error)",
             out_path, float(np.mean(e)), len(e))
    return out_path

