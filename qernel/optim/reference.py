"""The explicit-Jacobian SR step: the reference for tests and benchmarks, never a training default.

This is the SPRING / MinSR step as the project computed it before qernel.optim.sr: the whole
walkers × parameters matrix O (M × P) is formed (`log_derivatives`, `sr_matrices`), the kernel
O Oᵀ + λI is factorised by Cholesky (`spring_direction`), and the Fisher norm ‖Oδ‖ is a matrix
product. It needs M × P numbers (2 × 6560 × 9.56M float32 = 500 GB for a `paper_*` sweep) and
the float32 Cholesky fails when λ is below the kernel's rounding error, which is why training uses
qernel.optim.sr. Same formulas and notation as qernel.optim.sr.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from qernel.groups import centre
from qernel.hamiltonian import LogPsi
from qernel.optim.base import Samples, learning_rate_schedule
from qernel.optim.sr import sr_init, solve_kernel
from qernel.parallel import map_walkers


def log_derivatives(log_psi: LogPsi, params, x, cond, max_batch_size: int = 0):
    """Per-walker ∂_θ log ψ for x (W, N, 2), cond (W, n_cond).

    max_batch_size > 0: at most that many walkers' backward passes at once (map_walkers).

    Returns (jac (W, 2, P) real: rows Re and Im of ∂ log ψ (Im = 0 for real ψ), unravel) where
    unravel maps a flat (P,) vector back to the params pytree.
    """
    flat, unravel = ravel_pytree(params)

    def f(theta, xi, ci):
        out = log_psi(unravel(theta), xi, ci)
        if jnp.iscomplexobj(out):
            return jnp.stack([out.real, out.imag])
        return jnp.stack([out, jnp.zeros_like(out)])

    jac = map_walkers(jax.jacrev(f), max_batch_size)(flat, x, cond)
    return jac, unravel


def sr_matrices(jac, eps, group, n_groups: int, is_complex: bool):
    """(O (M, P), ε (M,)): centred per group, scaled by 1/√W, Re/Im stacked when complex.

    jac: (W, 2, P) from `log_derivatives`; eps: (W,) centred local energies (real or complex).
    """
    n_walkers = jac.shape[0]
    scale = 1.0 / jnp.sqrt(jnp.asarray(n_walkers, jac.dtype))
    o = centre(jac, group, n_groups) * scale
    if is_complex:
        eps_c = eps.astype(jnp.result_type(eps.dtype, jnp.complex64))
        o_mat = jnp.concatenate([o[:, 0], o[:, 1]], axis=0)
        e_vec = jnp.concatenate([eps_c.real, eps_c.imag]).astype(jac.dtype) * scale
    else:
        o_mat = o[:, 0]
        e_vec = jnp.real(eps).astype(jac.dtype) * scale
    return o_mat, e_vec


def spring_direction(o_mat, e_vec, phi_prev, damping: float, momentum: float, solver: str = "cholesky"):
    """φ = μ φ_prev + Oᵀ (O Oᵀ + λ I)⁻¹ (ε − μ O φ_prev); only an (M × M) matrix is formed.

    solver: "cholesky" (the original step) or "eigh" (qernel.optim.sr.solve_kernel on O Oᵀ).
    """
    m = o_mat.shape[0]
    rhs = e_vec - momentum * (o_mat @ phi_prev)
    if solver == "eigh":
        y = solve_kernel(o_mat @ o_mat.T, rhs, damping)
    else:
        kernel = o_mat @ o_mat.T + damping * jnp.eye(m, dtype=o_mat.dtype)
        chol = jnp.linalg.cholesky(kernel)
        y = jax.scipy.linalg.cho_solve((chol, True), rhs)
    return o_mat.T @ y + momentum * phi_prev


def fisher_norm_scale(o_mat, delta, max_norm: float):
    """Factor in (0, 1] that limits the Fisher norm ‖O δ‖ of the step δ to max_norm (<= 0: off)."""
    if not max_norm or max_norm <= 0:
        return jnp.ones((), delta.dtype)
    norm = jnp.sqrt(jnp.sum((o_mat @ delta) ** 2))
    return jnp.minimum(1.0, max_norm / jnp.maximum(norm, 1e-30)).astype(delta.dtype)


@dataclasses.dataclass(frozen=True, eq=False)
class ExplicitSPRING:
    """The explicit-Jacobian SPRING step behind the `Optimizer` interface (tests, benchmarks).

    Same arguments as qernel.optim.sr.SPRING (without damping_relative and rcond), plus
    solver ("cholesky": the original step; "eigh": the same solve as SPRING).
    """

    log_psi: LogPsi
    n_groups: int
    is_complex: bool
    learning_rate: float
    decay_steps: float
    max_update_norm: float
    damping: float
    momentum: float
    chunk_size: int = 0
    solver: str = "cholesky"
    name: str = "sr_explicit"

    def init(self, params):
        return sr_init(params)

    def update(self, params, state, samples: Samples, step, extra_grad=None):
        lr = learning_rate_schedule(self.learning_rate, self.decay_steps)(step).astype(samples.x.dtype)
        jac, unravel = log_derivatives(self.log_psi, params, samples.x, samples.cond, self.chunk_size)
        o_mat, e_vec = sr_matrices(jac, samples.eps, samples.group, self.n_groups, self.is_complex)
        phi = spring_direction(o_mat, e_vec, state["phi"], self.damping, self.momentum, self.solver)
        scale = fisher_norm_scale(o_mat, lr * phi, self.max_update_norm)
        phi = phi * scale
        delta = lr * phi
        update_norm = jnp.sqrt(jnp.sum((o_mat @ delta) ** 2))
        flat, _ = ravel_pytree(params)
        if extra_grad is not None:
            delta = delta + lr * ravel_pytree(extra_grad)[0]
        return unravel(flat - delta), {"phi": phi}, {"learning_rate": lr, "update_norm": update_norm}


def from_config(cfg, log_psi: LogPsi, n_groups: int, is_complex: bool, solver: str = "cholesky") -> ExplicitSPRING:
    """ExplicitSPRING from a TrainConfig-like `cfg` (as qernel.optim.sr.from_config)."""
    return ExplicitSPRING(log_psi, n_groups, bool(is_complex), cfg.lr, cfg.lr_decay_steps, cfg.update_cap,
                          cfg.sr_damping, cfg.sr_momentum, cfg.max_vmap_batch_size, solver)
