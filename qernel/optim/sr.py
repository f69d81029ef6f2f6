"""Stochastic reconfiguration in kernel form (MinSR / SPRING) without the walkers × parameters matrix.

Kernel-form SR (Chen & Heyl 2023, "MinSR", arXiv:2302.01941; Goldshmiedt, Lin & Clark 2024,
"SPRING", arXiv:2401.10190). With W walkers, P parameters and R rows per walker (R = 2 for complex
ψ: Re and Im of ∂ log ψ stacked; R = 1 for real ψ), let M = W·R and

    J  (M × P): the raw log-derivatives ∂_θ log ψ of each walker (row (w, r));
    C  (M × M): centring of each row type by the mean of the walker's depth group (a symmetric
                projection), s = 1/√W;
    O = s C J: the centred, scaled log-derivatives; ε (M,): the clipped local energies centred
                per group, scaled by s, Re/Im stacked alike.

Then Oᵀε = ½∇E and OᵀO = S (the real part of the quantum geometric tensor). SPRING's direction,
with momentum μ (0 = MinSR) and damping λ, is

    φ_t = μ φ_{t−1} + Oᵀ y,    y = (O Oᵀ + λ I)⁻¹ (ε − μ O φ_{t−1}),    θ ← θ − η_t φ_t.

Nothing of size M × P is formed (the explicit form is qernel.optim.reference, kept for tests):

- the kernel K = O Oᵀ = s² C (J Jᵀ) C is accumulated block by block over chunks of b walkers
  (b = the largest divisor of W <= `chunk_size`; 0 = one chunk): block (i, j) = J_i J_jᵀ with
  J_i the chunk's Jacobian (b·R × P), recomputed for each j < i, so at most two chunk Jacobians
  are alive at once. Cost: (n + 1)/2 Jacobian passes for n = W/b chunks (1 for one chunk);
- Oᵀ y = Jᵀ (s C y): the cotangent is centred per group (C is symmetric), then one
  vector–Jacobian product of log ψ per chunk, summed;
- O φ_{t−1} = s C (J φ_{t−1}): one Jacobian–vector product of log ψ, centred per group;
- O φ_t = K y + μ O φ_{t−1}, so the Fisher-norm cap needs no further pass.

The solve (`solve_kernel`) is an eigendecomposition of the symmetrised kernel, robust in float32
where a Cholesky factorisation of O Oᵀ + λI fails once λ is below the float32 resolution of the
kernel's largest eigenvalue (as public SPRING and NetKet code do: NetKet's
`netket.optimizer.solver.pinv_smooth`, the eigh-based solver of its SRt driver; Rende et al. 2024):

    λ_eff = λ + λ_rel · tr(K)/M               (absolute damping plus one relative to K's scale)
    K + λ_eff I = V diag(σ + λ_eff) Vᵀ;  y = V diag(1/(σ_i + λ_eff) if kept else 0) Vᵀ rhs,
    kept: σ_i + λ_eff > rcond · max_j(σ_j + λ_eff), rcond = M · eps(dtype) by default
    (the rank tolerance of numpy.linalg.matrix_rank / LAPACK), and finite.

A finite kernel therefore always yields a finite y (every division is guarded with jnp.where):
the directions dropped are those whose damped eigenvalue is below the rounding error of the
eigendecomposition itself. In float64 nothing is dropped for any useful λ and the result equals
the Cholesky solve to round-off.

The step is limited in the Fisher (Fubini–Study) norm: if η‖Oφ‖ > max_update_norm the step is
scaled down to that norm (‖Oδ‖ is the r.m.s. change of log ψ over the samples; FermiNet's KFAC
norm constraint is the same bound). The learning rate follows η_t = η / (1 + t / decay_steps).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from qernel.groups import centre
from qernel.hamiltonian import LogPsi
from qernel.optim.base import Samples, learning_rate_schedule
from qernel.optim.defaults import defaults
from qernel.parallel import largest_divisor_at_most

#: η = 0.05, Fisher norm ‖Oδ‖ <= 0.03 (qernel.optim.defaults, which says why).
DEFAULTS = defaults("sr")


def sr_init(params):
    """SPRING state: the previous direction φ (flat, P)."""
    flat, _ = ravel_pytree(params)
    return {"phi": jnp.zeros_like(flat)}


def fisher_norm_scale(o_phi, lr, max_norm: float):
    """Factor in (0, 1] that limits the Fisher norm ‖lr · O φ‖ to max_norm (<= 0: off).

    o_phi: O φ (M,) (the change of the centred, scaled log ψ per unit step); lr: the step size.
    """
    if not max_norm or max_norm <= 0:
        return jnp.ones((), o_phi.dtype)
    norm = jnp.sqrt(jnp.sum((lr * o_phi) ** 2))
    return jnp.minimum(1.0, max_norm / jnp.maximum(norm, 1e-30)).astype(o_phi.dtype)


def solve_kernel(kernel, rhs, damping: float, damping_relative: float = 0.0, rcond: float | None = None):
    """y = (K + λ_eff I)⁺ rhs by eigendecomposition, with λ_eff = damping + damping_relative·tr(K)/M.

    kernel: (M, M), symmetric positive semi-definite up to round-off (it is symmetrised here);
    rhs: (M,). Eigen-directions whose damped eigenvalue is not above rcond × the largest (default
    rcond = M·eps of the dtype) or not finite are dropped (their component of y is 0), so a finite
    kernel gives a finite y even when K + λ_eff I is singular in the working precision (where a
    Cholesky factorisation returns NaN). Returns y (M,). Source: the rule of NetKet's
    `pinv_smooth` (hard cut-off) and of public SPRING code; see the module docstring.
    """
    m = kernel.shape[0]
    dtype = kernel.dtype
    k = 0.5 * (kernel + kernel.T)
    scale = jnp.maximum(jnp.trace(k) / m, 0.0)
    lam = damping + damping_relative * scale
    evals, evecs = jnp.linalg.eigh(k)
    shifted = evals + lam
    tol = (m * jnp.finfo(dtype).eps if rcond is None else rcond) * jnp.maximum(jnp.max(shifted), 0.0)
    finite_vec = jnp.all(jnp.isfinite(evecs), axis=0)
    keep = jnp.isfinite(shifted) & finite_vec & (shifted > tol) & (shifted > 0)
    inv = jnp.where(keep, 1.0 / jnp.where(keep, shifted, 1.0), 0.0).astype(dtype)
    v = jnp.where(finite_vec[None, :], evecs, 0.0)
    return v @ (inv * (v.T @ rhs))


def _row_function(log_psi: LogPsi, unravel, is_complex: bool):
    """theta (P,), x (N, 2), cond (n_cond,) -> (R,): Re, Im of log ψ (R = 2) or log ψ (R = 1)."""

    def f(theta, x, cond):
        out = log_psi(unravel(theta), x, cond)
        if is_complex:
            return jnp.stack([out.real, out.imag])
        return jnp.real(out)[None]

    return f


def _chunked(a, n: int):
    """(W, ...) -> (n, b, ...): chunk i = walkers i, i + n, i + 2n, ... (as qernel.parallel.map_walkers)."""
    b = a.shape[0] // n
    return a.reshape((b, n) + a.shape[1:]).swapaxes(0, 1)


def _centre_rows(v, group, n_groups: int):
    """Centre v (n, b, R, ...) along the walkers (n·b, in chunk order) per depth group."""
    n, b = v.shape[:2]
    flat = v.reshape((n * b,) + v.shape[2:])
    return centre(flat, group, n_groups).reshape(v.shape)


def centred_kernel(log_psi: LogPsi, params, x, cond, group, n_groups: int, is_complex: bool, chunk_size: int = 0):
    """The centred, scaled kernel K = O Oᵀ without the M × P matrix, with the chunk layout.

    x (W, N, 2), cond (W, n_cond), group (W,). Returns (K (M, M), n): rows ordered (chunk i,
    walker-in-chunk, row r) with chunk i = walkers i, i + n, ... (n = number of chunks, M = W·R).
    At most two chunk Jacobians (b·R × P each) are alive at once; see the module docstring.
    """
    theta, unravel = ravel_pytree(params)
    f = _row_function(log_psi, unravel, is_complex)
    w = x.shape[0]
    b = w if chunk_size <= 0 else largest_divisor_at_most(w, chunk_size)
    n = w // b
    r = 2 if is_complex else 1
    xc, cc = _chunked(x, n), _chunked(cond, n)
    jac = jax.vmap(jax.jacrev(f), in_axes=(None, 0, 0))

    def jac_chunk(i):  # (b·R, P)
        return jac(theta, xc[i], cc[i]).reshape(b * r, theta.shape[0])

    if n == 1:
        j0 = jac_chunk(0)
        raw = (j0 @ j0.T).reshape(1, 1, b * r, b * r)
    else:
        def row(_, i):
            ji = jac_chunk(i)

            def block(j):
                return jax.lax.switch(
                    jnp.where(j < i, 0, jnp.where(j == i, 1, 2)),
                    [lambda: ji @ jac_chunk(j).T, lambda: ji @ ji.T,
                     lambda: jnp.zeros((b * r, b * r), ji.dtype)])

            return None, jax.lax.map(block, jnp.arange(n))

        _, lower = jax.lax.scan(row, None, jnp.arange(n))  # (n, n, bR, bR), valid for j <= i
        ii, jj = jnp.arange(n)[:, None, None, None], jnp.arange(n)[None, :, None, None]
        raw = jnp.where(jj <= ii, lower, lower.transpose(1, 0, 3, 2))
    # (i, j, (b, r), (b, r)) -> ((i, b, r), (j, b, r))
    raw = raw.reshape(n, n, b, r, b, r).transpose(0, 2, 3, 1, 4, 5).reshape(n, b, r, n * b * r)
    gc = _chunked(group, n).reshape(-1)
    half = _centre_rows(raw, gc, n_groups).reshape(w * r, w * r)
    full = _centre_rows(half.T.reshape(n, b, r, w * r), gc, n_groups).reshape(w * r, w * r)
    return full / jnp.asarray(w, full.dtype), n


def _o_transpose(f, theta, xc, cc, u):
    """Σ_chunks J_iᵀ u_i: u (n, b, R) cotangents of the raw rows; (P,)."""
    def body(acc, inp):
        x_i, c_i, u_i = inp
        _, vjp = jax.vjp(lambda th: jax.vmap(f, in_axes=(None, 0, 0))(th, x_i, c_i), theta)
        return acc + vjp(u_i)[0], None

    if xc.shape[0] == 1:
        return body(jnp.zeros_like(theta), (xc[0], cc[0], u[0]))[0]
    return jax.lax.scan(body, jnp.zeros_like(theta), (xc, cc, u))[0]


def _o_apply(f, theta, xc, cc, tangent):
    """J φ for tangent φ (P,): the raw rows' directional derivative, (n, b, R)."""
    def one(x_i, c_i):
        return jax.jvp(lambda th: jax.vmap(f, in_axes=(None, 0, 0))(th, x_i, c_i), (theta,), (tangent,))[1]

    if xc.shape[0] == 1:
        return one(xc[0], cc[0])[None]
    return jax.lax.map(lambda a: one(*a), (xc, cc))


