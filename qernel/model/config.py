"""Model sizes and options: `ModelConfig`, a frozen, validated dataclass with presets.

    cfg = ModelConfig.from_spec("tiny")                      # a preset by name
    cfg = ModelConfig.from_spec({"preset": "paper", "n_determinants": 8})
    cfg = ModelConfig.from_spec({"d_model": 64, "n_layers": 3})   # starts from the defaults (= tiny)

Unknown keys and bad values raise ValueError naming the key. `to_dict()` gives back a plain
mapping (for output attributes and config hashes) that `from_spec` accepts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from qernel.numerics import DTYPES

ROUTER_INPUTS = ("condition", "electron")
#: The orbitals an anchored orbital prior can be built from (ModelConfig.prior_source).
PRIOR_SOURCES = ("bands", "hartree_fock")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """All sizes and switches of the QERNEL network (defaults = the `tiny` preset).

    Transformer: d_model (width), n_layers, n_heads query heads sharing n_kv_heads key/value
      heads (grouped-query attention), a mixture-of-experts MLP per layer with n_experts experts
      of hidden width d_ff, top_k routing.
    router_input: what the experts' router reads: "condition" (the depth etc.; every electron of
      a configuration goes to the same experts, so the experts specialise by depth and ψ stays
      smooth in the positions; the default) or "electron" (Switch-style token routing on h_n,
      whose gates make the local energy's variance large; qernel.model.moe).
    router_margin: logit margin over which an expert's routing weight switches on/off smoothly
      (C² in the positions, so the local energy stays unbiased); 0 gives hard top-k routing,
      whose wavefunction is discontinuous where the routing changes (not for production VMC).
    Features: sin/cos(G·r) for the supercell reciprocal vectors G of the first
      `supercell_shells` shells, the moiré reciprocal vectors of the first `moire_shells` shells
      and, with `k_point_features`, the moiré zone corners K when they are supercell reciprocal
      vectors (the ordering vectors of the Wigner crystals of DESIGN.md §1).
    film_hidden: width of the FiLM MLP (condition → per-layer γ, β).
    n_determinants: generalised spin-blocked Slater determinants.
    orbital_prior: add a learnable multiple of the exact non-interacting orbitals (at the
      reference depth) to each neural orbital (with additive_orbitals false, the orbitals are
      that prior, modulated); with the neural part set to zero one determinant is exactly the
      non-interacting ground state.
    orbital_init_scale: standard deviation of the neural orbital amplitudes at initialisation, in
      units of the non-interacting orbitals' size A^{-1/2} (A: supercell area); with
      additive_orbitals false, of the modulation b (relative to the prior orbital). 0 starts
      every determinant equal, and equal determinants stay equal under training.
    jastrow_hidden, jastrow_shells: width of the pair MLP u (and of the one-body MLP, with
      one_body_jastrow) and the supercell shells of its
      cos(G·r_ij) features; jastrow_cusp: add the exact 2D Coulomb cusp term
      (λ for antiparallel, λ/3 for parallel spins); jastrow_conditioned: the pair MLP u also
      reads the normalised condition (the depth), so the liquid and the crystal get their own
      pair correlations in one shared model (qernel.model.jastrow).
    complex_output: complex ψ with Bloch envelopes e^{ik·r} (default); False gives real ψ
      and is allowed only when every occupied k-point is time-reversal invariant.
    reference_depth: the depth V (E_M) whose non-interacting ground state fixes the occupied
      k-points of the envelopes and (with prior_anchors = 1) the orbital prior; None: midpoint
      of the condition range.
    prior_anchors: number of depths, evenly spaced over the condition range (both ends
      included), at which the exact non-interacting orbitals enter the orbital prior; between
      them the prior and its learnable scale are interpolated linearly in V, so at every anchor
      depth the prior is that depth's exact orbital (strongly localised orbitals at large V
      differ much from those at the reference depth). 1: the reference depth's orbitals at every
      V. Values > 1 need complex_output.
    prior_modulation: multiply the orbital prior by a learnable neural factor c + b(h_i)
      (qernel.model.orbitals), so the network reshapes the band orbitals in proportion to their
      size (strongly localised orbitals at large V); off (the default): a learnable constant c
      only. Opt-in: it cut the λ = 0 miss at V = 10 E_M ~7x (with clip_mad 15), but at V = 1,
      from a random start, it left Var E_L ~100x higher after the same training (its head and
      the additive one are nearly redundant where the band orbitals are smooth).
    learnable_prior: the prior's plane-wave coefficients are parameters too (a zero-initialised
      correction per anchor depth, qernel.model.orbitals), so the determinant can reach any
      orbital of the prior's basis at the anchor depths; off by default (parameters: anchors ×
      plane waves × electrons × 2). Needs orbital_prior. Each coefficient's correction is scaled
      by its largest size over the anchors (since 2026-12-01; before, by its size at its own
      anchor: a checkpoint of an earlier run with learnable_prior resumes under the new scale).
    additive_orbitals: the neural orbital amplitude a(h_i)·ε_j(r_i) is added to the prior term
      (the default); false: the orbitals are the prior's only, (c + b(h_i))·φ_j, with the
      modulation b when prior_modulation (FermiNet's construction, network × envelope), so every
      orbital is small where its prior orbital is (between the moiré minima and on the
      potential's maxima at large V), where the additive term, fed by low-harmonic features, is
      not (measured in qernel.model.orbitals: the crystal side's variance from rare high local
      energies drops, the liquid side loses 0.02–0.06 E_M per hole). Needs orbital_prior and
      prior_modulation (without the modulation the network would not enter ψ).
    one_body_jastrow: add the one-body Jastrow factor of the moiré potential, e^{Σ_i χ(r_i; V)}
      (qernel.model.one_body_jastrow: a small MLP of the potential's harmonics at each electron and
      of the depth, zero at the start), so ψ can decay into the potential's maxima as the ground
      state does at large V; off by default. Its width is jastrow_hidden.
    prior_source: the orbitals of the anchored prior (prior_anchors > 1): "bands" (the exact
      non-interacting orbitals, the default) or "hartree_fock" (the symmetry-broken Hartree–Fock
      orbitals at each anchor depth, qernel.hartree_fock_targets: at large V the generalised
      Wigner crystal's determinant, which the band determinant is far above; computed when the
      model is built, seconds to minutes per anchor, remembered on disk by
      `qernel.hartree_fock_targets.cached_hartree_fock_targets`). Measured on the demo system at
      V = 10 E_M alone (128 walkers, 200 SR steps, lr 0.02, orbital_init_scale 0,
      prior_modulation): −30.21 ± 0.02 E_M per hole, at the HF energy (−30.2127) with
      Var E_L ~2, against −29.45 for the demo of that time (bands prior).
    wrap_positions: map positions into the supercell first (better float32 periodicity).
    dtype: parameter dtype, "float32" or "float64" (float64 needs jax_enable_x64).
    Raises ValueError for an invalid field or combination of fields (naming them).
    """

    d_model: int = 32
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    n_experts: int = 4
    top_k: int = 2
    d_ff: int = 64
    router_input: str = "condition"
    router_margin: float = 0.2
    supercell_shells: int = 2
    moire_shells: int = 1
    k_point_features: bool = True
    film_hidden: int = 32
    n_determinants: int = 2
    orbital_prior: bool = True
    orbital_init_scale: float = 0.1
    jastrow_hidden: int = 16
    jastrow_shells: int = 2
    jastrow_cusp: bool = True
    jastrow_conditioned: bool = False
    complex_output: bool = True
    reference_depth: float | None = None
    prior_anchors: int = 1
    prior_modulation: bool = False
    learnable_prior: bool = False
    additive_orbitals: bool = True
    one_body_jastrow: bool = False
    prior_source: str = "bands"
    wrap_positions: bool = True
    dtype: str = "float32"

    def __post_init__(self):
        for name in ("d_model", "n_layers", "n_heads", "n_kv_heads", "n_experts", "top_k", "d_ff",
                     "film_hidden", "n_determinants", "jastrow_hidden", "prior_anchors"):
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("supercell_shells", "moire_shells", "jastrow_shells"):
            _check_int(name, getattr(self, name), minimum=0)
        for name in ("k_point_features", "orbital_prior", "prior_modulation", "learnable_prior", "additive_orbitals", "one_body_jastrow", "jastrow_cusp", "jastrow_conditioned", "complex_output", "wrap_positions"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("router_margin", "orbital_init_scale"):
            _check_float(name, getattr(self, name), minimum=0.0)
        if self.reference_depth is not None:
            _check_float("reference_depth", self.reference_depth, minimum=0.0)
        if self.prior_anchors > 1 and not self.complex_output:
            raise ValueError(f"prior_anchors = {self.prior_anchors} needs complex_output = true "
                             "(a real prior is built at the reference depth only); set prior_anchors: 1")
        if self.prior_source not in PRIOR_SOURCES:
            raise ValueError(f"prior_source must be one of {PRIOR_SOURCES}, got {self.prior_source!r}")
        if self.prior_source != "bands" and self.orbital_prior and self.prior_anchors < 2:
            raise ValueError(f"prior_source = {self.prior_source!r} needs prior_anchors >= 2 (the anchor depths "
                             f"where its orbitals are computed), got {self.prior_anchors}")
        if self.learnable_prior and not self.orbital_prior:
            raise ValueError("learnable_prior = true needs orbital_prior = true (it makes the prior's coefficients "
                             "learnable)")
        if not self.additive_orbitals and not (self.orbital_prior and self.prior_modulation):
            raise ValueError("additive_orbitals = false needs orbital_prior = true and prior_modulation = true "
                             "(without the additive term the orbitals are the prior's, and only the modulation "
                             "lets the network enter them)")
        if self.router_input not in ROUTER_INPUTS:
            raise ValueError(f"router_input must be one of {ROUTER_INPUTS}, got {self.router_input!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must be divisible by n_kv_heads ({self.n_kv_heads})")
        if self.top_k > self.n_experts:
            raise ValueError(f"top_k ({self.top_k}) must be <= n_experts ({self.n_experts})")
        if self.supercell_shells + self.moire_shells == 0:
            raise ValueError("supercell_shells and moire_shells are both 0: the model would see no positions")

    def with_band_prior(self) -> "ModelConfig":
        """This config with the band-orbital prior: a model with the same parameters (the prior's
        source sets constant tables only), built without solving Hartree–Fock (minutes). For
        parameter counts, summaries and memory estimates."""
        return dataclasses.replace(self, prior_source="bands")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @classmethod
    def preset(cls, name: str) -> "ModelConfig":
        """A named preset: "tiny" (CPU demo and tests) or "paper" (GPU runs).

        Raises ValueError for an unknown name.
        """
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**PRESETS[name])

    @classmethod
    def from_spec(cls, spec: "str | Mapping[str, Any] | ModelConfig") -> "ModelConfig":
        """A config from a preset name or a mapping of fields (optionally with "preset": name).

        Raises ValueError for a spec of another type, an unknown preset or an unknown key.
        """
        if isinstance(spec, ModelConfig):
            return spec
        if isinstance(spec, str):
            return cls.preset(spec)
        if not isinstance(spec, Mapping):
            raise ValueError(f"model spec must be a preset name or a mapping, got {type(spec).__name__}")
        spec = dict(spec)
        base = dict(PRESETS["tiny"])
        if "preset" in spec:
            name = spec.pop("preset")
            if not isinstance(name, str) or name not in PRESETS:
                raise ValueError(f"preset: unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
            base = dict(PRESETS[name])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ValueError(f"unknown model config key(s) {unknown}; known keys: {sorted(known | {'preset'})}")
        base.update(spec)
        return cls(**base)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_float(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
        raise ValueError(f"{name} must be a finite number >= {minimum}, got {value!r}")


#: Named presets. `tiny`: the CPU demo and the tests. `paper`: GPU runs (Psiformer-sized trunk,
#: 8 experts with top-2 routing, 16 determinants).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {f.name: f.default for f in dataclasses.fields(ModelConfig)},
    "paper": {
        **{f.name: f.default for f in dataclasses.fields(ModelConfig)},
        "d_model": 256,
        "n_layers": 4,
        "n_heads": 8,
        "n_kv_heads": 2,
        "n_experts": 8,
        "top_k": 2,
        "d_ff": 512,
        "supercell_shells": 4,
        "moire_shells": 2,
        "film_hidden": 64,
        "n_determinants": 16,
        "jastrow_hidden": 32,
        "jastrow_shells": 3,
    },
}
