"""The QERNEL wavefunction: features → FiLM-conditioned transformer → orbitals × Jastrow.

    wf = make_wavefunction(system, ModelConfig.from_spec("tiny"), cond_range=((0.0, 10.0),))
    # conditioned on V and λ (qernel.conditions): cond = (V, λ), one range per component
    wf2 = make_wavefunction(system, "tiny", ((0.0, 10.0), (5.0, 15.0)), condition_names=("depth", "coupling"))
    params = wf.init(jax.random.PRNGKey(0))
    log_psi = wf.log_psi(params, x, cond)          # x (N, 2) in a_M, cond (n_cond,), cond[0] = V in E_M
    phase, logabs, aux = wf.apply(params, x, cond) # aux: {"moe_loss": (), "expert_counts": (n_layers, n_experts)}

ψ(x; c) = e^{J(x) + Σ_i χ(r_i; c)} Σ_d det Φ^d_up(x; c) det Φ^d_down(x; c) (χ: the one-body Jastrow, with
`one_body_jastrow`; qernel.model.one_body_jastrow), evaluated stably: slogdet per spin
block and a log-sum-exp over determinants. log_psi returns log|ψ| + iθ (complex) when the
orbitals are complex (Bloch envelopes), log|ψ| when complex_output is False (real ψ).
Everything is a pure function of (params, x, cond) for ONE configuration: vectorise with vmap.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from qernel.bands import noninteracting_ground_state
from qernel.conditions import DEPTH_ONLY, check_names
from qernel.linalg import slogdet
from qernel.model.config import ModelConfig
from qernel.model.features import feature_vectors, one_electron_features
from qernel.model.film import FiLM, normalise_condition
from qernel.model.jastrow import Jastrow
from qernel.model.one_body_jastrow import OneBodyJastrow
from qernel.model.orbitals import OrbitalReference, Orbitals, prior_orbital_values, reference_orbitals
from qernel.model.transformer import Transformer
from qernel.system import System


class QernelNetwork(nn.Module):
    """(x (N, 2), cond (n_cond,)) → (orbital matrices [up, down], Jastrow J, transformer aux).

    condition_names: what each component of cond is (qernel.conditions; cond[0] = V).
    """

    system: System
    cfg: ModelConfig
    cond_range: tuple[tuple[float, float], ...]
    reference: OrbitalReference
    gvectors: np.ndarray
    condition_names: tuple[str, ...] = DEPTH_ONLY

    @nn.compact
    def __call__(self, x, cond):
        cfg, system = self.cfg, self.system
        if cfg.wrap_positions:
            x = system.supercell.wrap(x)
        feats = one_electron_features(x, self.gvectors)
        spins = jnp.asarray(system.spins, x.dtype)[:, None]
        h = nn.Dense(cfg.d_model, name="embed")(jnp.concatenate([feats, spins], axis=-1))
        c_norm = normalise_condition(cond.astype(x.dtype), self.cond_range)
        gamma, beta = FiLM(cfg.n_layers, cfg.d_model, cfg.film_hidden, name="film")(c_norm)
        h, aux = Transformer(cfg, name="transformer")(h, gamma, beta, c_norm)
        mats = Orbitals(self.reference, cfg.n_determinants, cfg.complex_output, cfg.orbital_prior,
                        cfg.orbital_init_scale, cfg.prior_modulation, cfg.learnable_prior, cfg.additive_orbitals,
                        name="orbitals")(h, x, cond)
        jastrow = Jastrow(system.supercell, system.n_up, system.n_down, system.coupling, cfg.jastrow_hidden,
                          cfg.jastrow_shells, cfg.jastrow_cusp, self.condition_names, cfg.jastrow_conditioned,
                          name="jastrow")(x, cond, c_norm)
        if cfg.one_body_jastrow:
            jastrow = jastrow + OneBodyJastrow(system.phase, cfg.jastrow_hidden, name="one_body_jastrow")(x, c_norm)
        return mats, jastrow, aux


def log_sum_det(mats, complex_output: bool):
    """(phase, log|Σ_d Π_s det M_s^d|) for spin blocks M_s (n_det, n_s, n_s), stably."""
    n_det = mats[0].shape[-3]
    logabs = jnp.zeros(n_det, jnp.real(mats[0]).dtype)
    sign = jnp.ones(n_det, mats[0].dtype)
    for m in mats:
        if m.shape[-1] == 0:
            continue
        s, la = slogdet(m)  # no LAPACK custom calls on CPU (see qernel.linalg)
        sign, logabs = sign * s, logabs + la
    if n_det == 1:
        total, s = logabs[0], sign[0]
    else:
        shift = jax.lax.stop_gradient(jnp.max(logabs))
        s = jnp.sum(sign * jnp.exp(logabs - shift))
        if complex_output:  # log|s| written out: folx's complex-abs rule casts complex to real (deprecated)
            total = shift + 0.5 * jnp.log(jnp.real(s) ** 2 + jnp.imag(s) ** 2)
        else:
            total = shift + jnp.log(jnp.abs(s))
    if complex_output:
        return jnp.arctan2(jnp.imag(s), jnp.real(s)), total
    return jnp.where(s < 0, jnp.pi, 0.0).astype(total.dtype), total


class Wavefunction:
    """A conditioned neural wavefunction for one `System` (see the module docstring).

    Attributes: system, config (ModelConfig), cond_range ((lo, hi) per condition component),
    condition_names (what each component is, qernel.conditions; ("depth",) by default),
    reference (the non-interacting ground state at the reference depth: envelopes and orbital
    prior), gvectors (feature wave vectors), module (the Flax network), is_complex.
    """

    def __init__(self, system: System, config: ModelConfig, cond_range, reference: OrbitalReference,
                 gvectors: np.ndarray, condition_names: tuple[str, ...] = DEPTH_ONLY):
        self.system, self.config, self.cond_range = system, config, cond_range
        self.condition_names = tuple(condition_names)
        self.reference, self.gvectors = reference, gvectors
        self.module = QernelNetwork(system, config, cond_range, reference, gvectors, self.condition_names)
        self._compiled_init: dict = {}

    @property
    def is_complex(self) -> bool:
        return self.config.complex_output

    @property
    def n_cond(self) -> int:
        return len(self.cond_range)

    def init(self, key) -> dict:
        """Fresh parameters (flax variables {"params": ...}) in the config's dtype."""
        dtype = jnp.dtype(self.config.dtype)
        k_x, k_params = jax.random.split(key)
        frac = jax.random.uniform(k_x, (self.system.n_electrons, 2), dtype)
        x = frac @ jnp.asarray(self.system.supercell.lattice, dtype)
        cond = jnp.asarray([0.5 * (lo + hi) for lo, hi in self.cond_range], dtype)
        init = jax.jit(lambda key, x, cond: jax.tree.map(lambda a: a.astype(dtype), self.module.init(key, x, cond)))
        if isinstance(k_params, jax.core.Tracer):  # called inside jit / eval_shape
            return init(k_params, x, cond)
        signature = (dtype, jax.default_backend())
        if self._compiled_init.get("signature") != signature:
            lowered = init.lower(k_params, x, cond)
            try:  # run rarely: skip XLA's optimisation passes (several times faster to compile)
                compiled = lowered.compile(compiler_options={"xla_backend_optimization_level": 0})
            except Exception:  # a backend that rejects the option
                compiled = lowered.compile()
            self._compiled_init = {"signature": signature, "fn": compiled}
        return self._compiled_init["fn"](k_params, x, cond)

    @property
    def start_orbitals(self):
        """`prior_orbital_values` when the model has an orbital prior (the determinant its walkers
        start from, `qernel.determinant_sampling`), else None (uniform start)."""
        return self.prior_orbital_values if self.config.orbital_prior else None

    def prior_orbital_values(self, points, depth: float):
        """The orbital prior's orbitals at points (M, 2) (a_M) and depth V (E_M): (up (M, N_up),
        down (M, N_down)) complex, or None when the model has no orbital prior
        (`qernel.model.orbitals.prior_orbital_values`). The determinant the walkers start from."""
        if not self.config.orbital_prior:
            return None
        return prior_orbital_values(self.reference, points, depth)

    def orbitals(self, params, x, cond) -> list:
        """[Φ_up (n_det, N_up, N_up), Φ_down (n_det, N_dn, N_dn)]: ψ = e^J Σ_d Π_s det Φ_s^d."""
        mats, _, _ = self.module.apply(params, x, cond)
        return mats

    def apply(self, params, x, cond):
        """(phase, log|ψ|, aux) for one configuration x (N, 2), cond (n_cond,)."""
        mats, jastrow, aux = self.module.apply(params, x, cond)
        phase, logabs = log_sum_det(mats, self.is_complex)
        return phase, logabs + jastrow, aux

    def log_psi(self, params, x, cond):
        """log ψ: log|ψ| + iθ (complex output) or log|ψ| (real output). A `qernel.hamiltonian.LogPsi`."""
        phase, logabs, _ = self.apply(params, x, cond)
        if self.is_complex:
            return logabs + 1j * phase
        return logabs

    @staticmethod
    def n_params(params) -> int:
        return int(sum(np.prod(a.shape) for a in jax.tree.leaves(params)))

    def summary(self, params) -> str:
        """A short human-readable description with parameter counts per component."""
        sys, cfg = self.system, self.config
        flat = traverse_util.flatten_dict(params.get("params", params))
        groups: dict[str, int] = {}
        for path, a in flat.items():
            top = path[0] if path[0] != "transformer" or len(path) < 3 else f"transformer/{path[2]}"
            groups[top] = groups.get(top, 0) + int(np.prod(a.shape))
        k_up = sorted({tuple(np.round(k, 4)) for k in self.reference.up.kpoints})
        lines = [
            f"QERNEL wavefunction: N_up={sys.n_up}, N_down={sys.n_down}, supercell {sys.supercell.matrix}, "
            f"λ={sys.coupling:g}, {'complex' if self.is_complex else 'real'} output",
            f"  trunk: d_model={cfg.d_model}, {cfg.n_layers} layers, {cfg.n_heads} heads / {cfg.n_kv_heads} kv heads, "
            f"{cfg.n_experts} experts (top-{cfg.top_k}, d_ff={cfg.d_ff}, routed on the {cfg.router_input}, "
            f"margin {cfg.router_margin:g})",
            f"  features: {len(self.gvectors)} wave vectors (±G pairs); condition {self.condition_names} "
            f"range {self.cond_range}",
            f"  orbitals: {cfg.n_determinants} determinants, envelopes at {len(k_up)} distinct k (up), "
            f"prior {'off' if not cfg.orbital_prior else (f'at V={self.reference.depth:g}' if self.reference.anchors is None else f'{cfg.prior_source} at V={[round(float(v), 4) for v in self.reference.anchors.depths]}')} "
            f"({'closed' if self.reference.ground_state.closed_shell else 'open'} shell)",
            "  parameters:",
        ]
        lines += [f"    {name:<28s}{count:>12,d}" for name, count in sorted(groups.items())]
        lines.append(f"    {'total':<28s}{self.n_params(params):>12,d}")
        return "\n".join(lines)