def spring_direction(log_psi: LogPsi, params, samples: Samples, phi_prev, n_groups: int, is_complex: bool,
                     damping: float, momentum: float, chunk_size: int = 0, damping_relative: float = 0.0,
                     rcond: float | None = None):
    """SPRING direction without the M × P matrix: (φ (P,), O φ (M,)).

    samples: x (W, N, 2), cond (W, n_cond), group (W,), eps (W,) (clipped, centred per group);
    phi_prev (P,). φ = μ φ_prev + Oᵀ (O Oᵀ + λ I)⁺ (ε − μ O φ_prev), the solve by `solve_kernel`.
    O φ (in the kernel's row order) gives the Fisher norm of the step.
    """
    theta, unravel = ravel_pytree(params)
    phi_prev = jnp.asarray(phi_prev, theta.dtype)  # a state saved at another precision (e.g. float32 restored into float64)
    f = _row_function(log_psi, unravel, is_complex)
    w = samples.x.shape[0]
    kernel, n = centred_kernel(log_psi, params, samples.x, samples.cond, samples.group, n_groups, is_complex,
                               chunk_size)
    b = w // n
    dtype = kernel.dtype
    s = 1.0 / jnp.sqrt(jnp.asarray(w, dtype))
    xc, cc, gc = _chunked(samples.x, n), _chunked(samples.cond, n), _chunked(samples.group, n).reshape(-1)
    eps = _chunked(samples.eps, n)  # (n, b)
    if is_complex:
        eps = eps.astype(jnp.result_type(eps.dtype, jnp.complex64))
        e_vec = jnp.stack([eps.real, eps.imag], axis=-1).astype(dtype) * s  # (n, b, 2)
    else:
        e_vec = jnp.real(eps).astype(dtype)[..., None] * s
    if momentum:
        o_prev = _centre_rows(_o_apply(f, theta, xc, cc, phi_prev), gc, n_groups) * s  # (n, b, R)
        rhs = e_vec - momentum * o_prev
    else:
        o_prev = jnp.zeros_like(e_vec)
        rhs = e_vec
    y = solve_kernel(kernel, rhs.reshape(-1), damping, damping_relative, rcond)
    u = _centre_rows(y.reshape(n, b, -1), gc, n_groups) * s
    phi = _o_transpose(f, theta, xc, cc, u) + momentum * phi_prev
    o_phi = kernel @ y + momentum * o_prev.reshape(-1)
    return phi, o_phi


