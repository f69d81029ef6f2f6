"""Energy components per electron: total, kinetic, moiré potential, interaction (E_M).

Per step (`EnergyComponents.estimator`): the walker means of the local-energy components
of `qernel.hamiltonian.make_local_energy`, per electron, [total, kinetic, potential,
interaction] (the total is the sum of the other three, sample by sample), the variance over
the walkers of the total local energy E_L of one configuration (E_M², ddof 0), and the number
of walkers whose E_L is not finite (the sampler redoes such a step).

Over the chain (`EnergyAccumulator`, `EnergyComponents.reduce`): means with reblocked
standard errors (`qernel.stats`), the variance of E_L over all T·W samples (ddof 1), and
n_eff = Var(E_L) / (N² stderr²).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from qernel.conditions import DEPTH_ONLY
from qernel.observables.base import ObservableBase, SeriesSpec, step_series
from qernel.stats import Reblocker, reblock

if TYPE_CHECKING:
    import xarray as xr

#: The energy series of evaluation.nc, in the order of the estimator's `energy` vector.
COMPONENTS = ("energy", "kinetic_energy", "potential_energy", "interaction_energy")


@dataclasses.dataclass(frozen=True)
class EnergyResult:
    """Energies per electron in E_M (means and reblocked standard errors).

    variance: the variance of the total local energy E_L of one sample (E_M², not per
    electron); n_eff: effective number of independent samples of E_L, variance/(N² stderr²)
    (= T·W for uncorrelated samples); n_samples: T·W; block_size: reblocking block (steps).
    """

    n_electrons: int
    energy: float
    energy_stderr: float
    kinetic_energy: float
    kinetic_energy_stderr: float
    potential_energy: float
    potential_energy_stderr: float
    interaction_energy: float
    interaction_energy_stderr: float
    variance: float
    n_eff: float
    n_samples: int
    block_size: int
    converged: bool

    def to_dataset(self) -> xr.Dataset:
        """Scalars energy, kinetic_energy, ... with `_stderr`, variance, n_eff, n_samples."""
        import xarray as xr

        data = {}
        for name in COMPONENTS:
            data[name] = ((), getattr(self, name))
            data[f"{name}_stderr"] = ((), getattr(self, f"{name}_stderr"))
        data["variance"] = ((), self.variance)
        data["n_eff"] = ((), self.n_eff)
        data["n_samples"] = ((), self.n_samples)
        ds = xr.Dataset(data)
        ds["energy_stderr"].attrs["reblocking_block_size"] = int(self.block_size)
        ds["energy_stderr"].attrs["reblocking_converged"] = int(self.converged)
        return ds


class EnergyAccumulator:
    """Accumulates the energy components of a chain, per electron, with reblocked errors.

    update(components): `components` is a `qernel.hamiltonian.EnergyComponents` (or any
    (kinetic, potential, interaction) triple) of per-configuration totals in E_M, each of
    shape (W,) for one step or (T, W) for T steps. The total is their sum, sample by sample.
    update_step_means(...): the same from per-step walker means and variances (evaluation.nc).
    """

    def __init__(self, n_electrons: int):
        self.n_electrons = int(n_electrons)
        self._reblocker = Reblocker()
        self._n = 0
        self._shift = None
        self._s1 = 0.0
        self._s2 = 0.0

    def update(self, components) -> "EnergyAccumulator":
        """Add T steps of per-sample components; raises ValueError for shapes other than (W,), (T, W)."""
        kin, pot, inter = (np.asarray(c, dtype=float) for c in components)
        kin, pot, inter = np.broadcast_arrays(kin, pot, inter)
        if kin.ndim == 1:
            kin, pot, inter = kin[None], pot[None], inter[None]
        if kin.ndim != 2:
            raise ValueError(f"energy components must have shape (W,) or (T, W), got {kin.shape}")
        total = kin + pot + inter  # (T, W): components sum to the total for every sample
        per_step = np.stack([total, kin, pot, inter], axis=-1).mean(axis=1) / self.n_electrons  # (T, 4)
        self._reblocker.update(per_step)
        if self._shift is None:
            self._shift = float(total.ravel()[0])
        d = total - self._shift
        self._n += total.size
        self._s1 += float(d.sum())
        self._s2 += float((d * d).sum())
        return self

    def update_step_means(self, per_step, variance, n_walkers: int) -> "EnergyAccumulator":
        """Add T steps given as walker means and walker variances (what evaluation.nc stores).

        per_step: (T, 4) walker means per electron [total, kinetic, potential, interaction];
        variance: (T,) variance over the W walkers of the total E_L (E_M², ddof 0).
        The moments of E_L over all T·W samples follow from the walker means m_t and variances
        v_t of each step: Σ (E − s)² = Σ_t W [v_t + (m_t − s)²].
        """
        per_step = np.asarray(per_step, dtype=float)
        variance = np.asarray(variance, dtype=float)
        self._reblocker.update(per_step)
        mean_t = per_step[:, 0] * self.n_electrons
        if self._shift is None:
            self._shift = float(mean_t[0])
        d = mean_t - self._shift
        self._n += int(len(mean_t) * n_walkers)
        self._s1 += float(n_walkers * d.sum())
        self._s2 += float(n_walkers * (variance + d * d).sum())
        return self

    def result(self, criterion: str = "wolff") -> EnergyResult:
        """Means, reblocked errors (`qernel.stats.Reblocker.result`), variance and n_eff."""
        r = self._reblocker.result(criterion=criterion)
        n = self._n
        m = self._s1 / n
        variance = (self._s2 / n - m * m) * n / (n - 1) if n > 1 else float("nan")
        stderr_total = float(r.stderr[0])
        if not np.isfinite(stderr_total):  # a single step: no error estimate
            n_eff = float("nan")
        else:
            n_eff = variance / (self.n_electrons**2 * stderr_total**2) if stderr_total > 0 else float(n)
        return EnergyResult(
            self.n_electrons,
            float(r.mean[0]), stderr_total,
            float(r.mean[1]), float(r.stderr[1]),
            float(r.mean[2]), float(r.stderr[2]),
            float(r.mean[3]), float(r.stderr[3]),
            float(variance), float(n_eff), int(n), int(r.block_size[0]), bool(r.converged[0]),
        )


@dataclasses.dataclass(frozen=True)
class EnergyComponents(ObservableBase):
    """The energy observable (module docstring).

    n_electrons: N; system: the `qernel.system.System` whose Hamiltonian gives the local
    energy (None when read back from evaluation.nc: no estimator then); laplacian: "folx" or
    "jvp"; max_vmap_batch_size: local energies of at most this many walkers at once (0 = all);
    condition_names: what each entry of the walkers' cond is (`qernel.conditions`): the
    Hamiltonian reads V and, where named, λ from it (`qernel.hamiltonian.make_local_energy`).
    """

    n_electrons: int
    system: object | None = None
    laplacian: str = "folx"
    max_vmap_batch_size: int = 0
    condition_names: tuple[str, ...] = DEPTH_ONLY
    name: ClassVar[str] = "energy"

    @classmethod
    def from_config(cls, system, cfg) -> "EnergyComponents":
        return cls(system.n_electrons, system, cfg.laplacian, int(cfg.max_vmap_batch_size))

    @classmethod
    def from_evaluation(cls, ev: xr.Dataset) -> "EnergyComponents | None":
        if any(n not in ev for n in COMPONENTS) or "n_electrons" not in ev.attrs:
            return None
        return cls(int(ev.attrs["n_electrons"]))

    def estimator(self, log_psi):
        """(params, x (W, N, 2), cond (W, n_cond)) -> {energy (4,) per electron [total, kinetic,
        potential, interaction], local_energy_variance (), n_nonfinite ()}; raises ValueError
        without a system or for invalid condition_names."""
        import jax.numpy as jnp

        from qernel import parallel
        from qernel.hamiltonian import make_local_energy

        if self.system is None:
            raise ValueError("the energy estimator needs the system (build it with from_config)")
        n_el = self.n_electrons
        local_energy = parallel.map_walkers(make_local_energy(self.system, log_psi, self.laplacian,
                                                              condition_names=self.condition_names),
                                            self.max_vmap_batch_size)

        def estimate(params, x, cond):
            kin, pot, inter = local_energy(params, x, cond)
            total = kin + pot + inter
            energy = jnp.stack([jnp.mean(total), jnp.mean(kin), jnp.mean(pot), jnp.mean(inter)]) / n_el
            variance = jnp.mean((total - jnp.mean(total)) ** 2)
            return {"energy": energy, "local_energy_variance": variance,
                    "n_nonfinite": jnp.sum(~jnp.isfinite(total))}

        return estimate

    def series(self) -> dict[str, SeriesSpec]:
        per_step = ", per step"
        return {
            "energy": SeriesSpec((), (), "E_M", "walker mean of the total local energy per electron" + per_step,
                                 True),
            "kinetic_energy": SeriesSpec((), (), "E_M", "walker mean of the kinetic local energy per electron"
                                         + per_step, True),
            "potential_energy": SeriesSpec((), (), "E_M", "walker mean of the moire potential energy per electron"
                                           + per_step, True),
            "interaction_energy": SeriesSpec((), (), "E_M", "walker mean of the interaction energy per electron "
                                             "(Ewald, incl. Madelung)" + per_step, True),
            "local_energy_variance": SeriesSpec((), (), "E_M^2", "variance over walkers of the total local energy "
                                                "of one configuration" + per_step, True),
        }

    def split(self, stats: dict) -> dict[str, np.ndarray]:
        out = {name: stats["energy"][:, i] for i, name in enumerate(COMPONENTS)}
        out["local_energy_variance"] = stats["local_energy_variance"]
        return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}

    def result(self, ev: xr.Dataset, criterion: str = "wolff") -> EnergyResult:
        """`EnergyAccumulator.result` of the series in evaluation.nc `ev` (attr n_walkers)."""
        per_step = np.stack([step_series(ev, n) for n in COMPONENTS], axis=-1)  # (T, 4) per electron
        acc = EnergyAccumulator(self.n_electrons)
        acc.update_step_means(per_step, step_series(ev, "local_energy_variance"), int(ev.attrs["n_walkers"]))
        return acc.result(criterion=criterion)

    def reduce(self, ev: xr.Dataset, criterion: str = "wolff") -> xr.Dataset:
        """observables.nc part: `EnergyResult.to_dataset()` plus energy_tau and the stderr's
        naive_stderr / reblocking_criterion attrs; global attr n_electrons."""
        ds = self.result(ev, criterion).to_dataset()
        e_res = reblock(step_series(ev, "energy"), criterion=criterion, warn=False)
        ds["energy_tau"] = ((), float(e_res.tau), {"units": "1", "long_name": "integrated autocorrelation time of "
                                                  "the per-step mean energy, in measurement steps (from reblocking)"})
        ds["energy_stderr"].attrs["naive_stderr"] = float(e_res.naive_stderr)
        ds["energy_stderr"].attrs["reblocking_criterion"] = criterion
        ds.attrs["n_electrons"] = int(self.n_electrons)
        return ds
