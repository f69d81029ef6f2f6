"""Optimisers: stochastic reconfiguration in kernel form (MinSR / SPRING) and Adam.

SR in kernel form (Chen & Heyl 2023 "MinSR"; Goldshmiedt, Lin & Clark 2024 "SPRING").
With W walkers and P parameters, let

    O  (M × P): the log-derivatives ∂_θ log ψ of each walker, centred by the mean of the
                walker's depth group and scaled by 1/√W; for complex ψ the real and imaginary
                parts are stacked as rows (M = 2W), otherwise M = W;
    ε  (M,):    the clipped local energies centred per group, scaled by 1/√W, stacked alike.

Then Oᵀε = ½∇E (the unbiased gradient) and OᵀO = S (the quantum geometric tensor's real part).
SPRING's update direction, with momentum μ and diagonal shift λ, is

    φ_t = μ φ_{t−1} + Oᵀ (O Oᵀ + λ I)⁻¹ (ε − μ O φ_{t−1}),        θ ← θ − η_t φ_t

(μ = 0 is MinSR). Only the M × M kernel O Oᵀ is formed and factorised, never a P × P matrix.
The step is limited in the Fisher (Fubini–Study) norm: if η‖Oφ‖ > max_update_norm the step is
scaled down to that norm (‖Oδ‖ is the r.m.s. change of log ψ over the samples).

The learning rate follows η_t = η / (1 + t / decay_steps) (constant if decay_steps <= 0).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from qernel.groups import centre
from qernel.hamiltonian import LogPsi
from qernel.parallel import map_walkers

OPTIMIZERS = ("sr", "adam")


def learning_rate_schedule(learning_rate: float, decay_steps: float) -> Callable:
    """step -> η / (1 + step / decay_steps); constant when decay_steps <= 0."""

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        if decay_steps and decay_steps > 0:
            return learning_rate / (1.0 + step / decay_steps)
        return learning_rate + 0.0 * step

    return schedule


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


def spring_direction(o_mat, e_vec, phi_prev, damping: float, momentum: float):
    """φ = μ φ_prev + Oᵀ (O Oᵀ + λ I)⁻¹ (ε − μ O φ_prev); only an (M × M) matrix is formed."""
    m = o_mat.shape[0]
    kernel = o_mat @ o_mat.T + damping * jnp.eye(m, dtype=o_mat.dtype)
    rhs = e_vec - momentum * (o_mat @ phi_prev)
    chol = jnp.linalg.cholesky(kernel)
    y = jax.scipy.linalg.cho_solve((chol, True), rhs)
    return o_mat.T @ y + momentum * phi_prev


def fisher_norm_scale(o_mat, delta, max_norm: float):
    """Factor in (0, 1] that limits the Fisher norm ‖O δ‖ of the step δ to max_norm (<= 0: off)."""
    if not max_norm or max_norm <= 0:
        return jnp.ones((), delta.dtype)
    norm = jnp.sqrt(jnp.sum((o_mat @ delta) ** 2))
    return jnp.minimum(1.0, max_norm / jnp.maximum(norm, 1e-30)).astype(delta.dtype)


def sr_init(params):
    """SPRING state: the previous direction φ (flat, P)."""
    flat, _ = ravel_pytree(params)
    return {"phi": jnp.zeros_like(flat)}


def make_adam(learning_rate: float, decay_steps: float, max_update_norm: float = 0.0):
    """optax Adam with the η/(1 + t/decay) schedule; the update's Euclidean norm is capped at
    max_update_norm (> 0)."""
    parts = [optax.adam(learning_rate_schedule(learning_rate, decay_steps))]
    if max_update_norm and max_update_norm > 0:
        parts.append(optax.clip_by_global_norm(max_update_norm))
    return optax.chain(*parts)