@dataclasses.dataclass(frozen=True, eq=False)
class SPRING:
    """SPRING / MinSR natural gradient (the `Optimizer` interface of qernel.optim.base).

    learning_rate η, decay_steps (η_t = η/(1 + t/decay)), max_update_norm (Fisher-norm cap, <= 0:
    off), damping λ and damping_relative λ_rel (λ_eff = λ + λ_rel tr(K)/M), momentum μ (0 = MinSR),
    chunk_size (walkers per chunk of the kernel and of the log-ψ passes; 0 = all), rcond (eigenvalue
    cut-off, None = M·eps). The extra gradient (MoE load balancing) is added as a plain gradient
    step η·g.
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
    damping_relative: float = 0.0
    rcond: float | None = None
    name: str = "sr"

    def init(self, params):
        return sr_init(params)

    def update(self, params, state, samples: Samples, step, extra_grad=None):
        lr = learning_rate_schedule(self.learning_rate, self.decay_steps)(step).astype(samples.x.dtype)
        phi, o_phi = spring_direction(self.log_psi, params, samples, state["phi"], self.n_groups, self.is_complex,
                                      self.damping, self.momentum, self.chunk_size, self.damping_relative,
                                      self.rcond)
        scale = fisher_norm_scale(o_phi, lr, self.max_update_norm)
        phi = phi * scale
        delta = lr * phi
        update_norm = jnp.sqrt(jnp.sum((lr * scale * o_phi) ** 2))
        flat, unravel = ravel_pytree(params)
        if extra_grad is not None:
            delta = delta + lr * ravel_pytree(extra_grad)[0]
        return unravel(flat - delta), {"phi": phi}, {"learning_rate": lr, "update_norm": update_norm}


def from_config(cfg, log_psi: LogPsi, n_groups: int, is_complex: bool) -> SPRING:
    """SPRING from a TrainConfig-like `cfg` (lr, lr_decay_steps, update_cap, sr_damping,
    sr_damping_relative, sr_momentum, max_vmap_batch_size)."""
    return SPRING(log_psi, n_groups, bool(is_complex), cfg.lr, cfg.lr_decay_steps, cfg.update_cap, cfg.sr_damping,
                  cfg.sr_momentum, cfg.max_vmap_batch_size, getattr(cfg, "sr_damping_relative", 0.0))
