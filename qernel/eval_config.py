"""The options of the per-depth evaluation: `EvalConfig` (the sweep's `evaluate:` mapping).

    cfg = EvalConfig.from_dict(sweep["evaluate"])    # unknown keys and bad values: ValueError

This module imports no JAX: config resolution (qernel.config) checks every sweep's options
before any job starts. The evaluation itself is qernel.evaluate, which re-exports `EvalConfig`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from qernel.numerics import DTYPES, LAPLACIAN_METHODS
from qernel.observables.density import DEFAULT_CELL_BINS
from qernel.observables.structure_factor import DEFAULT_K_SHELLS

#: Keys of `finetune:` that evaluate sets itself.
_FINETUNE_RESERVED = {"steps": "finetune_steps", "pretrain_steps": None}


def _bins(value, name: str) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an integer or a pair [n_x, n_y], got {value!r}")
        out = tuple(value)
    else:
        out = (value, value)
    for v in out:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must hold integers >= 1, got {value!r}")
    return int(out[0]), int(out[1])


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Options of the per-depth evaluation (the sweep's `evaluate:` mapping; config/README.md).

    finetune_steps: optimisation steps at this depth before measuring (0 = none).
    finetune: extra `qernel.train.TrainConfig` keys for fine-tuning (e.g. {learning_rate: 0.01}),
        merged over the pretraining's settings read from the model file (see
        `qernel.train.finetune_config`, which checks the key names: `check_finetune_options`).
    samples: local-energy samples to measure = batch_size × measurement steps (rounded up to
        whole steps). batch_size: walkers (a multiple of the device count).
    mcmc_steps: Metropolis–Hastings moves of every walker between measurements.
    hop_moves: site hops per block (after the mcmc_steps moves and during burn-in; `qernel.mcmc`;
        0 = none).
    burn_in: moves before the first measurement (the proposal width adapts toward
        target_acceptance during burn-in only; init_width is its start, a_M).
    density_bins: the folded moiré-cell density grid (n_x, n_y) (an integer n: (n, n));
    supercell_density_bins: the supercell grid (default: density_bins × |L_i| in moiré periods).
    structure_factor_shells: S(k) at supercell reciprocal vectors with |k| <= shells · 4π/√3.
    pair_correlation_bins: g(r) bins up to half the shortest supercell vector (0 = no g(r)).
    laplacian: "folx" or "jvp". dtype: "float32", "float64", or None (the pretraining's dtype).
    max_vmap_batch_size: local energies for at most this many walkers at once (0 = all; smaller
        bounds memory, qernel.parallel.map_walkers); fine-tuning uses it too.
    checkpoint_every: measurement steps between sampling checkpoints (0: about every 10 %).
    max_series_elements: the most numbers one per-step series may hold in evaluation.nc before
        its steps are averaged in blocks (see the module docstring).
    Raises ValueError for an invalid option (naming it).
    """

    finetune_steps: int = 0
    finetune: dict = dataclasses.field(default_factory=dict)
    samples: int = 100_000
    batch_size: int = 512
    mcmc_steps: int = 10
    hop_moves: int = 2
    burn_in: int = 500
    target_acceptance: float = 0.5
    init_width: float = 0.1
    density_bins: tuple = DEFAULT_CELL_BINS
    supercell_density_bins: tuple | None = None
    structure_factor_shells: float = DEFAULT_K_SHELLS
    pair_correlation_bins: int = 50
    laplacian: str = "folx"
    max_vmap_batch_size: int = 0
    dtype: str | None = None
    checkpoint_every: int = 0
    max_series_elements: int = 2**24

    def __post_init__(self):
        ints = {"finetune_steps": 0, "samples": 1, "batch_size": 1, "mcmc_steps": 1, "hop_moves": 0, "burn_in": 0,
                "pair_correlation_bins": 0, "checkpoint_every": 0, "max_series_elements": 1,
                "max_vmap_batch_size": 0}
        for name, minimum in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
        for name in ("target_acceptance", "init_width", "structure_factor_shells"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        if not self.target_acceptance < 1.0:
            raise ValueError(f"target_acceptance must be in (0, 1), got {self.target_acceptance!r}")
        object.__setattr__(self, "density_bins", _bins(self.density_bins, "density_bins"))
        if self.supercell_density_bins is not None:
            object.__setattr__(self, "supercell_density_bins",
                               _bins(self.supercell_density_bins, "supercell_density_bins"))
        if self.laplacian not in LAPLACIAN_METHODS:
            raise ValueError(f"laplacian must be one of {LAPLACIAN_METHODS}, got {self.laplacian!r}")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES} (or null: the pretraining's), got {self.dtype!r}")
        if not isinstance(self.finetune, dict):
            raise ValueError(f"finetune must be a mapping of training options, got {self.finetune!r}")
        for key, instead in _FINETUNE_RESERVED.items():
            if key in self.finetune:
                hint = f"use evaluate.{instead}" if instead else "fine-tuning starts from the pretrained model"
                raise ValueError(f"finetune.{key} is set by the evaluation ({hint})")
        object.__setattr__(self, "finetune", dict(self.finetune))

    @classmethod
    def from_dict(cls, d: dict | None) -> "EvalConfig":
        """From a mapping (the sweep's `evaluate:`); an unknown key raises ValueError naming it."""
        d = dict(d or {})
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(f"unknown evaluate key(s) {unknown}; known keys: {sorted(known)}")
        for name in ("target_acceptance", "init_width", "structure_factor_shells"):
            if isinstance(d.get(name), int) and not isinstance(d.get(name), bool):
                d[name] = float(d[name])
        if d.get("finetune") is None and "finetune" in d:
            d["finetune"] = {}
        return cls(**d)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["density_bins"] = list(self.density_bins)
        if self.supercell_density_bins is not None:
            out["supercell_density_bins"] = list(self.supercell_density_bins)
        return out

    @property
    def n_steps(self) -> int:
        """Measurement steps: ceil(samples / batch_size)."""
        return -(-self.samples // self.batch_size)
