"""Local energy of the moiré continuum Hamiltonian (DESIGN.md §1, §3).

    H = Σ_i [-½∇_i² + Δ_V(r_i)] + λ Σ_{i<j} v_E(r_ij) + (N/2) λ ξ_M      (energies in E_M)

A wavefunction enters as `log_psi(params, x, cond)`: x (N, 2) positions in a_M, cond (n_cond,)
the condition vector whose first entry is the depth V in E_M; it returns log ψ as a real
scalar (real ψ: log|ψ|) or a complex scalar (log|ψ| + iθ). The Hamiltonian reads its parameters
from the condition vector where it carries them (`condition_names`, `qernel.conditions`): V
always (cond[0]), λ when "coupling" is among the names, else the system's `coupling`. For complex ψ the kinetic energy is
−½ Re[∇² log ψ + (∇ log ψ)·(∇ log ψ)] = −½ [∇² log|ψ| + |∇ log|ψ||² − |∇θ|²].

The Laplacian uses folx's forward Laplacian (`laplacian="folx"`) or, as the reference,
the loop of jvps over the gradient (`laplacian="jvp"`). From N = FOLX_SPARSE_FROM electrons on,
folx propagates the sparsity of the per-electron layers (`sparsity_threshold` =
FOLX_SPARSITY_THRESHOLD): local energy per walker, sparse/dense, tiny model, 2-core CPU:
0.95 at N = 12, 0.79 at N = 24, 0.80 at N = 48, for 1.05–1.3× the compile time, which the
short jobs of small N do not win back (benchmarks/README.md).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Protocol

import folx
import jax
import jax.numpy as jnp

from qernel import numerics
from qernel.conditions import COUPLING, DEPTH, DEPTH_ONLY, check_names, parameter
from qernel.ewald import Ewald
from qernel.moire import moire_potential
from qernel.system import System

LAPLACIAN_METHODS = numerics.LAPLACIAN_METHODS
#: folx's sparsity threshold (fraction of the input dimensions) where sparsity is used.
FOLX_SPARSITY_THRESHOLD = 0.6
#: Sparsity propagation from this many electrons on (below: dense, faster to compile).
FOLX_SPARSE_FROM = 12


class LogPsi(Protocol):
    def __call__(self, params, x: jax.Array, cond: jax.Array) -> jax.Array: ...


class EnergyComponents(NamedTuple):
    """Per-configuration energies in E_M (totals over electrons, not per electron)."""

    kinetic: jax.Array
    potential: jax.Array  # moiré potential Σ_i Δ_V(r_i)
    interaction: jax.Array  # λ [Σ_{i<j} v_E + (N/2) ξ_M]

    @property
    def total(self) -> jax.Array:
        return self.kinetic + self.potential + self.interaction


def _real_outputs(f: Callable[[jax.Array], jax.Array], shape) -> Callable[[jax.Array], jax.Array]:
    """Flat positions (n,) → (log|ψ|, θ) as a real (2,) vector (θ = 0 for real log ψ)."""

    def g(x_flat):
        out = f(x_flat.reshape(shape))
        if jnp.iscomplexobj(out):
            return jnp.stack([out.real, out.imag])
        return jnp.stack([out, jnp.zeros_like(out)])

    return g


def folx_sparsity(n_electrons: int) -> float:
    """The folx sparsity_threshold used for N electrons (0: dense)."""
    return FOLX_SPARSITY_THRESHOLD if n_electrons >= FOLX_SPARSE_FROM else 0


def _laplacian_and_gradient(g, x_flat, method: str, sparsity_threshold: float = 0):
    """Laplacian (2,) and gradient (n, 2) of the real 2-vector function g at x_flat (n,)."""
    if method == "folx":
        result = folx.forward_laplacian(g, sparsity_threshold=sparsity_threshold)(x_flat)
        return result.laplacian, result.jacobian.dense_array
    if method == "jvp":
        grad_fn = jax.jacrev(g)  # (2, n)
        n = x_flat.shape[0]
        eye = jnp.eye(n, dtype=x_flat.dtype)

        def body(i, acc):
            _, tangent = jax.jvp(grad_fn, (x_flat,), (eye[i],))
            return acc + tangent[:, i]

        lap = jax.lax.fori_loop(0, n, body, jnp.zeros(2, x_flat.dtype))
        return lap, grad_fn(x_flat).T
    raise ValueError(f"unknown laplacian method {method!r}; choose one of {LAPLACIAN_METHODS}")


def complex_kinetic_energy(f: Callable[[jax.Array], jax.Array], x: jax.Array, method: str = "folx",
                           sparsity_threshold: float | None = None):
    """(Re, Im) of −½ ∇²ψ/ψ = −½ [∇² log ψ + (∇ log ψ)²] in E_M for log ψ = f(x), x (N, 2) in a_M.

    Im is zero for real log ψ; for complex ψ the training gradient needs it (see qernel.loss).
    sparsity_threshold: folx's (None: folx_sparsity(N)); ignored by "jvp". Raises ValueError
    for an unknown method.
    """
    x_flat = x.reshape(-1)
    sparsity = folx_sparsity(x.shape[0]) if sparsity_threshold is None else sparsity_threshold
    lap, grad = _laplacian_and_gradient(_real_outputs(f, x.shape), x_flat, method, sparsity)
    real = -0.5 * (lap[0] + jnp.sum(grad[:, 0] ** 2) - jnp.sum(grad[:, 1] ** 2))
    imag = -0.5 * (lap[1] + 2.0 * jnp.sum(grad[:, 0] * grad[:, 1]))
    return real, imag


def kinetic_energy(f: Callable[[jax.Array], jax.Array], x: jax.Array, method: str = "folx") -> jax.Array:
    """−½ Re[∇²ψ/ψ] in E_M for log ψ = f(x), x (N, 2) in a_M; f real or complex scalar."""
    return complex_kinetic_energy(f, x, method)[0]


def make_local_energy(system: System, log_psi: LogPsi, laplacian: str = "folx", ewald: Ewald | None = None,
                      sparsity_threshold: float | None = None, condition_names=DEPTH_ONLY):
    """Build local_energy(params, x, cond) -> EnergyComponents for one configuration x (N, 2) in a_M.

    Vectorise over walkers with jax.vmap (or qernel.parallel.map_walkers). cond (n_cond,): the
    condition vector named by `condition_names` (`qernel.conditions`): `cond[0]` is the depth V
    (E_M); λ is cond[i] where condition_names[i] == "coupling", else `system.coupling`.
    sparsity_threshold: folx's (None: folx_sparsity(N)). Energies in E_M (totals, not per electron).
    Raises ValueError for an unknown `laplacian` or invalid `condition_names`, and (when called)
    for a cond whose length is not len(condition_names).
    """
    components_and_imag = make_complex_local_energy(system, log_psi, laplacian, ewald, sparsity_threshold,
                                                    condition_names)

    def local_energy(params, x, cond) -> EnergyComponents:
        return components_and_imag(params, x, cond).components

    return local_energy


class LocalEnergy(NamedTuple):
    """Per-configuration local energy of a complex ψ: the real components and Im E_L (all in E_M)."""

    components: EnergyComponents
    imag: jax.Array  # Im E_L = −½ Im[∇² log ψ + (∇ log ψ)²] (the potentials are real)

    @property
    def real(self) -> jax.Array:
        return self.components.total

    @property
    def complex(self) -> jax.Array:
        return jax.lax.complex(self.components.total, self.imag)


def make_complex_local_energy(system: System, log_psi: LogPsi, laplacian: str = "folx", ewald: Ewald | None = None,
                              sparsity_threshold: float | None = None, condition_names=DEPTH_ONLY):
    """Build f(params, x, cond) -> LocalEnergy(components, imag) for one configuration x (N, 2) in a_M.

    cond (n_cond,) named by `condition_names` (see `make_local_energy`). The components are
    `make_local_energy`'s; Im E_L = −½ Im[∇² log ψ + (∇ log ψ)²] (the potentials are real) is
    what the gradient of a complex ψ needs besides them (qernel.loss). Energies in E_M.
    Raises ValueError for an unknown `laplacian` or invalid `condition_names`, and (when called)
    for a cond whose length is not len(condition_names).
    """
    if laplacian not in LAPLACIAN_METHODS:
        raise ValueError(f"unknown laplacian method {laplacian!r}; choose one of {LAPLACIAN_METHODS}")
    names = check_names(condition_names)
    ewald = Ewald(system.supercell) if ewald is None else ewald
    phase = system.phase

    def local_energy(params, x, cond):
        kin, kin_imag = complex_kinetic_energy(lambda y: log_psi(params, y, cond), x, laplacian, sparsity_threshold)
        pot = jnp.sum(moire_potential(x, parameter(cond, names, DEPTH), phase))
        inter = parameter(cond, names, COUPLING, system.coupling) * ewald.energy(x)
        return LocalEnergy(EnergyComponents(kin, pot, inter.astype(x.dtype)), kin_imag)

    return local_energy


def potential_energies(system: System, x: jax.Array, depth=None, ewald: Ewald | None = None, *, cond=None,
                       condition_names=DEPTH_ONLY):
    """(moiré, interaction) energies in E_M, each of shape (...), for positions x (..., N, 2) in a_M.

    Give either `depth` (V in E_M, broadcast to (...); λ = system.coupling) or `cond`
    (..., n_cond), the condition vectors named by `condition_names` (`qernel.conditions`): V =
    cond[..., 0], λ from cond where "coupling" is among the names, else system.coupling.
    Raises ValueError when both or neither of depth and cond are given, for invalid names, or
    for a cond whose last axis is not len(condition_names) long.
    """
    if (depth is None) == (cond is None):
        raise ValueError("potential_energies: give exactly one of depth and cond")
    ewald = Ewald(system.supercell) if ewald is None else ewald
    lam = system.coupling
    if cond is not None:
        names = check_names(condition_names)
        cond = jnp.asarray(cond)
        depth, lam = parameter(cond, names, DEPTH), parameter(cond, names, COUPLING, system.coupling)
    pot = jnp.sum(moire_potential(x, jnp.asarray(depth)[..., None], system.phase), axis=-1)
    return pot, lam * ewald.energy(x)
