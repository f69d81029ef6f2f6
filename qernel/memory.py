"""Memory and work of one training step, known before a job starts.

    est = step_estimate(n_electrons=24, n_params=..., walkers=..., model=ModelConfig, chunk=64)
    est.peak_bytes, est.flops                       # per device
    sweep_estimate(sweep)                           # the same for a config sweep (qernel info)
    check_sweep(sweep, cache_dir=".snakemake/qernel")   # ValueError naming the keys if it cannot fit
    measured = compiled_step_analysis(system, model, train_cfg, n_depths)   # XLA's own numbers

The model (`step_estimate`) adds up the buffers that are alive at the step's peak, per device
(W_d = walkers / devices walkers each; b = the chunk of walkers, `max_vmap_batch_size`):

- persistent: the parameters, the SR direction φ, the new parameters and the flat update
  (`C_PARAMS` · P numbers), and the MCMC block's forward passes of all W_d walkers
  (`C_WALKERS` · W_d · A);
- the local energies (folx forward Laplacian): every activation of b_d = b / devices walkers
  (`max_vmap_batch_size` counts the walkers of all devices together) carries its value,
  2N first derivatives and a Laplacian, `C_LAPLACIAN` · b · A · (2N + 2) numbers, with A the
  activations of one walker's forward pass (`activations`);
- the SR kernel (qernel.optim.sr): two chunk Jacobians 2 · b_d · R · P (R = 2 for complex ψ; with
  several devices the second block is gathered whole, b · R · P), the backward pass of b_d
  walkers `C_BACKWARD` · b_d · A, and the kernel and its eigendecomposition
  `C_KERNEL` · M² (M = W·R, the whole batch: the kernel is not sharded);

peak = persistent + max(local energies, SR) (the two phases do not overlap in XLA's schedule).
The constants were fitted once to XLA's `memory_analysis().temp_size_in_bytes` of the compiled
step on CPU for small configs (tests/engine/test_memory.py checks the model against it, within
`MODEL_FACTOR`), so that they describe this code, not an idealised one.

FLOPs: forward passes counted as 2 × (multiply–adds of one walker) per walker: the MCMC block
(mcmc_steps + hop_moves + 1 passes: each Gaussian move and each site hop evaluates ψ once), the
local energies ((2N + 2) forward passes), the Jacobians ((n + 1)/2 × 3 forward passes, n = W/b
chunks), the kernel products 2·M²·P, the vjp and jvp (3 + 2 forward
passes) and the eigendecomposition (≈ 9 M³).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any

#: Bytes of a float32 number (float64: 8).
BYTES = {"float32": 4, "float64": 8}
#: Fitted multipliers of the buffer counts (see the module docstring).
C_PARAMS = 6.0
C_WALKERS = 2.0
C_LAPLACIAN = 1.0
C_BACKWARD = 2.0
C_KERNEL = 4.0
#: The model agrees with XLA's compiled temporary memory within this factor (tests).
MODEL_FACTOR = 2.0
#: Default GPU memory per device (GB = 1e9 bytes) when a sweep's resources do not say.
DEFAULT_GPU_MEMORY_GB = 80.0
#: Fraction of the GPU memory a step may plan to use (the rest: XLA's own workspace,
#: fragmentation, the evaluation buffers).
GPU_MEMORY_MARGIN = 0.85


@dataclasses.dataclass(frozen=True)
class StepEstimate:
    """One training step per device: peak_bytes, flops and the largest terms (bytes)."""

    peak_bytes: float
    flops: float
    terms: dict

    @property
    def peak_gb(self) -> float:
        return self.peak_bytes / 1e9

    def describe(self) -> str:
        big = ", ".join(f"{k} {v / 1e9:.3g} GB" for k, v in sorted(self.terms.items(), key=lambda kv: -kv[1]))
        return f"{self.peak_gb:.3g} GB per device ({big}); {self.flops:.3g} FLOPs per step"


def activations(n_electrons: int, model) -> float:
    """Numbers held by one walker's forward pass (all layers), A.

    Per layer and electron: the attention projections and residual stream (~6 d_model), the
    mixture of experts evaluated densely (n_experts · (d_ff + d_model)), the attention scores
    (n_heads · N); plus the determinants' orbitals (2 · n_determinants · N², complex) and the
    Jastrow pair MLP (jastrow_hidden · N²).
    """
    n, m = n_electrons, model
    per_layer = n * (6 * m.d_model + m.n_experts * (m.d_ff + m.d_model) + m.n_heads * n)
    return float(m.n_layers * per_layer + 2 * m.n_determinants * n * n + m.jastrow_hidden * n * n
                 + n * m.film_hidden)


def forward_flops(n_electrons: int, model) -> float:
    """FLOPs of one walker's forward pass: 2 × multiply–adds of the dense layers, attention and orbitals
    (the orbital heads: the neural amplitude unless additive_orbitals is false, and the prior's
    modulation when it is on)."""
    n, m = n_electrons, model
    per_layer = n * (4 * m.d_model * m.d_model + 2 * m.n_experts * m.d_model * m.d_ff) + 2 * n * n * m.d_model
    heads = int(m.additive_orbitals) + int(m.orbital_prior and m.prior_modulation)
    dets = m.n_determinants * (heads * m.d_model * n * n + n ** 3)
    return float(2 * (m.n_layers * per_layer + dets + m.jastrow_hidden * n * n * 4))


def step_estimate(n_electrons: int, n_params: int, walkers: int, model, chunk: int = 0, devices: int = 1,
                  mcmc_steps: int = 10, is_complex: bool = True, dtype: str = "float32",
                  hop_moves: int = 2) -> StepEstimate:
    """The memory model (per device) and FLOPs (per device) of one training step with SPRING.

    n_electrons N; n_params P; walkers W (all devices); model: a qernel.model.ModelConfig (sizes);
    chunk: max_vmap_batch_size (0 = all walkers of a device at once); devices: GPUs of the job;
    mcmc_steps, hop_moves: the Gaussian moves and site hops of one MCMC block (qernel.mcmc).
    Raises ValueError for walkers not divisible by devices.
    """
    if walkers % devices:
        raise ValueError(f"{walkers} walkers do not split over {devices} devices")
    nb = BYTES[dtype]
    w_dev = walkers // devices
    b = walkers if chunk <= 0 else min(chunk, walkers)  # the chunk counts walkers of all devices
    b_dev = max(1, b // devices)
    r = 2 if is_complex else 1
    m_rows = walkers * r
    a = activations(n_electrons, model)
    terms = {
        "parameters": C_PARAMS * n_params * nb,
        "walkers": C_WALKERS * w_dev * a * nb,
        "local_energy": C_LAPLACIAN * b_dev * a * (2 * n_electrons + 2) * nb,
        # this device's rows of J_i and (with several devices) the gathered J_j of the other block
        "jacobian_chunks": (b_dev + (b if devices > 1 else b_dev)) * r * n_params * nb,
        "backward": C_BACKWARD * b_dev * a * nb,
        "kernel": C_KERNEL * m_rows * m_rows * nb,
    }
    sr = terms["jacobian_chunks"] + terms["backward"] + terms["kernel"]
    peak = terms["parameters"] + terms["walkers"] + max(terms["local_energy"], sr)
    n_chunks = max(1, -(-w_dev // b))
    fwd = forward_flops(n_electrons, model)
    flops = w_dev * fwd * ((mcmc_steps + hop_moves + 1) + (2 * n_electrons + 2) + 3 * (n_chunks + 1) / 2 + 5)
    flops += 2.0 * m_rows * (m_rows / devices) * n_params + 9.0 * m_rows ** 3
    return StepEstimate(float(peak), float(flops), terms)


def _n_params(system, model, cond_range, condition_names=None) -> int:
    import jax

    from qernel.model import ModelConfig, make_wavefunction

    model = ModelConfig.from_spec(model).with_band_prior()  # no Hartree–Fock before any job runs
    wf = make_wavefunction(system, model, cond_range, condition_names)
    shapes = jax.eval_shape(wf.init, jax.random.PRNGKey(0))
    return int(sum(math.prod(a.shape) for a in jax.tree.leaves(shapes)))


#: The file of `parameter_count`'s cache in its cache_dir.
PARAMETER_COUNT_CACHE = "parameter_counts.json"


def _source_digest() -> str:
    """sha256 of every Python source file of the package (a changed model changes it)."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def parameter_count(system, model, cond_range, condition_names=None, cache_dir=None) -> int:
    """Number of parameters of the model `make_wavefunction(system, model, cond_range,
    condition_names)` would build, from the model built abstractly (JAX and Flax: ~2 s of CPU,
    most of a workflow start).

    cache_dir: a folder where counts are remembered (PARAMETER_COUNT_CACHE, JSON) under a key of
    the arguments, valid for the package's source files they were counted with (any edited
    source file of the package empties the cache). None: always count.
    """
    if cache_dir is None:
        return _n_params(system, model, cond_range, condition_names)
    path = Path(cache_dir) / PARAMETER_COUNT_CACHE
    source = _source_digest()
    key = hashlib.sha256(repr((system, model, tuple(map(tuple, cond_range)),
                               None if condition_names is None else tuple(condition_names))).encode()).hexdigest()
    try:
        cache = json.loads(path.read_text())
        counts = cache["counts"] if cache.get("source") == source else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        counts = {}
    if isinstance(counts.get(key), int):
        return counts[key]
    n = _n_params(system, model, cond_range, condition_names)
    from qernel.atomic import atomic_path

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps({"source": source, "counts": {**counts, key: n}}, indent=1, sort_keys=True))
    except OSError:  # a read-only folder: the count is still right, only not remembered
        pass
    return n


