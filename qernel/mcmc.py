"""Metropolis–Hastings sampling of |ψ|² for walkers that each carry their own condition.

A batch of W walkers spans several depth groups (DESIGN.md §3): walker w samples
|ψ(x; c_w)|² with its own condition vector c_w and belongs to the depth group `group[w]`.
Each group has its own Gaussian proposal width, adapted inside the jitted step toward a
target acceptance (a deep moiré potential localises the electrons, so the best width
shrinks with V; one global width would be a poor compromise across a sweep).

Moves: all-electron Gaussian moves x' = wrap(x + σ_g ξ), ξ ~ N(0, 1)^{N×2}. The model's
log ψ is a function of the whole configuration with no cheap one-electron update (the
transformer couples every electron to every other), so a one-electron move costs one full
network evaluation, N times as much per sweep as an all-electron move; ferminet and jaqmc
make the same choice. The proposal is symmetric on the torus (wrapping maps the Gaussian
onto the supercell), so the acceptance ratio is |ψ(x')|²/|ψ(x)|².

Site hops (`hop_moves` per block, after the Gaussian moves): one electron, chosen uniformly, is
moved by one of the six shortest moiré lattice vectors, chosen uniformly, x_i' = wrap(x_i + a).
The moiré potential is periodic in a, so a hole in one minimum lands in another minimum (occupied
or empty). In a deep potential the Gaussian moves, whose width adapts to the well (~0.06 a_M at
V = 10 E_M), never cross the barriers between minima, so a walker that starts in a rare
arrangement (two holes in one minimum, a hole on the empty site of the crystal) keeps it for the
whole run and the arrangements are not weighted by |ψ|² (measured: the demo, V = 10 E_M, one of 128
walkers stuck 17 E_M above the median for 40 blocks; 0.02 E_M per hole of bias in a 144-walker
mean). The hop proposal is symmetric (a and −a equally likely, the same electron), so it too is
accepted with |ψ(x')|²/|ψ(x)|², and the chain of both kinds of moves keeps |ψ|² invariant; it is
the identity in a supercell of one moiré cell. The hops' acceptance does not enter the width
adaptation.

Shapes: positions (W, N, 2) in a_M, wrapped into the supercell (Supercell.wrap);
cond (W, n_cond), cond[:, 0] the depth V in E_M; group (W,) int32 in [0, G);
width and acceptance (G,) per group.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from qernel.groups import group_mean
from qernel.hamiltonian import LogPsi
from qernel.lattice import MOIRE_LATTICE
from qernel.system import System

#: Width adaptation: log σ_g += ADAPT_RATE · (acceptance_g − target) after every block.
ADAPT_RATE = 1.0
#: Widths are kept in [MIN_WIDTH, max_width(system)] (a_M).
MIN_WIDTH = 1e-4


def _shortest_lattice_vectors() -> np.ndarray:
    a1, a2 = np.asarray(MOIRE_LATTICE, float)
    third = min((a1 + a2, a1 - a2), key=lambda v: float(np.hypot(*v)))
    base = np.stack([a1, a2, third])
    return np.concatenate([base, -base])


#: The site hops' displacements (6, 2), a_M: the six shortest moiré lattice vectors, ±a1, ±a2 and
#: the shorter of ±(a1 ± a2).
HOP_VECTORS = _shortest_lattice_vectors()


class MCMCState(NamedTuple):
    """Sampler state (a pytree; every field is an array).

    positions: (W, N, 2) in a_M, inside the supercell.
    cond: (W, n_cond) each walker's condition vector (cond[:, 0] = V in E_M).
    log_psi: (W,) log|ψ| at `positions` (the real part of log ψ) for the parameters last
        used; recomputed at the start of every block, because the parameters change between
        blocks.
    width: (G,) Gaussian proposal width per depth group, a_M.
    acceptance: (G,) acceptance fraction per group over the last block.
    group: (W,) int32 depth-group index of each walker.
    """

    positions: jax.Array
    cond: jax.Array
    log_psi: jax.Array
    width: jax.Array
    acceptance: jax.Array
    group: jax.Array


#: Which fields of an MCMCState have a leading walker axis (sharded across devices by
#: `qernel.parallel.place`); width and acceptance are per group and replicated.
WALKER_AXES = MCMCState(positions=True, cond=True, log_psi=True, width=False, acceptance=False, group=True)


def max_width(system: System) -> float:
    """Largest useful proposal width: half the shortest supercell lattice vector (a_M)."""
    return 0.5 * float(np.min(np.linalg.norm(system.supercell.lattice, axis=-1)))


def init_walkers(key, system: System, cond, group=None, n_groups: int | None = None, width: float = 0.1,
                 dtype=None) -> MCMCState:
    """Walkers placed uniformly at random in the supercell.

    cond: (W, n_cond) (or (n_cond,), broadcast to `group`'s length — then `group` is needed);
    group: (W,) int group index (default: all walkers in group 0); n_groups: G (default
    max(group) + 1); width: the initial proposal width (a_M) of every group.
    log_psi is zero until the first block computes it. Raises ValueError for a single condition
    vector without `group`, or a `group` whose shape is not (W,).
    """
    cond = jnp.asarray(cond, dtype=dtype)
    if cond.ndim == 1:
        if group is None:
            raise ValueError("init_walkers: a single condition vector needs `group` to set the walker count")
        cond = jnp.broadcast_to(cond, (len(group), cond.shape[0]))
    n_walkers = cond.shape[0]
    group = jnp.zeros(n_walkers, jnp.int32) if group is None else jnp.asarray(group, jnp.int32)
    if group.shape != (n_walkers,):
        raise ValueError(f"group has shape {group.shape}, expected ({n_walkers},)")
    if n_groups is None:
        n_groups = int(np.max(np.asarray(group))) + 1
    frac = jax.random.uniform(key, (n_walkers, system.n_electrons, 2), dtype=cond.dtype)
    positions = frac @ jnp.asarray(system.supercell.lattice, dtype=cond.dtype)
    return MCMCState(
        positions=positions,
        cond=cond,
        log_psi=jnp.zeros(n_walkers, cond.dtype),
        width=jnp.full((n_groups,), width, cond.dtype),
        acceptance=jnp.zeros((n_groups,), cond.dtype),
        group=group,
    )


def batch_log_abs(log_psi: LogPsi) -> Callable:
    """(params, x (W, N, 2), cond (W, n_cond)) -> log|ψ| (W,)."""

    def f(params, x, cond):
        out = log_psi(params, x, cond)
        return out.real if jnp.iscomplexobj(out) else out

    return jax.vmap(f, in_axes=(None, 0, 0))


def make_mcmc_step(log_psi: LogPsi, system: System, n_steps: int, target_acceptance: float = 0.5,
                   adapt: bool = True, hop_moves: int = 0):
    """Build step(params, state, key) -> MCMCState: `n_steps` Metropolis–Hastings moves.

    The block first recomputes log|ψ| for the current parameters, makes n_steps all-electron
    moves in a lax.scan, then `hop_moves` site hops (module docstring), then (if `adapt`) moves
    each group's width toward `target_acceptance` (the Gaussian moves' acceptance). Pure and
    jit-able; vectorised over walkers. Raises ValueError for n_steps < 1, hop_moves < 0 or
    target_acceptance outside (0, 1).
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    if hop_moves < 0:
        raise ValueError(f"hop_moves must be >= 0, got {hop_moves}")
    if not 0.0 < target_acceptance < 1.0:
        raise ValueError(f"target_acceptance must be in (0, 1), got {target_acceptance}")
    log_abs = batch_log_abs(log_psi)
    wrap = system.supercell.wrap
    w_max = max_width(system)

    def step(params, state: MCMCState, key) -> MCMCState:
        n_groups = state.width.shape[0]
        lp0 = log_abs(params, state.positions, state.cond)
        sigma = state.width[state.group][:, None, None]

        def hop(carry, k):
            x, lp = carry
            k_e, k_a, k_acc = jax.random.split(k, 3)
            w, n = x.shape[0], x.shape[1]
            electron = jax.random.randint(k_e, (w,), 0, n)
            shift = jnp.asarray(HOP_VECTORS, x.dtype)[jax.random.randint(k_a, (w,), 0, len(HOP_VECTORS))]  # (W, 2)
            prop = wrap(x + jax.nn.one_hot(electron, n, dtype=x.dtype)[:, :, None] * shift[:, None, :])
            lp_prop = log_abs(params, prop, state.cond)
            log_u = jnp.log(jax.random.uniform(k_acc, lp.shape, lp.dtype))
            accept = log_u < 2.0 * (lp_prop - lp)
            return (jnp.where(accept[:, None, None], prop, x), jnp.where(accept, lp_prop, lp)), None

        def move(carry, k):
            x, lp = carry
            k_prop, k_acc = jax.random.split(k)
            prop = wrap(x + sigma * jax.random.normal(k_prop, x.shape, x.dtype))
            lp_prop = log_abs(params, prop, state.cond)
            log_u = jnp.log(jax.random.uniform(k_acc, lp.shape, lp.dtype))
            accept = log_u < 2.0 * (lp_prop - lp)  # NaN proposals are rejected
            x = jnp.where(accept[:, None, None], prop, x)
            lp = jnp.where(accept, lp_prop, lp)
            return (x, lp), accept.astype(x.dtype)

        k_moves, k_hops = jax.random.split(key) if hop_moves else (key, None)
        (x, lp), accepted = jax.lax.scan(move, (state.positions, lp0), jax.random.split(k_moves, n_steps))
        if hop_moves:
            (x, lp), _ = jax.lax.scan(hop, (x, lp), jax.random.split(k_hops, hop_moves))
        acc = group_mean(jnp.mean(accepted, axis=0), state.group, n_groups)
        width = state.width
        if adapt:
            width = width * jnp.exp(ADAPT_RATE * (acc - target_acceptance))
            width = jnp.clip(width, MIN_WIDTH, w_max)
        return MCMCState(x, state.cond, lp, width, acc, state.group)

    return step
