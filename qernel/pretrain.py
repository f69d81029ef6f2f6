"""Orbital pretraining toward the exact non-interacting orbitals of `qernel.bands`.

The standard first phase of neural-VMC training (ferminet, DeepSolid): before the energy is
minimised, the model's orbital matrices are fitted by least squares to the exact λ = 0 orbitals
at each walker's own depth,

    L = (A / N) ⟨ Σ_σ Σ_det ‖M^σ_det(x; c) − T^σ(x; V)‖²_F ⟩,   T^σ_ij = φ^σ_j(r_i) (bands orbitals),

with the walkers sampled from the target |ψ_T|² (the exact non-interacting Slater determinant
at the walker's depth), so the fit is weighted where the physical electrons are. The factor A
(supercell area) makes L dimensionless (the bands orbitals are normalised on the supercell).

The target columns follow the non-interacting ground state at a reference depth (the model's
`wf.reference.depth` when it has one: its Bloch envelopes and orbital prior come from there), and
each orbital's arbitrary eigenvector phase is fixed to overlap positively with the reference
orbital, so the targets change smoothly with V and a model conditioned on V can follow them
(see `make_targets`). Orbitals of a degenerate level are not rotated into a common gauge: for an
open shell the target is one of the degenerate ground states.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from qernel.bands import DEFAULT_SHELLS, noninteracting_ground_state
from qernel.linalg import slogdet
from qernel.mcmc import MCMCState, make_mcmc_step
from qernel.system import System


@dataclasses.dataclass(frozen=True, eq=False)
class TargetOrbitals:
    """The exact non-interacting orbitals at each depth of a grid.

    depths: (D,) E_M; gvectors: (P, 2) plane-wave basis (moiré reciprocal vectors);
    kpoints[σ]: (D, N_σ, 2); coefficients[σ]: (D, P, N_σ) complex, already divided by √A and
    gauge-fixed; energies: (D,) exact N-electron energies (E_M, total); closed_shell: (D,) bool.
    """

    system: System
    depths: np.ndarray
    gvectors: np.ndarray
    kpoints: tuple[np.ndarray, np.ndarray]
    coefficients: tuple[np.ndarray, np.ndarray]
    energies: np.ndarray
    closed_shell: np.ndarray

    @property
    def n_spin(self) -> tuple[int, int]:
        return (self.system.n_up, self.system.n_down)

    @property
    def tables(self) -> dict:
        """The arrays as a pytree (a jit argument, so one compiled step serves any grid of D depths)."""
        return {"depths": self.depths, "gvectors": self.gvectors, "kpoints": self.kpoints,
                "coefficients": self.coefficients}

    def orbital_values(self, points, depth: float):
        """The target orbitals at points (M, 2) (a_M) of the grid depth nearest `depth` (E_M):
        (up (M, N_up), down (M, N_down)) complex, NumPy. The determinant the walkers start from
        (`qernel.determinant_sampling`)."""
        from qernel.determinant_sampling import plane_wave_orbitals

        i = int(np.argmin(np.abs(np.asarray(self.depths, float) - float(depth))))
        return tuple(plane_wave_orbitals(points, self.gvectors, self.kpoints[s][i], self.coefficients[s][i])
                     for s in (0, 1))

    def orbitals(self, x, index):
        """Target matrices at positions x (N, 2) for depth `index` (see `target_orbitals`)."""
        return target_orbitals(self.tables, self.n_spin, x, index)

    def log_psi(self, params, x, cond):
        """log ψ_T (complex) of the exact non-interacting determinant at the depth nearest cond[0].

        A `qernel.hamiltonian.LogPsi`; params are ignored (see `make_target_log_psi` for the
        version that takes the tables as params)."""
        return make_target_log_psi(self.n_spin)(self.tables, x, cond)


def depth_index(tables, cond):
    """Index of the grid depth nearest to cond[0] (jit-able)."""
    return jnp.argmin(jnp.abs(jnp.asarray(tables["depths"], cond.dtype) - cond[0]))


def target_orbitals(tables, n_spin, x, index):
    """[T_up (N_up, N_up), T_dn (N_dn, N_dn)] at positions x (N, 2) for grid depth `index`:
    T_ij = φ_j(r_i), rows electrons, columns orbitals (complex)."""
    out = []
    start = 0
    cdtype = jnp.result_type(x.dtype, jnp.complex64)
    g = jnp.asarray(tables["gvectors"], x.dtype)
    for s, n in enumerate(n_spin):
        xs = x[start:start + n]
        start += n
        if n == 0:
            out.append(jnp.zeros((0, 0), cdtype))
            continue
        k = jnp.asarray(tables["kpoints"][s], x.dtype)[index]  # (n, 2)
        c = jnp.asarray(tables["coefficients"][s], cdtype)[index]  # (P, n)
        plane = jnp.exp(1j * (xs @ g.T))  # (n, P)
        bloch = jnp.exp(1j * (xs @ k.T))  # (n, n)
        out.append(bloch * (plane @ c))
    return out


def make_target_log_psi(n_spin):
    """log_psi(tables, x, cond): the exact determinant at the grid depth nearest cond[0] (a LogPsi
    whose params are the target tables)."""

    def log_psi(tables, x, cond):
        total = jnp.zeros((), jnp.result_type(x.dtype, jnp.complex64))
        for mat in target_orbitals(tables, n_spin, x, depth_index(tables, cond)):
            if mat.shape[0] == 0:
                continue
            sign, logabs = slogdet(mat)
            total = total + logabs + 1j * jnp.angle(sign)
        return total

    return log_psi


@functools.lru_cache(maxsize=64)
def _ground_state(system: System, depth: float, shells: float):
    """noninteracting_ground_state, cached: the grid's depths are solved once per process."""
    return noninteracting_ground_state(system, depth, shells=shells)