def make_wavefunction(system: System, cfg: "ModelConfig | str | dict",
                      cond_range: Sequence[tuple[float, float]] = ((0.0, 1.0),),
                      condition_names: Sequence[str] | None = None) -> Wavefunction:
    """Build the wavefunction of `system` for conditions in `cond_range` ((lo, hi) per cond entry; [0] is V in E_M).

    condition_names: what each cond entry is (qernel.conditions: ("depth",), or ("depth",
    "coupling") with λ in the second entry, which the Jastrow's cusp then reads instead of
    system.coupling); None: ("depth",). One cond_range entry per name (the FiLM normalisation).
    Raises ValueError for an empty cond_range, an entry that is not finite with lo <= hi, invalid
    condition names or a cond_range of another length, or a bad `cfg` (see ModelConfig.from_spec).
    """
    cfg = ModelConfig.from_spec(cfg)
    cond_range = tuple((float(lo), float(hi)) for lo, hi in cond_range)
    if not cond_range:
        raise ValueError("cond_range needs at least one (lo, hi) pair (the depth V)")
    for lo, hi in cond_range:
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise ValueError(f"cond_range entries must be finite with lo <= hi, got {(lo, hi)}")
    names = check_names(DEPTH_ONLY if condition_names is None else condition_names)
    if len(names) != len(cond_range):
        raise ValueError(f"cond_range has {len(cond_range)} (lo, hi) pairs but the condition names {names} need "
                         f"{len(names)}")
    depth = cfg.reference_depth if cfg.reference_depth is not None else 0.5 * sum(cond_range[0])
    gs = noninteracting_ground_state(system, depth=max(depth, 0.0))
    anchors = None
    lo, hi = cond_range[0]
    if cfg.orbital_prior and cfg.prior_anchors > 1 and hi > lo:
        anchors = np.linspace(max(lo, 0.0), hi, cfg.prior_anchors)
    elif cfg.orbital_prior and cfg.prior_source != "bands":
        raise ValueError(f"model.prior_source: {cfg.prior_source} needs a depth range to anchor at (at least two "
                         f"depths), got the single depth V = {lo:g}; use prior_source: bands")
    reference = reference_orbitals(system, gs, depth, cfg.complex_output, anchors, cfg.prior_source)
    gvectors = feature_vectors(system.supercell, cfg.supercell_shells, cfg.moire_shells, cfg.k_point_features)
    return Wavefunction(system, cfg, cond_range, reference, gvectors, names)