def sweep_estimate(sweep, cache_dir=None) -> StepEstimate:
    """step_estimate for a config sweep (qernel.config.Sweep): its system, model, pretrain options
    and resources.pretrain.gpu devices. cache_dir: see `parameter_count`."""
    cfg = sweep.pretrain
    devices = max(1, int(sweep.resources["pretrain"].get("gpu", 0) or 1))
    n_params = parameter_count(sweep.system, sweep.model, sweep.cond_range, sweep.conditions.names, cache_dir)
    return step_estimate(sweep.system.n_electrons, n_params, cfg.batch_size, sweep.model, cfg.max_vmap_batch_size,
                         devices, cfg.mcmc_steps, bool(sweep.model.complex_output), cfg.dtype, cfg.hop_moves)


def gpu_memory_gb(sweep) -> float:
    """resources.pretrain.gpu_memory_gb of the sweep (default DEFAULT_GPU_MEMORY_GB)."""
    return float(sweep.resources["pretrain"].get("gpu_memory_gb", DEFAULT_GPU_MEMORY_GB))


def check_sweep(sweep, cache_dir=None) -> StepEstimate:
    """Raise ValueError (one line naming the keys) if the sweep's training step is estimated to
    need more than GPU_MEMORY_MARGIN × gpu_memory_gb per device; return the estimate otherwise.

    Sweeps that ask for no GPU (resources.pretrain.gpu = 0) are not checked against a GPU.
    cache_dir: where parameter counts are remembered (`parameter_count`; the workflow's
    .snakemake/qernel, so that a snakemake start after the first does not build the model).
    """
    est = sweep_estimate(sweep, cache_dir)
    gpus = int(sweep.resources["pretrain"].get("gpu", 0) or 0)
    limit = GPU_MEMORY_MARGIN * gpu_memory_gb(sweep)
    if gpus > 0 and est.peak_gb > limit:
        raise ValueError(
            f"sweeps.{sweep.name}: one training step needs an estimated {est.peak_gb:.1f} GB per GPU, more than "
            f"{limit:.1f} GB ({GPU_MEMORY_MARGIN:.0%} of resources.pretrain.gpu_memory_gb = {gpu_memory_gb(sweep):g}); "
            f"lower pretrain.batch_size ({sweep.pretrain.batch_size}) or pretrain.max_vmap_batch_size "
            f"({sweep.pretrain.max_vmap_batch_size}), or raise resources.pretrain.gpu ({gpus})")
    return est