def _match_columns(reference_occ, occ):
    """Order the occupied levels `occ` [(k, band)] to follow the reference columns: a level with the
    reference column's k-point goes to that column (same band first), the rest keep energy order."""
    remaining = list(occ)
    columns = [None] * len(reference_occ)
    for j, (ik, ib) in enumerate(reference_occ):
        same_k = [o for o in remaining if o[0] == ik]
        if same_k:
            pick = next((o for o in same_k if o[1] == ib), same_k[0])
            columns[j] = pick
            remaining.remove(pick)
    for j in range(len(columns)):
        if columns[j] is None:
            columns[j] = remaining.pop(0)
    return columns


def make_targets(system: System, depths, reference_depth: float | None = None,
                 shells: float = DEFAULT_SHELLS) -> TargetOrbitals:
    """Solve the bands at every depth of the grid (numpy, once), order and gauge-fix the orbitals.

    Column j of the target at every depth follows column j of the non-interacting ground state at
    `reference_depth` (default: the middle grid depth): the level with the same k-point goes there
    (the model's Bloch envelope e^{ik_j·r} of that column then needs no change), and its phase is
    chosen so that its overlap with the reference orbital is real and positive — at the reference
    depth the target is exactly the bands solver's output, elsewhere it follows it smoothly. A level
    whose k-point differs from its column's reference gets its largest plane-wave coefficient real
    and positive.
    """
    depths = np.atleast_1d(np.asarray(depths, dtype=float))
    if reference_depth is None:
        reference_depth = float(depths[len(depths) // 2])
    area = system.supercell.area
    ref = _ground_state(system, float(reference_depth), float(shells))
    ref_occ = (ref.occupied_up, ref.occupied_down)
    kpoints, coefficients = ([], []), ([], [])
    energies, closed = [], []
    n_pw = len(ref.bands.gvectors)
    for depth in depths:
        gs = _ground_state(system, float(depth), float(shells))
        energies.append(gs.energy)
        closed.append(gs.closed_shell)
        for s, occ in enumerate((gs.occupied_up, gs.occupied_down)):
            cols = _match_columns(ref_occ[s], occ)
            ks = np.array([gs.bands.kpoints[ik] for ik, _ in cols]).reshape(len(cols), 2)
            cs = np.array([gs.bands.coefficients[ik, :, ib] for ik, ib in cols], dtype=complex).reshape(len(cols), n_pw).T
            for j, (ik, _) in enumerate(cols):
                col = cs[:, j]
                phase_ref = col[np.argmax(np.abs(col))]
                r_ik, r_ib = ref_occ[s][j]
                if r_ik == ik:
                    overlap = np.vdot(ref.bands.coefficients[r_ik, :, r_ib], col)
                    if abs(overlap) > 1e-3:
                        phase_ref = overlap
                cs[:, j] = col * np.exp(-1j * np.angle(phase_ref))
            kpoints[s].append(ks)
            coefficients[s].append(cs / np.sqrt(area))
    kp = tuple(np.stack(k) for k in kpoints)
    co = tuple(np.stack(c) for c in coefficients)
    return TargetOrbitals(system, depths, ref.bands.gvectors, kp, co, np.array(energies), np.array(closed))


def pretrain_loss_fn(orbitals_fn, system: System):
    """loss(params, tables, x (W,N,2), cond (W,n_cond)) -> scalar: the least-squares orbital mismatch."""
    area = system.supercell.area
    n = system.n_electrons
    n_spin = (system.n_up, system.n_down)

    def per_walker(params, tables, x, cond):
        model = orbitals_fn(params, x, cond)
        target = target_orbitals(tables, n_spin, x, depth_index(tables, cond))
        total = jnp.zeros((), x.dtype)
        for m, t in zip(model, target):
            if t.shape[0] == 0:
                continue
            m = jnp.asarray(m)
            if m.ndim == 2:
                m = m[None]
            total = total + jnp.sum(jnp.abs(m - t[None]) ** 2)
        return total * area / n

    batch = jax.vmap(per_walker, in_axes=(None, None, 0, 0))
    return lambda params, tables, x, cond: jnp.mean(batch(params, tables, x, cond))


def make_pretrain_step(wf, system: System, optimizer: optax.GradientTransformation, mcmc_steps: int,
                       target_acceptance: float = 0.5):
    """step(params, opt_state, mcmc_state, key, tables) -> (params, opt_state, mcmc_state, loss).

    `tables`: `TargetOrbitals.tables`. Walkers sample the target |ψ_T|² at their own depth; the
    model's orbitals `wf.orbitals` are moved toward the targets by `optimizer` (Adam in
    `qernel.train`).
    """
    mcmc = make_mcmc_step(make_target_log_psi((system.n_up, system.n_down)), system, mcmc_steps, target_acceptance)
    loss_fn = pretrain_loss_fn(wf.orbitals, system)

    def step(params, opt_state, mcmc_state: MCMCState, key, tables):
        mcmc_state = mcmc(tables, mcmc_state, key)
        loss, grads = jax.value_and_grad(loss_fn)(params, tables, mcmc_state.positions, mcmc_state.cond)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, mcmc_state, loss

    return step