# -- XLA's own numbers ----------------------------------------------------------------------------

def lowered_step(system, model, train_cfg, depths, mesh=None):
    """The training step lowered for abstract inputs (nothing is run or allocated).

    system: qernel.system.System; model: ModelConfig, preset name or mapping; train_cfg:
    qernel.train.TrainConfig; depths: the sweep's condition grid (`qernel.conditions.ConditionGrid`)
    or its depths (D,) in E_M. The walkers' conditions are the grid's rows, cond (W, n_cond).
    Returns (lowered, n_params). Raises ValueError for an invalid grid.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from qernel import parallel
    from qernel.conditions import as_grid
    from qernel.mcmc import init_walkers
    from qernel.model import ModelConfig, make_wavefunction
    from qernel.train import TrainState, make_optimizer, make_train_step

    grid = as_grid(depths)
    depths = grid.depths
    n_depths = len(depths)
    dtype = jnp.float64 if train_cfg.dtype == "float64" else jnp.float32
    cond_range = ((float(depths.min()), float(max(depths.max(), depths.min() + 1))),) + grid.cond_range[1:]
    model = ModelConfig.from_spec(model).with_band_prior()
    wf = make_wavefunction(system, model, cond_range, grid.names)
    mesh = parallel.make_mesh() if mesh is None else mesh

    def cast(a):
        return a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a

    params = jax.eval_shape(lambda k: jax.tree.map(cast, wf.init(k)), jax.random.PRNGKey(0))
    x0 = jax.ShapeDtypeStruct((system.n_electrons, 2), dtype)
    c0 = jax.ShapeDtypeStruct((grid.n_cond,), dtype)
    is_complex = bool(jnp.iscomplexobj(jax.eval_shape(wf.log_psi, params, x0, c0)))
    group = np.arange(train_cfg.batch_size) % n_depths
    cond = grid.conditions(group, dtype)
    walkers = jax.eval_shape(lambda: init_walkers(jax.random.PRNGKey(1), system, cond, group, n_depths, 0.1,
                                                  dtype=dtype))
    opt = make_optimizer(train_cfg, wf.log_psi, n_depths, is_complex)
    opt_state = jax.eval_shape(opt.init, params)
    state = TrainState(params, opt_state, walkers, jax.ShapeDtypeStruct((), jnp.int32),
                       jax.ShapeDtypeStruct((n_depths,), dtype))
    step = make_train_step(system, wf, train_cfg, n_depths, is_complex, mesh, optimizer=opt)
    lowered = jax.jit(step, donate_argnums=(0,)).lower(state, jax.ShapeDtypeStruct((2,), jnp.uint32),
                                                       jax.ShapeDtypeStruct((n_depths,), dtype))
    n_params = int(sum(math.prod(a.shape) for a in jax.tree.leaves(params)))
    return lowered, n_params


def compiled_step(system, model, train_cfg, depths, mesh=None):
    """`lowered_step` compiled for the local backend: (compiled, n_params)."""
    lowered, n_params = lowered_step(system, model, train_cfg, depths, mesh)
    return lowered.compile(), n_params


def compiled_step_analysis(system, model, train_cfg, depths) -> dict[str, Any]:
    """XLA's memory and cost analysis of the compiled step on the local backend: temp_bytes
    (temp_size_in_bytes), argument_bytes, output_bytes, flops (None where the backend gives none)
    and n_params."""
    compiled, n_params = compiled_step(system, model, train_cfg, depths)
    mem = compiled.memory_analysis()
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        flops = float(cost.get("flops")) if cost and cost.get("flops") is not None else None
    except Exception:  # noqa: BLE001 (a backend without cost analysis)
        flops = None
    return {"temp_bytes": int(mem.temp_size_in_bytes), "argument_bytes": int(mem.argument_size_in_bytes),
            "output_bytes": int(mem.output_size_in_bytes), "flops": flops, "n_params": n_params}
